"""vLLM-Omni's ``/v1/videos`` routes: create, sync create, list, retrieve, delete, content.

There is no remix, edits, extensions or characters route: those paths fall to the app's
route-miss answers (see ``app.py``).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import media
from ..state import SimulatorState
from .errors import ErrorEntry, VllmError, validation_error
from .form import VideoRequest, parse_create_form
from .jobs import new_job, render

bp = Blueprint("vllm_omni", __name__, url_prefix="/v1")


def _state() -> SimulatorState:
    state: SimulatorState = current_app.extensions["sora_simulator"]
    return state


def _served_model() -> str:
    model: str = current_app.config["VLLM_OMNI_SERVED_MODEL"]
    return model


def _parse() -> VideoRequest:
    return parse_create_form(request.form, request.files, _served_model())


def _job(video_id: str) -> dict[str, Any]:
    job = _state().get_video(video_id)
    if job is None:
        raise VllmError(404, "Video not found")
    return render(job, _state().seconds_per_step)


@bp.post("/videos")
def create_video() -> Response:
    """Store a queued job from a form body and answer its ``VideoResponse``."""
    parsed = _parse()
    state = _state()
    job = new_job(parsed, _served_model(), current_app.config["VLLM_OMNI_REQUIRED_NUM_FRAMES"])
    state.add_video(job)
    return jsonify(render(job, state.seconds_per_step, job["_started"]))


@bp.post("/videos/sync")
def create_video_sync() -> Response:
    """Generate while the client waits and answer the raw MP4; no job is kept."""
    parsed = _parse()
    state = _state()
    job = new_job(parsed, _served_model(), current_app.config["VLLM_OMNI_REQUIRED_NUM_FRAMES"])
    request_id = f"video_sync-{uuid.uuid4().hex}"
    failure = job["_failure"]
    steps = 3 if failure is None else failure[2]
    time.sleep(steps * state.seconds_per_step)
    if failure is not None:
        status, message, _ = failure
        if status == 400:
            raise VllmError(400, message)
        # An engine error goes through vLLM's engine handler, which names the request.
        extra = {"request_id": request_id, "error_stage_id": 0}
        raise VllmError(500, message, error_type="InternalServerError", extra=extra)
    data, _, _ = media.load("video")
    headers = {
        "X-Request-Id": request_id,
        "X-Model": _served_model(),
        "X-Inference-Time-S": f"{2 * state.seconds_per_step:.3f}",
        "X-Stage-Durations": json.dumps(job["stage_durations"], separators=(",", ":")),
        "X-Peak-Memory-MB": f"{job['peak_memory_mb']:.3f}",
    }
    return Response(data, mimetype="video/mp4", headers=headers)


@bp.get("/videos")
def list_videos() -> Response:
    """All jobs by ``created_at`` (``order`` desc by default), no default ``limit``."""
    errors: list[ErrorEntry] = []
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        message = "Input should be 'asc' or 'desc'"
        ctx = {"expected": "'asc' or 'desc'"}
        errors.append(_query_error("literal_error", "order", message, order, ctx))
    limit = _limit(request.args.get("limit"), errors)
    if errors:
        raise validation_error(errors)
    state = _state()
    # A stable sort, reversed for desc: jobs created in the same second stay oldest first.
    jobs = sorted(state.list_videos(), key=lambda job: job["created_at"], reverse=order == "desc")
    after = request.args.get("after")
    if after is not None:
        ids = [job["id"] for job in jobs]
        jobs = jobs[ids.index(after) + 1 :] if after in ids else []
    has_more = limit is not None and len(jobs) > limit
    if limit is not None:
        jobs = jobs[:limit]
    page = [render(job, state.seconds_per_step) for job in jobs]
    return jsonify(
        object="list",
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=has_more,
    )


def _limit(raw: str | None, errors: list[ErrorEntry]) -> int | None:
    """The ``limit`` query parameter: an int in 0..100, or ``None``; bad values join ``errors``."""
    if raw is None or raw == "":
        return None
    try:
        limit = int(raw)
    except ValueError:
        message = "Input should be a valid integer, unable to parse string as an integer"
        errors.append(_query_error("int_parsing", "limit", message, raw))
        return None
    if limit < 0:
        message = "Input should be greater than or equal to 0"
        errors.append(_query_error("greater_than_equal", "limit", message, raw, {"ge": 0}))
    elif limit > 100:
        message = "Input should be less than or equal to 100"
        errors.append(_query_error("less_than_equal", "limit", message, raw, {"le": 100}))
    return limit


def _query_error(
    kind: str, name: str, message: str, value: str, ctx: dict[str, Any] | None = None
) -> ErrorEntry:
    entry: ErrorEntry = {"type": kind, "loc": ("query", name), "msg": message, "input": value}
    if ctx is not None:
        entry["ctx"] = ctx
    return entry


@bp.get("/videos/<video_id>")
def retrieve_video(video_id: str) -> tuple[Response, int]:
    """The job; a failed one with HTTP status = its ``error.code`` (400-599, else 500)."""
    job = _job(video_id)
    status = 200
    if job["status"] == "failed":
        code = job["error"]["code"]
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        job["error"]["code"] = status
    return jsonify(job), status


@bp.delete("/videos/<video_id>")
def delete_video(video_id: str) -> Response:
    """Forget the job (a running one is cancelled first)."""
    job = _job(video_id)
    _state().delete_video(video_id)
    return jsonify(id=job["id"], deleted=True, object="video.deleted")


@bp.get("/videos/<video_id>/content")
def download_video(video_id: str) -> Response:
    """The MP4 of a completed job, as Starlette's ``FileResponse``; every query is ignored."""
    job = _job(video_id)
    if job["status"] == "failed":
        message = "Video generation failed. Check job status for error details."
        raise VllmError(422, message)
    if job["file_name"] is None:
        raise VllmError(404, "Generation is still in-progress")
    data, content_type, _ = media.load("video")
    modified = job["completed_at"]
    # FileResponse's ETag: md5 of "<mtime>-<size>".
    tag = hashlib.md5(f"{float(modified)}-{len(data)}".encode(), usedforsecurity=False)
    response = Response(data, mimetype=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{job["file_name"]}"'
    response.set_etag(tag.hexdigest())
    response.last_modified = modified
    response.make_conditional(request, accept_ranges=True, complete_length=len(data))
    del response.headers["Date"]  # the server adds its own
    return response
