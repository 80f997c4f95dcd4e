"""The simulator's core routes under ``/v1``: create, list, retrieve, delete, remix.

Content downloads are in :mod:`.content`; edits, extensions and characters in :mod:`.edits`.

A video moves through its life on a clock: ``queued`` for one step, ``in_progress`` for two,
then ``completed`` (a step is ``seconds_per_step`` seconds). A prompt containing
:data:`FAIL_MARKER` ends ``failed`` instead, after two steps.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .state import SimulatorState
from .validation import SimError, check_json, check_multipart, check_prompt

bp = Blueprint("sora_simulator", __name__, url_prefix="/v1")

#: Put this in a prompt to get a video that ends ``failed``.
FAIL_MARKER = "[sim:fail]"


def get_state() -> SimulatorState:
    """The app's :class:`SimulatorState`."""
    state: SimulatorState = current_app.extensions["sora_simulator"]
    return state


def poll_after_ms() -> str:
    """The ``openai-poll-after-ms`` value: one step of the video clock."""
    return str(max(int(get_state().seconds_per_step * 1000), 1))


def not_found(video_id: str, param: str = "video_id") -> SimError:
    """The 404 envelope for an unknown video."""
    message = f"Video with id '{video_id}' not found."
    return SimError(404, message, param=param, code="video_not_found")


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


def new_video(prompt: str, model: str, size: str, seconds: str, **extra: Any) -> Response:
    """Store a new queued video and answer it, with ``openai-poll-after-ms``."""
    state = get_state()
    video = state.create_video(prompt, model, size, seconds, fails=FAIL_MARKER in prompt, **extra)
    response = jsonify(render(video, state.seconds_per_step, video["_started"]))
    response.headers["openai-poll-after-ms"] = poll_after_ms()
    return response


def completed_source(video_id: str, param: str, action: str) -> dict[str, Any]:
    """Return stored video ``video_id`` if it is completed: 404 if unknown, else 400."""
    state = get_state()
    source = state.get_video(video_id)
    if source is None:
        raise not_found(video_id, param)
    if render(source, state.seconds_per_step)["status"] != "completed":
        message = f"Video '{video_id}' is not completed; only completed videos can be {action}."
        raise SimError(400, message, param=param, code="invalid_value")
    return source


def json_body() -> object:
    """Parse the request body as JSON, or raise the 400 the upstream gives for bad JSON."""
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError as exc:
        message = (
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON."
        )
        raise SimError(400, message) from exc


@bp.post("/videos")
def create_video() -> Response:
    """Create a video from a multipart or JSON body."""
    if request.mimetype == "application/json":
        checked = check_json(json_body())
    elif request.mimetype == "multipart/form-data":
        checked = check_multipart(request.form, request.files)
    else:
        message = (
            f"Invalid Content-Type header ({request.mimetype or 'none'}), expected "
            "multipart/form-data or application/json."
        )
        raise SimError(400, message)
    return new_video(checked.prompt, checked.model, checked.size, checked.seconds)


@bp.post("/videos/<video_id>/remix")
def remix_video(video_id: str) -> Response:
    """Create a new video from a completed one and a new prompt (JSON ``{prompt}``).

    Only ``prompt`` is the caller's; model, size and seconds are the source's, taken as they
    are: an extended source's ``seconds`` is a stitched total such as ``"16"``, which no create
    could ask for, and the caller never sent it.
    """
    source = completed_source(video_id, "video_id", "remixed")
    body = json_body() if request.mimetype == "application/json" else request.form.to_dict()
    fields = body if isinstance(body, dict) else {}
    prompt = check_prompt(fields.get("prompt"))
    return new_video(
        prompt,
        str(source["model"]),
        str(source["size"]),
        str(source["seconds"]),
        remixed_from_video_id=video_id,
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
    state = get_state()
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
    state = get_state()
    video = state.get_video(video_id)
    if video is None:
        raise not_found(video_id)
    response = jsonify(render(video, state.seconds_per_step))
    response.headers["openai-poll-after-ms"] = poll_after_ms()
    return response


@bp.delete("/videos/<video_id>")
def delete_video(video_id: str) -> Response:
    """Delete a video; it is gone (404) afterwards."""
    if not get_state().delete_video(video_id):
        raise not_found(video_id)
    return jsonify(id=video_id, object="video.deleted", deleted=True)
