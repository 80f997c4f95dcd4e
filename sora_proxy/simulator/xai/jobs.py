"""The simulated jobs: the create body checked as xAI checks it, and each poll answer's shape.

A job is a plain dict in :attr:`SimulatorState.videos` under its ``request_id``; keys starting
with ``_`` are internal: ``_started`` (its clock), ``_outcome`` (from the prompt's markers),
``_secret`` (the random half of its result URL's token), ``_no_status``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from ..gateways.common import RESULT_TTL, get_state, phase
from ..views import FAIL_MARKER
from .errors import XaiError

#: The models xAI serves for video.
MODELS = ("grok-imagine-video", "grok-imagine-video-1.5")
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
#: Resolutions per model (the docs say 480p and 720p; the SDK adds 1080p for 1.5).
RESOLUTIONS = {
    "grok-imagine-video": ("480p", "720p"),
    "grok-imagine-video-1.5": ("480p", "720p", "1080p"),
}
DEFAULT_DURATION = 8
#: What a second of video costs, in ticks (1 USD = 10^10 ticks).
TICKS_PER_SECOND = 500_000_000

#: A prompt holding this ends ``done`` with ``respect_moderation: false`` and no URL.
MODERATED_MARKER = "[sim:moderated]"
#: A prompt holding this ends ``expired`` where it would have been ``done``.
EXPIRE_MARKER = "[sim:expire]"
#: A prompt holding this is answered ``{"request_id"}`` alone while pending (a reseller's view).
NO_STATUS_MARKER = "[sim:no-status]"
#: A prompt holding this is refused at create: 429 ``{"code": 429, "error": ...}``.
NO_CREDITS_MARKER = "[sim:no-credits]"

Outcome = Literal["completed", "failed", "expired", "moderated"]


def _unprocessable(field: str, problem: str) -> XaiError:
    """Serde's refusal of a body that does not deserialize (a 422)."""
    message = f"Failed to deserialize the JSON body into the target type: {field}: {problem}"
    return XaiError(422, message)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"number `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    return "sequence" if isinstance(value, list) else "map" if isinstance(value, dict) else "null"


def _typed(body: Mapping[str, Any], field: str, kind: type, expected: str) -> Any:
    value = body.get(field)
    if value is None:
        return None
    wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    if wrong:
        raise _unprocessable(field, f"invalid type: {_json_kind(value)}, expected {expected}")
    return value


def _image_url(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise _unprocessable(field, "missing field `url`")
    url: str = value["url"]
    if not url.startswith(("https://", "http://", "data:image/")):
        raise XaiError(400, f"Invalid {field}.url: must be an https URL or a data:image/ URI.")
    if url.startswith("data:image/") and ";base64," not in url:
        raise XaiError(400, f"Invalid {field}.url: a data URI must be base64-encoded.")
    return url


def create_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``/v1/videos/generations`` body as xAI does, store the job, return it."""
    model = _typed(body, "model", str, "a string")
    prompt = _typed(body, "prompt", str, "a string") or ""
    duration = _typed(body, "duration", int, "u32")
    aspect_ratio = _typed(body, "aspect_ratio", str, "a string")
    resolution = _typed(body, "resolution", str, "a string")
    _typed(body, "generate_audio", bool, "a boolean")
    image = _image_url(body, "image")
    references = _typed(body, "reference_images", list, "a sequence")
    if model is None:
        raise _unprocessable("model", "missing field `model`")
    if model not in MODELS:
        raise XaiError(
            404,
            f"The model {model} does not exist or your team does not have access to it.",
            code="Some requested entity was not found",
        )
    if not prompt and image is None:
        raise XaiError(400, "A prompt is required for text-to-video generation.")
    if duration is not None and not 1 <= duration <= 15:
        raise XaiError(400, f"Invalid duration {duration}: must be between 1 and 15 seconds.")
    if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
        allowed = ", ".join(ASPECT_RATIOS)
        raise XaiError(400, f"Invalid aspect_ratio {aspect_ratio!r}: must be one of {allowed}.")
    if resolution is not None and resolution not in RESOLUTIONS[model]:
        allowed = ", ".join(RESOLUTIONS[model])
        raise XaiError(400, f"Invalid resolution {resolution!r} for {model}: use one of {allowed}.")
    if image is not None and references:
        raise XaiError(400, "image and reference_images cannot be combined.")
    if NO_CREDITS_MARKER in prompt:
        raise XaiError(429, "You ran out of credits.", code=429)
    job: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "model": model,
        "prompt": prompt,
        "duration": DEFAULT_DURATION if duration is None else duration,
        "_started": time.time(),
        "_outcome": _outcome(prompt),
        "_secret": secrets.token_hex(16),
        "_no_status": NO_STATUS_MARKER in prompt,
    }
    get_state().add_video(job)
    return job


def _outcome(prompt: str) -> Outcome:
    if FAIL_MARKER in prompt:
        return "failed"
    if MODERATED_MARKER in prompt:
        return "moderated"
    if EXPIRE_MARKER in prompt:
        return "expired"
    return "completed"


def render(job: Mapping[str, Any], result_base: str) -> dict[str, Any]:
    """The poll answer for ``job`` now; ``result_base`` is where ``video.url`` points."""
    outcome: Outcome = job["_outcome"]
    clock = {**job, "_outcome": "completed" if outcome == "moderated" else outcome}
    now = phase(clock, get_state().seconds_per_step)
    if now.ended_at is None or now.status in ("queued", "in_progress"):
        if job["_no_status"]:
            return {"request_id": job["id"]}
        return {"status": "pending", "model": job["model"], "progress": now.progress}
    if outcome == "failed":
        return {
            "status": "failed",
            "video": {"duration": 0, "respect_moderation": True},
            "model": "",
            "error": {"code": "internal_error", "message": "Video generation failed."},
        }
    if outcome == "expired":
        return {"status": "expired"}
    video: dict[str, Any] = {"duration": job["duration"], "respect_moderation": True}
    if outcome == "moderated":
        video["respect_moderation"] = False
    else:
        expires = int(now.ended_at) + RESULT_TTL
        token = f"{expires}-{job['_secret']}"
        video = {"url": f"{result_base}/{token}/xai-video-{job['id']}.mp4", **video}
    return {
        "status": "done",
        "video": video,
        "model": job["model"],
        "usage": {"cost_in_usd_ticks": job["duration"] * TICKS_PER_SECOND},
        "progress": 100,
    }
