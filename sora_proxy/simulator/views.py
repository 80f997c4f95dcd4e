"""The simulator's routes: the OpenAI-format Videos API under ``/v1``.

A video moves through its life on a clock: ``queued`` for one step, ``in_progress`` for two,
then ``completed`` (a step is ``seconds_per_step`` seconds). A prompt containing
:data:`FAIL_MARKER` ends ``failed`` instead, after two steps.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import media
from .state import SimulatorState
from .validation import SimError, check_json, check_multipart

bp = Blueprint("sora_simulator", __name__, url_prefix="/v1")

#: Put this in a prompt to get a video that ends ``failed``.
FAIL_MARKER = "[sim:fail]"


def _state() -> SimulatorState:
    state: SimulatorState = current_app.extensions["sora_simulator"]
    return state


def _poll_after_ms() -> str:
    return str(max(int(_state().seconds_per_step * 1000), 1))


def _not_found(video_id: str) -> SimError:
    message = f"Video with id '{video_id}' not found."
    return SimError(404, message, param="video_id", code="video_not_found")


def render(
    video: dict[str, Any], seconds_per_step: float, now: float | None = None
) -> dict[str, Any]:
    """Return the public Video object for a stored ``video`` as of ``now``."""
    public = {key: value for key, value in video.items() if not key.startswith("_")}
    elapsed = (time.time() if now is None else now) - video["_started"]
    steps = elapsed / seconds_per_step if seconds_per_step > 0 else float("inf")
    if video.get("_fails") and steps >= 2:
        public.update(status="failed", progress=0)
        public["error"] = {"code": "generation_failed", "message": "Simulated generation failure."}
    elif steps < 1:
        public.update(status="queued", progress=0)
    elif steps < 3:
        public.update(status="in_progress", progress=min(99, max(1, int((steps - 1) * 50))))
    else:
        finished = int(video["_started"] + 3 * seconds_per_step)
        public.update(status="completed", progress=100)
        public["completed_at"] = max(finished, public["created_at"])
        public["expires_at"] = public["created_at"] + 3600
    return public


def _new_video(prompt: str, model: str, size: str, seconds: str, **extra: Any) -> Response:
    now = time.time()
    video: dict[str, Any] = {
        "id": f"video_{secrets.token_hex(16)}",
        "object": "video",
        "model": model,
        "status": "queued",
        "progress": 0,
        "created_at": int(now),
        "completed_at": None,
        "expires_at": None,
        "prompt": prompt,
        "size": size,
        "seconds": seconds,
        "remixed_from_video_id": None,
        "error": None,
        "_started": now,
        "_fails": FAIL_MARKER in prompt,
    }
    video.update(extra)
    state = _state()
    state.add_video(video)
    response = jsonify(render(video, state.seconds_per_step, now))
    response.headers["openai-poll-after-ms"] = _poll_after_ms()
    return response


def _json_body() -> object:
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError as exc:
        message = (
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON."
        )
        raise SimError(400, message) from exc


@bp.before_request
def _authenticate() -> None:
    expected: str | None = current_app.config["SORA_SIMULATOR_API_KEY"]
    if expected is None:
        return
    if current_app.config["SORA_SIMULATOR_AUTH_HEADER"] == "api-key":
        presented = request.headers.get("api-key", "")
    else:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else ""
    if not presented:
        message = "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
        raise SimError(401, message, code="invalid_api_key")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise SimError(401, "Incorrect API key provided.", code="invalid_api_key")


@bp.post("/videos")
def create_video() -> Response:
    """Create a video from a multipart or JSON body."""
    if request.mimetype == "application/json":
        checked = check_json(_json_body())
    elif request.mimetype == "multipart/form-data":
        checked = check_multipart(request.form, request.files)
    else:
        message = (
            f"Invalid Content-Type header ({request.mimetype or 'none'}), expected "
            "multipart/form-data or application/json."
        )
        raise SimError(400, message)
    return _new_video(checked.prompt, checked.model, checked.size, checked.seconds)


@bp.post("/videos/<video_id>/remix")
def remix_video(video_id: str) -> Response:
    """Create a new video from a completed one and a new prompt (JSON ``{prompt}``)."""
    source = _state().get_video(video_id)
    if source is None:
        raise _not_found(video_id)
    if render(source, _state().seconds_per_step)["status"] != "completed":
        message = f"Video '{video_id}' is not completed; only completed videos can be remixed."
        raise SimError(400, message, param="video_id", code="invalid_value")
    body = _json_body() if request.mimetype == "application/json" else request.form.to_dict()
    fields = body if isinstance(body, dict) else {}
    checked = check_json({**fields, **{k: source[k] for k in ("model", "size", "seconds")}})
    return _new_video(
        checked.prompt, checked.model, checked.size, checked.seconds, remixed_from_video_id=video_id
    )


@bp.get("/videos")
def list_videos() -> Response:
    """List videos, newest first unless ``order=asc``, paged by ``after`` and ``limit``."""
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        message = f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'."
        raise SimError(400, message, param="order", code="invalid_value")
    raw_limit = request.args.get("limit", "20")
    if not raw_limit.isdigit() or int(raw_limit) > 100:
        message = f"Invalid 'limit': expected an integer between 0 and 100, got '{raw_limit}'."
        raise SimError(400, message, param="limit", code="invalid_value")
    limit = int(raw_limit)
    state = _state()
    videos = state.list_videos()
    if order == "desc":
        videos.reverse()
    after = request.args.get("after")
    if after:
        ids = [video["id"] for video in videos]
        videos = videos[ids.index(after) + 1 :] if after in ids else []
    page = [render(video, state.seconds_per_step) for video in videos[:limit]]
    return jsonify(
        object="list",
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(videos) > limit,
    )


@bp.get("/videos/<video_id>")
def retrieve_video(video_id: str) -> Response:
    """Return a video's current state."""
    state = _state()
    video = state.get_video(video_id)
    if video is None:
        raise _not_found(video_id)
    response = jsonify(render(video, state.seconds_per_step))
    response.headers["openai-poll-after-ms"] = _poll_after_ms()
    return response


@bp.delete("/videos/<video_id>")
def delete_video(video_id: str) -> Response:
    """Delete a video; it is gone (404) afterwards."""
    if not _state().delete_video(video_id):
        raise _not_found(video_id)
    return jsonify(id=video_id, object="video.deleted", deleted=True)


@bp.get("/videos/<video_id>/content")
def download_content(video_id: str) -> Response:
    """Serve a finished video's MP4, thumbnail or spritesheet, with Range and ETag support."""
    state = _state()
    video = state.get_video(video_id)
    if video is None:
        raise _not_found(video_id)
    variant = request.args.get("variant", "video")
    if variant not in media.VARIANTS:
        options = ", ".join(f"'{name}'" for name in media.VARIANTS)
        message = f"Invalid value: '{variant}'. Supported values are: {options}."
        raise SimError(400, message, param="variant", code="invalid_value")
    status = render(video, state.seconds_per_step)["status"]
    if status == "failed":
        message = f"Video '{video_id}' failed; it has no content to download."
        raise SimError(400, message, param="video_id", code="video_failed")
    if status != "completed":
        message = f"Video is not ready yet, use GET /v1/videos/{video_id} to check its status."
        raise SimError(400, message, param="video_id", code="video_not_ready")
    data, content_type, etag = media.load(variant)
    response = Response(data, content_type=content_type)
    response.set_etag(etag)
    return response.make_conditional(request, accept_ranges=True, complete_length=len(data))
