"""The simulated models and jobs: a create checked as OpenRouter checks it, each poll's answer.

A job is a plain dict in :attr:`SimulatorState.videos` under its ``gen-vid-…`` id; keys starting
with ``_`` are internal: ``_started`` (its clock), ``_outcome`` (from the prompt's markers),
``_secret`` (the random half of its signed URL's token), ``_stored`` (whether OpenRouter keeps
a copy, i.e. whether ``urls`` exist), ``_rate_limited`` (polls still to refuse with 429).
"""

from __future__ import annotations

import math
import secrets
import string
import time
from collections.abc import Mapping
from typing import Any, Literal

from ..gateways.common import RESULT_TTL, get_state, phase
from ..views import FAIL_MARKER
from .errors import OpenRouterError

#: The video models this simulator offers, as ``GET /videos/models`` lists them.
MODELS: dict[str, dict[str, Any]] = {
    "openai/sora-2-pro": {
        "id": "openai/sora-2-pro",
        "canonical_slug": "openai/sora-2-pro-2025-10-06",
        "name": "OpenAI: Sora 2 Pro",
        "created": 1759708800,
        "description": "OpenAI's Sora 2 Pro video model with synchronised audio.",
        "allowed_passthrough_parameters": [],
        "supported_durations": [4, 8, 12],
        "supported_resolutions": ["720p"],
        "supported_aspect_ratios": ["16:9", "9:16"],
        "supported_sizes": ["720x1280", "1280x720", "1024x1792", "1792x1024"],
        "supported_frame_images": ["first_frame"],
        "generate_audio": True,
        "seed": False,
        "creativity": None,
        "upscale_factor": None,
        "hugging_face_id": None,
        "pricing_skus": {"video_seconds": "0.30"},
    },
    "google/veo-3.1": {
        "id": "google/veo-3.1",
        "canonical_slug": "google/veo-3.1-2025-10-15",
        "name": "Google: Veo 3.1",
        "created": 1760486400,
        "description": "Google's Veo 3.1 with native audio.",
        "allowed_passthrough_parameters": ["negativePrompt", "personGeneration"],
        "supported_durations": [4, 6, 8],
        "supported_resolutions": ["720p", "1080p"],
        "supported_aspect_ratios": ["16:9", "9:16"],
        "supported_sizes": None,
        "supported_frame_images": ["first_frame", "last_frame"],
        "generate_audio": True,
        "seed": True,
        "creativity": None,
        "upscale_factor": None,
        "hugging_face_id": None,
        "pricing_skus": {"video_seconds": "0.40"},
    },
}
#: Aspect-ratio words as width / height.
ASPECT_RATIOS = {
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "1:1": 1.0,
    "4:3": 4 / 3,
    "3:4": 3 / 4,
    "3:2": 3 / 2,
    "2:3": 2 / 3,
    "21:9": 21 / 9,
    "9:21": 9 / 21,
}
#: The create body cap, checked against ``Content-Length`` before the body is read.
MAX_BODY_BYTES = 50 * 1024 * 1024

#: A prompt holding this ends ``failed`` with an ``error`` string naming content moderation.
MODERATED_MARKER = "[sim:moderated]"
#: A prompt holding this ends ``cancelled`` after two steps.
CANCEL_MARKER = "[sim:cancel]"
#: A prompt holding this reads ``completed`` for one step, then ``expired`` (output gone).
EXPIRE_MARKER = "[sim:expire]"
#: A prompt holding this completes with ``unsigned_urls`` only: no stored copy, no ``urls``.
NO_STORED_COPY_MARKER = "[sim:no-stored-copy]"
#: A prompt holding this makes the job's first poll a 429 with ``Retry-After``.
RATE_LIMIT_MARKER = "[sim:rate-limit]"
#: A prompt holding this is refused at create: 402, insufficient credits.
NO_CREDITS_MARKER = "[sim:no-credits]"
#: The ``Retry-After`` seconds of a rate-limited poll.
RETRY_AFTER_SECONDS = 2

Outcome = Literal["completed", "failed", "moderated", "cancelled", "expired"]
_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """``<prefix>-<unix>-<20 alphanumerics>``, OpenRouter's generation id format."""
    tail = "".join(secrets.choice(_ALNUM) for _ in range(20))
    return f"{prefix}-{int(time.time())}-{tail}"


def _bad(message: str) -> OpenRouterError:
    return OpenRouterError(400, message)


def _typed(body: Mapping[str, Any], name: str, kind: type, expected: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _bad(f"Invalid request body: '{name}' must be {expected}.")
    return value


def _allowed(model: Mapping[str, Any], key: str, value: Any, what: str) -> None:
    allowed = model.get(key)
    if allowed is not None and value not in allowed:
        listed = ", ".join(str(item) for item in allowed)
        raise _bad(f"Unsupported {what} {value!r} for model {model['id']}. Supported: {listed}.")


def size_as_resolution(size: str) -> tuple[str, str] | None:
    """The ``resolution`` and ``aspect_ratio`` a ``WIDTHxHEIGHT`` size stands for, if any
    aspect-ratio word is within 1% of it."""
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or not int(width) or not int(height):
        return None
    ratio = int(width) / int(height)
    aspect = min(ASPECT_RATIOS, key=lambda word: abs(math.log(ASPECT_RATIOS[word] / ratio)))
    if abs(math.log(ASPECT_RATIOS[aspect] / ratio)) > 0.01:
        return None
    return f"{min(int(width), int(height))}p", aspect


def _check_size(model: Mapping[str, Any], size: str) -> None:
    sizes = model.get("supported_sizes")
    if sizes is not None:
        _allowed(model, "supported_sizes", size, "size")
        return
    derived = size_as_resolution(size)
    if derived is None:
        raise _bad(f"Unsupported size {size!r} for model {model['id']}.")
    _allowed(model, "supported_resolutions", derived[0], "size")
    _allowed(model, "supported_aspect_ratios", derived[1], "size")


def _check_image_url(where: str, part: Any) -> None:
    if not isinstance(part, Mapping) or part.get("type") != "image_url":
        raise _bad(f"Invalid request body: '{where}' must be an image_url part.")
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, Mapping) else None
    if not isinstance(url, str):
        raise _bad(f"Invalid request body: '{where}.image_url.url' is required.")
    if url.startswith("data:"):
        if not url.startswith("data:image/") or ";base64," not in url:
            raise _bad(f"Invalid '{where}.image_url.url': a data URI must be a base64 image.")
    elif not url.startswith("https://"):
        raise _bad(f"Invalid '{where}.image_url.url': must be an https URL or a data URI.")


def _check_frames(model: Mapping[str, Any], frames: list[Any]) -> None:
    seen: set[str] = set()
    for index, frame in enumerate(frames):
        where = f"frame_images[{index}]"
        _check_image_url(where, frame)
        frame_type = frame.get("frame_type")
        if frame_type not in ("first_frame", "last_frame"):
            raise _bad(f"Invalid '{where}.frame_type': use first_frame or last_frame.")
        _allowed(model, "supported_frame_images", frame_type, "frame image")
        if frame_type in seen:
            raise _bad(f"Only one {frame_type} image may be given.")
        seen.add(frame_type)


def create_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``POST /videos`` body as OpenRouter does, store the job, return it."""
    name = _typed(body, "model", str, "a string")
    if name is None:
        raise _bad("Invalid request body: 'model' is required.")
    model = MODELS.get(name)
    if model is None:
        raise OpenRouterError(404, f"Model {name} not found or is not a video model.")
    prompt = _typed(body, "prompt", str, "a string") or ""
    duration = _typed(body, "duration", int, "an integer")
    resolution = _typed(body, "resolution", str, "a string")
    aspect_ratio = _typed(body, "aspect_ratio", str, "a string")
    size = _typed(body, "size", str, "a string")
    frames = _typed(body, "frame_images", list, "an array") or []
    references = _typed(body, "input_references", list, "an array") or []
    callback_url = _typed(body, "callback_url", str, "a string")
    previous = _typed(body, "previous_job_id", str, "a string")
    _typed(body, "generate_audio", bool, "a boolean")
    _typed(body, "seed", int, "an integer")
    if not prompt and not frames and not references:
        raise _bad(f"A prompt is required for model {name}.")
    if duration is not None:
        _allowed(model, "supported_durations", duration, "duration")
    if resolution is not None:
        _allowed(model, "supported_resolutions", resolution, "resolution")
    if aspect_ratio is not None:
        _allowed(model, "supported_aspect_ratios", aspect_ratio, "aspect_ratio")
    if size is not None:
        _check_size(model, size)
    _check_frames(model, frames)
    for index, reference in enumerate(references):
        if isinstance(reference, Mapping) and reference.get("type") == "image_url":
            _check_image_url(f"input_references[{index}]", reference)
    if callback_url is not None and not callback_url.startswith("https://"):
        raise _bad("Invalid 'callback_url': it must be an HTTPS URL.")
    if previous is not None:
        _check_previous(name, previous)
    if NO_CREDITS_MARKER in prompt:
        raise OpenRouterError(
            402, "Insufficient credits. Add more using https://openrouter.ai/credits"
        )
    durations = model["supported_durations"]
    job: dict[str, Any] = {
        "id": new_id("gen-vid"),
        "model": name,
        "prompt": prompt,
        "duration": duration if duration is not None else durations[0],
        "_started": time.time(),
        "_outcome": _outcome(prompt),
        "_secret": secrets.token_hex(16),
        "_stored": NO_STORED_COPY_MARKER not in prompt,
        "_rate_limited": 1 if RATE_LIMIT_MARKER in prompt else 0,
        "_generation_id": new_id("gen"),
    }
    get_state().add_video(job)
    return job


def _check_previous(model: str, previous: str) -> None:
    earlier = get_state().get_video(previous)
    if earlier is None:
        raise OpenRouterError(404, f"Video job {previous} not found.")
    if earlier["model"] != model:
        raise _bad("previous_job_id must refer to a job on the same model.")
    if job_status(earlier)[0] != "completed":
        raise OpenRouterError(409, f"Video job {previous} has not completed.")


def _outcome(prompt: str) -> Outcome:
    if FAIL_MARKER in prompt:
        return "failed"
    if MODERATED_MARKER in prompt:
        return "moderated"
    if CANCEL_MARKER in prompt:
        return "cancelled"
    if EXPIRE_MARKER in prompt:
        return "expired"
    return "completed"


def job_status(job: Mapping[str, Any]) -> tuple[str, float | None]:
    """The job's OpenRouter status word now, and when it ended (``None`` while it runs).

    ``pending`` for one step, ``in_progress`` for two; ``failed`` (moderated too) and
    ``cancelled`` end after two steps, ``completed`` after three; an expiring job reads
    ``completed`` for one step and ``expired`` after that.
    """
    outcome: Outcome = job["_outcome"]
    step = get_state().seconds_per_step
    clock = {**job, "_outcome": "failed" if outcome == "moderated" else outcome}
    if outcome == "expired":
        clock["_outcome"] = "completed"
    now = phase(clock, step)
    if now.status == "queued":
        return "pending", None
    if outcome == "expired" and now.ended_at is not None and time.time() >= now.ended_at + step:
        return "expired", now.ended_at + step
    return now.status, now.ended_at


_ERRORS = {
    "failed": "Video generation failed: the provider returned an internal error.",
    "moderated": "The provider's content moderation flagged this request (content policy "
    "violation); no video was generated.",
    "cancelled": "The video generation job was cancelled by the provider.",
    "expired": "The video output expired before it was retrieved.",
}


def render(job: Mapping[str, Any], api_base: str, storage_base: str) -> dict[str, Any]:
    """The job object now (``VideoGenerationResponse``).

    :param api_base: ``<origin>/api/v1``, where ``unsigned_urls`` point.
    :param storage_base: where the signed ``urls`` point.
    """
    status, ended = job_status(job)
    answer: dict[str, Any] = {
        "id": job["id"],
        "polling_url": f"/api/v1/videos/{job['id']}",
        "status": status,
    }
    if status in ("failed", "cancelled", "expired"):
        outcome = job["_outcome"]
        answer["error"] = _ERRORS["moderated" if outcome == "moderated" else status]
        answer["generation_id"] = job["_generation_id"]
    if status == "completed" and ended is not None:
        answer["generation_id"] = job["_generation_id"]
        answer["unsigned_urls"] = [f"{api_base}/videos/{job['id']}/content?index=0"]
        if job["_stored"]:
            step = get_state().seconds_per_step
            ttl = step if job["_outcome"] == "expired" else RESULT_TTL
            expires_at = int(ended + ttl) + 1
            token = f"{expires_at}-{job['_secret']}"
            answer["urls"] = [f"{storage_base}/{token}/{job['id']}.mp4"]
            answer["expires_at"] = expires_at
        price = float(MODELS[job["model"]]["pricing_skus"]["video_seconds"])
        answer["usage"] = {"cost": round(price * job["duration"], 4), "is_byok": False}
    return answer
