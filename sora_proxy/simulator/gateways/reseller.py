"""An OpenAI-format reseller that answers 202 (ofox.ai, apiyi, ai-stats): ``openai-gateways.md`` §3.

* ``POST /v1/videos`` answers **202** with the OpenAI object plus ``polling_url`` (the absolute
  URL of its own ``/v1/videos/{id}``); ``size`` may not be combined with ``resolution`` or
  ``aspect_ratio`` (ai-stats); JSON ``seconds`` must be a string, as at OpenAI.
* Statuses add the terminal ``cancelled`` (a prompt holding :data:`~.common.CANCEL_MARKER`,
  after two steps) and ``expired`` (:data:`~.common.EXPIRE_MARKER`, after three steps, where it
  would have completed); :data:`~sora_proxy.simulator.views.FAIL_MARKER` gives ``failed``.
  Each carries ``error: {code, message}`` with the status word as its code.
* Once completed, ``unsigned_urls`` holds one URL signed for 24 h: on the result host when
  ``result_base_url`` is set, else on this app's own ``/_results/<token>/<id>.mp4``.
* ``GET /v1/videos/{id}/content`` (with the key) serves ``variant`` assets and one ``Range``;
  ``DELETE`` and ``GET /v1/videos`` (list) work as at OpenAI.
* Polling ``GET /v1/videos/{id}`` is limited to :data:`POLLS_PER_SECOND` a second per key;
  beyond that: 429 with ``Retry-After: 1`` (rejected polls do not count).
* Errors are OpenAI's envelope; an unknown id is 404.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from .. import media
from ..content import EXTENSIONS, byte_range
from ..validation import SimError, kind
from . import results
from .common import (
    RESULT_TTL,
    GatewayError,
    api_key,
    bearer_token,
    get_state,
    job_phase,
    list_page,
    new_job,
    read_fields,
    result_base_url,
    same_key,
    signed_result_url,
)

bp = Blueprint("gateway_reseller", __name__, url_prefix="/v1")

#: Polls of one key allowed in any one-second window (ofox).
POLLS_PER_SECOND = 5
#: Where the app serves its own results when no result host was given.
OWN_RESULTS_PREFIX = "/_results"
_LIMITER_KEY = "sora_gateway_poll_limiter"


class PollLimiter:
    """A sliding one-second window of accepted polls per key."""

    def __init__(self, per_second: int = POLLS_PER_SECOND) -> None:
        self.per_second = per_second
        self._polls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count a poll by ``key`` and say whether it may go ahead."""
        now = time.monotonic()
        with self._lock:
            window = self._polls.setdefault(key, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= self.per_second:
                return False
            window.append(now)
            return True


def install(app: Flask) -> None:
    """Add the reseller's routes, its own result route, and OpenAI's error shapes to ``app``."""
    app.register_blueprint(bp)
    app.register_blueprint(results.bp, url_prefix=OWN_RESULTS_PREFIX)
    app.extensions[_LIMITER_KEY] = PollLimiter()
    app.register_error_handler(SimError, _render_sim_error)
    app.register_error_handler(404, _openai_http_error)
    app.register_error_handler(405, _openai_http_error)


def _render_sim_error(error: SimError) -> tuple[dict[str, object], int, dict[str, str]]:
    return error.envelope(), error.status, error.headers


def _openai_http_error(error: Exception) -> Response:
    status = getattr(error, "code", None) or 500
    message = getattr(error, "description", None) or str(error)
    return GatewayError(status, SimError(status, message).envelope()).response()


@bp.before_request
def _authenticate() -> None:
    expected = api_key()
    if expected is None:
        return
    presented = bearer_token()
    if not presented:
        message = "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
        raise SimError(401, message, code="invalid_api_key")
    if not same_key(presented, expected):
        raise SimError(401, "Incorrect API key provided.", code="invalid_api_key")


def _polling_url(video_id: str) -> str:
    return f"{request.host_url.rstrip('/')}/v1/videos/{video_id}"


def render(job: dict[str, Any]) -> dict[str, Any]:
    """The reseller's object for ``job`` now: OpenAI's, plus ``polling_url`` and, once
    completed, ``unsigned_urls``."""
    now = job_phase(job)
    ended = None if now.ended_at is None else max(int(now.ended_at), int(job["_started"]))
    completed = now.status == "completed" and ended is not None
    video: dict[str, Any] = {
        "id": job["id"],
        "object": "video",
        "model": job["model"],
        "status": now.status,
        "progress": now.progress,
        "created_at": int(job["_started"]),
        "completed_at": ended if completed else None,
        "expires_at": ended + RESULT_TTL if completed and ended is not None else None,
        "prompt": job["prompt"],
        "size": job["size"],
        "seconds": job["seconds"],
        "remixed_from_video_id": None,
        "error": None,
        "polling_url": _polling_url(job["id"]),
    }
    if now.status in ("failed", "cancelled", "expired"):
        messages = {
            "failed": "Simulated generation failure.",
            "cancelled": "The generation was cancelled by the provider.",
            "expired": "The generation expired before it completed.",
        }
        code = "generation_failed" if now.status == "failed" else now.status
        video["error"] = {"code": code, "message": messages[now.status]}
    if completed and ended is not None:
        base = result_base_url() or request.host_url.rstrip("/") + OWN_RESULTS_PREFIX
        video["unsigned_urls"] = [signed_result_url(base, job, ended + RESULT_TTL)]
    return video


def _not_found(video_id: str) -> SimError:
    message = f"Video with id '{video_id}' not found."
    return SimError(404, message, param="video_id", code="video_not_found")


def _stored(video_id: str) -> dict[str, Any]:
    job = get_state().get_video(video_id)
    if job is None:
        raise _not_found(video_id)
    return job


def _text_field(fields: dict[str, Any], name: str, default: str) -> str:
    value = fields.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        message = f"Invalid type for '{name}': expected a string, but got {kind(value)} instead."
        raise SimError(400, message, param=name, code="invalid_type")
    return value


@bp.post("/videos")
def create_video() -> tuple[Response, int]:
    """Accept a job: **202** with ``polling_url``."""
    try:
        fields, _ = read_fields()
    except ValueError as exc:
        raise SimError(400, f"We could not parse the JSON body of your request: {exc}") from exc
    prompt = _text_field(fields, "prompt", "")
    if not prompt:
        raise SimError(400, "Missing required parameter: 'prompt'.", param="prompt")
    if "size" in fields and ("resolution" in fields or "aspect_ratio" in fields):
        message = "'size' cannot be combined with 'resolution' or 'aspect_ratio'."
        raise SimError(400, message, param="size", code="invalid_value")
    model = _text_field(fields, "model", "sora-2")
    size = _text_field(fields, "size", "720x1280")
    seconds = _text_field(fields, "seconds", "4")
    job = new_job(
        f"video_{secrets.token_hex(16)}", prompt=prompt, model=model, size=size, seconds=seconds
    )
    return jsonify(render(job)), 202


@bp.get("/videos")
def list_videos() -> Response:
    """The stored videos, newest first unless ``order=asc``, at most ``limit``."""
    return list_page(render)


@bp.get("/videos/<video_id>")
def retrieve_video(video_id: str) -> Response:
    """Poll a job, at most :data:`POLLS_PER_SECOND` times a second per key."""
    limiter: PollLimiter = current_app.extensions[_LIMITER_KEY]
    if not limiter.allow(bearer_token()):
        message = f"Rate limit exceeded: at most {POLLS_PER_SECOND} polls per second per key."
        raise SimError(
            429,
            message,
            code="rate_limit_exceeded",
            error_type="rate_limit_error",
            headers={"Retry-After": "1"},
        )
    return jsonify(render(_stored(video_id)))


@bp.delete("/videos/<video_id>")
def delete_video(video_id: str) -> Response:
    """Delete a job; it is 404 afterwards."""
    if not get_state().delete_video(video_id):
        raise _not_found(video_id)
    return jsonify(id=video_id, object="video.deleted", deleted=True)


@bp.get("/videos/<video_id>/content")
def download_content(video_id: str) -> Response:
    """A completed job's asset (``variant``), with one ``Range`` honoured."""
    job = _stored(video_id)
    variant = request.args.get("variant", "video")
    if variant not in media.VARIANTS:
        message = f"Invalid value: '{variant}'. Supported values are: {', '.join(media.VARIANTS)}."
        raise SimError(400, message, param="variant", code="invalid_value")
    status = job_phase(job).status
    if status in ("failed", "cancelled", "expired"):
        message = f"Video '{video_id}' is {status}; it has no content to download."
        raise SimError(400, message, param="video_id", code=f"video_{status}")
    if status != "completed":
        message = f"Video is not ready yet, use GET /v1/videos/{video_id} to check its status."
        raise SimError(400, message, param="video_id", code="video_not_ready")
    data, content_type, etag = media.load(variant)
    span = byte_range(request.headers.get("Range"), len(data))
    start, end = span or (0, len(data))
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{etag}"',
        "Content-Disposition": f'attachment; filename="{video_id}.{EXTENSIONS[variant]}"',
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
    return Response(
        data[start:end], status=206 if span else 200, mimetype=content_type, headers=headers
    )
