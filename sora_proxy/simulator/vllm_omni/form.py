"""The create form (``POST /v1/videos`` and ``/v1/videos/sync``), checked as vLLM-Omni checks it.

The order of the checks is the server's: FastAPI coerces every form field first (all errors in
one 400, ``param`` the first one's ``body.<field>``), then the JSON fields are parsed, then an
upload together with ``image_reference``/``video_reference`` is refused, then the request model's
ranges are checked (a ``ValueError``: ``type`` ``"BadRequestError"``), then the model name, then
the reference image itself (:mod:`.references`). As with FastAPI, an empty form value counts
as absent and unknown fields are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import FileStorage, MultiDict

from .errors import ErrorEntry, VllmError, model_error, validation_error
from .references import check_image_reference, check_upload

#: Frames per second when the request gives none (``protocol/videos.py``).
DEFAULT_FPS = 24
#: What ``quality`` may be (``DIFFUSION_QUALITY_LEVELS``).
QUALITY_LEVELS = ("lossless", "high")

_PATTERNS = {"seconds": r"^[1-9]\d*$", "size": r"^\d+x\d+$"}
_INTS: dict[str, tuple[int | None, int | None]] = {
    "width": (1, None),
    "height": (1, None),
    "num_frames": (1, None),
    "num_inference_steps": (1, 200),
    "seed": (None, None),
    "num_outputs_per_prompt": (1, 10),
}
_FLOATS: dict[str, tuple[float | None, float | None]] = {
    "fps": (1.0, None),
    "guidance_scale": (0.0, 20.0),
    "guidance_scale_2": (0.0, 20.0),
    "boundary_ratio": (0.0, 1.0),
    "flow_shift": (None, None),
    "true_cfg_scale": (0.0, 20.0),
    "sound_duration": (0.0, None),  # strictly greater, see _check_ranges
}
_BOOLS = {"generate_sound"}
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}
#: Form fields in the handler's signature order: FastAPI reports errors in this order.
_FIELDS = (
    "prompt", "model", "seconds", "size", "user", "width", "height", "num_frames", "fps",
    "num_inference_steps", "guidance_scale", "guidance_scale_2", "boundary_ratio", "flow_shift",
    "true_cfg_scale", "seed", "negative_prompt", "num_outputs_per_prompt", "quality",
    "generate_sound", "sound_duration", "image_reference", "video_reference", "audio_reference",
    "lora", "extra_params",
)  # fmt: skip
_JSON_OBJECTS = ("lora", "extra_params")


@dataclass(frozen=True)
class VideoRequest:
    """A create request that passed the form checks: every given field, coerced.

    ``values`` maps each field that was sent to its coerced value (``width`` an int, ``fps`` a
    float, ``image_reference`` the parsed object); ``reference`` names the reference given
    (``"input_reference"``, ``"image_reference"``, ``"video_reference"``) or is ``None``.
    """

    prompt: str
    values: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None

    def get(self, name: str) -> Any:
        """The coerced value of field ``name``, or ``None`` when it was not sent."""
        return self.values.get(name)

    @property
    def fps(self) -> float:
        """The output frame rate: the ``fps`` sent, else 24."""
        fps = self.get("fps")
        return float(DEFAULT_FPS if fps is None else fps)

    @property
    def num_frames(self) -> int | None:
        """The frames asked for: ``num_frames``, else ``seconds`` x fps, else ``None``."""
        if self.get("num_frames") is not None:
            return int(self.get("num_frames"))
        seconds = self.get("seconds")
        return None if seconds is None else int(int(seconds) * self.fps)

    @property
    def duration_s(self) -> float | None:
        """The duration asked for: ``seconds``, else frames / fps, else ``None``."""
        if self.get("seconds") is not None:
            return float(self.get("seconds"))
        frames = self.num_frames
        return None if frames is None else frames / self.fps


def parse_create_form(
    form: MultiDict[str, str], files: MultiDict[str, FileStorage], served_model: str
) -> VideoRequest:
    """Check a create form as vLLM-Omni does and return it coerced, or raise the 400."""
    raw = {name: form.getlist(name)[-1] for name in _FIELDS if form.getlist(name)}
    raw = {name: value for name, value in raw.items() if value != ""}
    upload = files.getlist("input_reference")[-1] if files.getlist("input_reference") else None
    values, errors = _coerce(raw)
    if "input_reference" in form and upload is None and form["input_reference"] != "":
        errors.append(_entry("value_error", "input_reference", form["input_reference"]))
    if errors:
        raise validation_error(errors)

    for name in ("image_reference", "video_reference", "audio_reference"):
        if name in values:
            values[name] = _parse_json(values[name])
    for name in ("image_reference", "video_reference"):
        if name in values and upload is not None:
            message = f"Provide either input_reference or {name}, not both."
            raise VllmError(400, message)
    for name in _JSON_OBJECTS:
        if name in values:
            values[name] = _parse_json(values[name], expect_object=True)
    _check_ranges(values)

    model = values.get("model")
    if model is not None and model != served_model:
        message = (
            f"Model mismatch: request specifies '{model}' but server is running '{served_model}'."
        )
        raise VllmError(400, message)

    reference = None
    if upload is not None:
        check_upload(upload)
        reference = "input_reference"
    elif "image_reference" in values:
        check_image_reference(values["image_reference"])
        reference = "image_reference"
    elif "video_reference" in values:
        reference = "video_reference"
    return VideoRequest(prompt=values.pop("prompt"), values=values, reference=reference)


def _coerce(raw: dict[str, str]) -> tuple[dict[str, Any], list[ErrorEntry]]:
    """FastAPI's form coercion: each value to its declared type, collecting the errors."""
    values: dict[str, Any] = {}
    errors: list[ErrorEntry] = []
    if "prompt" not in raw:
        errors.append(_entry("missing", "prompt", None))
    for name, value in raw.items():
        try:
            values[name] = _coerce_one(name, value)
        except ValueError as exc:
            errors.append(_entry(str(exc), name, value))
    return values, errors


def _coerce_one(name: str, value: str) -> Any:
    """One form value as its declared type; a ``ValueError`` carries the pydantic error type."""
    if name in _PATTERNS:
        if not re.fullmatch(_PATTERNS[name], value):
            raise ValueError("string_pattern_mismatch")
        return value
    if name in _INTS:
        try:
            return int(value)
        except ValueError:
            raise ValueError("int_parsing") from None
    if name in _FLOATS:
        try:
            return float(value)
        except ValueError:
            raise ValueError("float_parsing") from None
    if name in _BOOLS:
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError("bool_parsing")
    return value


_MESSAGES = {
    "missing": "Field required",
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "float_parsing": "Input should be a valid number, unable to parse string as a number",
    "bool_parsing": "Input should be a valid boolean, unable to interpret input",
    "value_error": "Value error, Expected UploadFile, received: <class 'str'>",
}


def _entry(kind: str, name: str, value: str | None) -> ErrorEntry:
    """One pydantic error entry for form field ``name``, as FastAPI reports it."""
    if kind == "string_pattern_mismatch":
        pattern = _PATTERNS[name]
        return {
            "type": kind,
            "loc": ("body", name),
            "msg": f"String should match pattern '{pattern}'",
            "input": value,
            "ctx": {"pattern": pattern},
        }
    entry: ErrorEntry = {"type": kind, "loc": ("body", name), "msg": _MESSAGES[kind]}
    entry["input"] = value
    if kind == "value_error":
        entry["ctx"] = {"error": {}}
    return entry


def _parse_json(value: str, *, expect_object: bool = False) -> Any:
    """A JSON form field (``_parse_form_json``): bad JSON, or a non-object where due, is a 400."""
    try:
        parsed = json.loads(value)
    except ValueError:
        raise VllmError(400, "Invalid JSON in form field.") from None
    if expect_object and not isinstance(parsed, dict):
        message = f"Invalid JSON in form field: expected dict, got {type(parsed).__name__}."
        raise VllmError(400, message)
    return parsed


def _check_ranges(values: dict[str, Any]) -> None:
    """The request model's bounds: the first one broken is a ``BadRequestError`` 400."""
    bounds: dict[str, tuple[float | None, float | None]] = {**_INTS, **_FLOATS}
    for name in _FIELDS:
        if name not in bounds or name not in values:
            continue
        low, high = bounds[name]
        value = values[name]
        if name == "sound_duration" and value <= 0:
            entry = {
                "type": "greater_than",
                "msg": "Input should be greater than 0",
                "input": value,
            }
            raise model_error(name, entry)
        if low is not None and value < low:
            kind, message = "greater_than_equal", f"Input should be greater than or equal to {low}"
            raise model_error(name, {"type": kind, "msg": message, "input": value})
        if high is not None and value > high:
            kind, message = "less_than_equal", f"Input should be less than or equal to {high}"
            raise model_error(name, {"type": kind, "msg": message, "input": value})
    quality = values.get("quality")
    if quality is not None and quality not in QUALITY_LEVELS:
        message = "Input should be 'lossless' or 'high'"
        raise model_error("quality", {"type": "literal_error", "msg": message, "input": quality})
    reference = values.get("image_reference")
    if reference is not None and not isinstance(reference, dict):
        message = "Input should be a valid dictionary or instance of UrlImageReference"
        raise model_error(
            "image_reference", {"type": "model_type", "msg": message, "input": reference}
        )
