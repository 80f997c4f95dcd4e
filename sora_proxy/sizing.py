"""Which sizes each model takes, and the size to ask for when the caller did not say.

The upstream takes ``size`` as ``"WIDTHxHEIGHT"``. Callers written against the seed's JSON form
often give ``metadata.output_config.aspect_ratio`` (and maybe ``resolution``) instead; this
module turns those, or the orientation of the reference image, into the one size the upstream
understands, and refuses combinations that contradict each other before any upstream spend.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import InvalidRequest

Orientation = Literal["landscape", "portrait"]
Resolution = Literal["standard", "high"]

ASPECT_PARAM = "metadata.output_config.aspect_ratio"
RESOLUTION_PARAM = "metadata.output_config.resolution"

DEFAULT_MODEL = "sora-2"
#: Sizes per model family, standard resolution first.
MODEL_SIZES: dict[str, tuple[str, ...]] = {
    "sora-2": ("720x1280", "1280x720"),
    "sora-2-pro": ("720x1280", "1280x720", "1024x1792", "1792x1024"),
}
#: Every model name the proxy offers: the families and their dated snapshots.
OFFERED_MODELS: tuple[str, ...] = (
    "sora-2",
    "sora-2-pro",
    "sora-2-2025-10-06",
    "sora-2-pro-2025-10-06",
    "sora-2-2025-12-08",
)
ALLOWED_SECONDS: tuple[str, ...] = ("4", "8", "12")

_SIZE_BY_SHAPE: dict[tuple[Resolution, Orientation], str] = {
    ("standard", "landscape"): "1280x720",
    ("standard", "portrait"): "720x1280",
    ("high", "landscape"): "1792x1024",
    ("high", "portrait"): "1024x1792",
}
_SNAPSHOT = re.compile(r"^(?P<family>sora-2(?:-pro)?)-\d{4}-\d{2}-\d{2}$")
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:/x\u00d7]\s*(\d+(?:\.\d+)?)\s*$", re.IGNORECASE)
_ORIENTATION_WORDS: dict[str, Orientation] = {
    "landscape": "landscape",
    "horizontal": "landscape",
    "wide": "landscape",
    "portrait": "portrait",
    "vertical": "portrait",
    "tall": "portrait",
}
_RESOLUTION_WORDS: dict[str, Resolution] = {
    "720p": "standard",
    "720": "standard",
    "standard": "standard",
    "normal": "standard",
    "default": "standard",
    "sd": "standard",
    "low": "standard",
    "1080p": "high",
    "1080": "high",
    "1024p": "high",
    "1792p": "high",
    "high": "high",
    "fhd": "high",
    "full_hd": "high",
    "full-hd": "high",
}


@dataclass(frozen=True)
class ModelRoute:
    """A model as callers name it, and what one upstream calls it and allows.

    :param deployment: the upstream's name for it (Azure's deployment, a gateway's alias).
    """

    name: str
    deployment: str
    sizes: tuple[str, ...]
    seconds: tuple[str, ...]


@dataclass(frozen=True)
class VideoSize:
    """A frame size in pixels."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def orientation(self) -> Orientation | None:
        """``landscape``, ``portrait``, or ``None`` for a square frame."""
        if self.width == self.height:
            return None
        return "landscape" if self.width > self.height else "portrait"

    @property
    def resolution(self) -> Resolution:
        """``high`` for the sizes only ``sora-2-pro`` offers, else ``standard``."""
        return "high" if max(self.width, self.height) > 1280 else "standard"

    @classmethod
    def parse(cls, text: str) -> VideoSize:
        """Parse ``"1280x720"``; raise ``ValueError`` on anything else."""
        match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", text.strip())
        if not match:
            raise ValueError(text)
        return cls(int(match.group(1)), int(match.group(2)))


def model_family(model: str) -> str:
    """``sora-2`` or ``sora-2-pro`` for a family name or a dated snapshot of one."""
    match = _SNAPSHOT.match(model)
    return match.group("family") if match else model


def parse_orientation(value: Any) -> Orientation:
    """Read ``aspect_ratio`` (``16:9``, ``9/16``, ``1.78``, ``landscape``…) as an orientation.

    :raises InvalidRequest: square, zero or unreadable ratios.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(
            "aspect_ratio must be a string such as '16:9' or '9:16'.", param=ASPECT_PARAM
        )
    text = value.strip().lower()
    if text in _ORIENTATION_WORDS:
        return _ORIENTATION_WORDS[text]
    if text == "square":
        raise _square_ratio(value)
    match = _RATIO.match(text)
    if match:
        width, height = float(match.group(1)), float(match.group(2))
    else:
        try:
            width, height = float(text), 1.0
        except ValueError:
            width = height = 0.0
    if width <= 0 or height <= 0:
        raise InvalidRequest(
            f"aspect_ratio '{value}' is not readable; use a ratio such as '16:9' or '9:16', "
            "or 'landscape' / 'portrait'.",
            param=ASPECT_PARAM,
        )
    if width == height:
        raise _square_ratio(value)
    return "landscape" if width > height else "portrait"


def _square_ratio(value: str) -> InvalidRequest:
    return InvalidRequest(
        f"aspect_ratio '{value}' is square; Sora renders only landscape (e.g. '16:9') "
        "or portrait (e.g. '9:16') video.",
        param=ASPECT_PARAM,
    )


def parse_resolution(value: Any) -> Resolution:
    """Read ``resolution`` (``720p``, ``1080p``, ``standard``, ``high``…)."""
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if text in _RESOLUTION_WORDS:
        return _RESOLUTION_WORDS[text]
    raise InvalidRequest(
        f"resolution '{value}' is not one of 720p, standard, 1080p, high.",
        param=RESOLUTION_PARAM,
    )


def check_size(model: str, size: str, allowed: tuple[str, ...]) -> VideoSize:
    """Validate an explicit ``size`` for ``model``, which takes the ``allowed`` sizes."""
    if size not in allowed:
        raise InvalidRequest(
            f"size '{size}' is not available for model '{model}'; use one of {', '.join(allowed)}.",
            param="size",
        )
    return VideoSize.parse(size)


def decide_size(
    model: str,
    allowed: tuple[str, ...],
    size: str | None,
    output_config: Mapping[str, Any] | None,
    image_size: VideoSize | None,
) -> VideoSize | None:
    """The size to send upstream, or ``None`` to leave the upstream's default.

    Precedence: an explicit ``size`` (which ``aspect_ratio`` and ``resolution`` must agree
    with); else ``aspect_ratio`` (with ``resolution``); else the reference image's
    orientation; else, only when a high ``resolution`` was asked for, the upstream's default
    orientation (portrait) at that resolution; else nothing.
    """
    config = output_config or {}
    orientation = parse_orientation(config["aspect_ratio"]) if config.get("aspect_ratio") else None
    resolution = parse_resolution(config["resolution"]) if config.get("resolution") else None
    if resolution == "high" and not any(VideoSize.parse(s).resolution == "high" for s in allowed):
        raise InvalidRequest(
            f"resolution '{config['resolution']}' needs model 'sora-2-pro'; "
            f"'{model}' renders only 720p (720x1280 or 1280x720).",
            param=RESOLUTION_PARAM,
        )
    if size:
        chosen = check_size(model, size, allowed)
        if orientation and chosen.orientation != orientation:
            raise InvalidRequest(
                f"size '{size}' is {chosen.orientation} but aspect_ratio "
                f"'{config['aspect_ratio']}' is {orientation}; give one or make them agree.",
                param=ASPECT_PARAM,
            )
        if resolution and chosen.resolution != resolution:
            raise InvalidRequest(
                f"size '{size}' is {chosen.resolution} resolution but resolution "
                f"'{config['resolution']}' asks for {resolution}; give one or make them agree.",
                param=RESOLUTION_PARAM,
            )
        return chosen
    if orientation is None and image_size is not None:
        # A square reference gets the upstream's default orientation, portrait.
        orientation = image_size.orientation or "portrait"
    if orientation is None:
        if resolution != "high":
            return None
        orientation = "portrait"
    shape = _SIZE_BY_SHAPE[(resolution or "standard", orientation)]
    if shape not in allowed:
        raise InvalidRequest(
            f"model '{model}' offers no {orientation} size at {resolution or 'standard'} "
            f"resolution; use one of {', '.join(allowed)}.",
            param="size",
        )
    return VideoSize.parse(shape)
