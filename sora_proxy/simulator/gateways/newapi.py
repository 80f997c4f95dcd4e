"""new-api (QuantumNous) as an upstream: ``openai-gateways.md`` §1.

* Routes: ``POST /v1/videos`` (JSON or multipart), ``GET /v1/videos/{id}``,
  ``GET /v1/videos/{id}/content``, ``POST /v1/videos/{id}/remix``. Anything else (DELETE,
  list, edits, extensions, characters, HEAD) is gin's plain-text ``404 page not found``, and
  unmatched routes answer it before any key check, as gin's group middleware never runs.
* Ids are ``task_<32 alnum>``, repeated as ``task_id``. The object is re-serialised from
  new-api's struct: only non-empty fields, ``progress`` an int, ``created_at`` in milliseconds
  (the docs' example), ``completed_at``/``expires_at`` in seconds (the upstream's values).
* ``status`` is ``unknown`` until new-api's first background poll (the job's first step), then
  the upstream's ``in_progress`` and ``completed``/``failed``: ``queued`` never shows.
* Create: JSON ``seconds`` and ``input_reference`` must be strings (else 400 ``invalid_json``),
  ``model`` is required (``missing_model``), ``prompt`` too (``invalid_request``), ``size`` is
  checked only for exactly ``sora-2``/``sora-2-pro`` (``invalid_size``); ``seconds`` values are
  not. Errors are ``{"code", "message", "data": null}``; an unknown id is 400
  ``task_not_exist``.
* Content: the MP4 streamed (no ``Content-Length``) with ``Cache-Control: public,
  max-age=86400``; the query and ``Range`` are ignored. Not completed: 400 ``{"error": ...}``;
  unknown: 404 ``{"error": ... "Task not found"}``; a prompt holding
  :data:`~.common.GONE_MARKER`: 502 "Upstream service returned status 404".
* With ``result_base_url``, a completed job carries its provider URL in ``metadata.url``
  (``<result_base_url>/<token>/<id>.mp4``, valid one hour), to be fetched without the key.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from .. import media
from ..validation import SIZES, STANDARD_SIZES
from .common import (
    GONE_MARKER,
    GatewayError,
    api_key,
    bearer_token,
    get_state,
    job_phase,
    json_kind,
    new_job,
    read_fields,
    result_base_url,
    same_key,
    signed_result_url,
)

bp = Blueprint("gateway_newapi", __name__, url_prefix="/v1")

#: Sizes new-api checks, for the only two model names it checks them for.
CHECKED_SIZES = {"sora-2": STANDARD_SIZES, "sora-2-pro": SIZES}
#: How long the provider's ``metadata.url`` is valid (the provider's TTL; one hour here).
PROVIDER_URL_TTL = 3600
#: Fields a JSON create body must give as strings (new-api's struct declares them ``string``).
STRING_FIELDS = ("model", "prompt", "size", "seconds", "input_reference")

_ALNUM = string.ascii_letters + string.digits
_NOT_FOUND = "404 page not found"


def install(app: Flask) -> None:
    """Add new-api's routes and error shapes to ``app``."""
    app.register_blueprint(bp)
    app.register_error_handler(404, _gin_not_found)
    app.register_error_handler(405, _gin_not_found)
    app.after_request(_gin_json_type)


def task_error(status: int, code: str, message: str) -> GatewayError:
    """new-api's submit/fetch error: ``{"code", "message", "data": null}``."""
    return GatewayError(status, {"code": code, "message": message, "data": None})


def content_error(status: int, message: str, error_type: str) -> GatewayError:
    """new-api's content-route error: ``{"error": {"message", "type"}}``."""
    return GatewayError(status, {"error": {"message": message, "type": error_type}})


def _gin_not_found(_error: Exception) -> Response:
    return GatewayError(404, _NOT_FOUND).response()


def _gin_json_type(response: Response) -> Response:
    if response.mimetype == "application/json":
        response.headers["Content-Type"] = "application/json; charset=utf-8"
    return response


@bp.before_request
def _authenticate() -> None:
    # gin registers no HEAD route for GET ones; Flask would answer HEAD on its own.
    if request.method == "HEAD":
        raise GatewayError(404, _NOT_FOUND)
    expected = api_key()
    if expected is None:
        return
    presented = bearer_token()
    if not presented:
        raise GatewayError(401, {"error": {"message": "未提供令牌", "type": "new_api_error"}})
    if not same_key(presented, expected):
        raise GatewayError(401, {"error": {"message": "无效的令牌", "type": "new_api_error"}})


def _task_id() -> str:
    return "task_" + "".join(secrets.choice(_ALNUM) for _ in range(32))


def _check_json_types(fields: dict[str, Any]) -> None:
    for name in STRING_FIELDS:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            message = (
                f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                f"TaskSubmitReq.{name} of type string"
            )
            raise task_error(400, "invalid_json", message)
    duration = fields.get("duration")
    numeric = isinstance(duration, int) and not isinstance(duration, bool)
    if (
        duration is not None
        and not numeric
        and not (isinstance(duration, str) and duration.isdigit())
    ):
        message = (
            f"json: cannot unmarshal {json_kind(duration)} into Go struct field "
            "TaskSubmitReq.duration of type int"
        )
        raise task_error(400, "invalid_json", message)


def _checked_create() -> tuple[str, str, str, str]:
    """``(prompt, model, size, seconds)`` of a create body new-api accepts."""
    try:
        fields, is_json = read_fields()
    except ValueError as exc:
        raise task_error(400, "invalid_json", str(exc)) from exc
    if is_json:
        _check_json_types(fields)
    model = str(fields.get("model") or "")
    if not model:
        raise task_error(400, "missing_model", "model is required")
    prompt = str(fields.get("prompt") or "")
    if not prompt:
        raise task_error(400, "invalid_request", "prompt is required")
    size = str(fields.get("size") or "")
    allowed = CHECKED_SIZES.get(model)
    if allowed is not None and size and size not in allowed:
        raise task_error(400, "invalid_size", f"{model} size is invalid")
    seconds = str(fields.get("seconds") or fields.get("duration") or "")
    return prompt, model, size, seconds


def _ratios(size: str, seconds: str) -> str:
    """``X-New-Api-Other-Ratios``: billed seconds and a size ratio (its values are a guess)."""
    width, _, height = size.partition("x")
    pixels = int(width) * int(height) if width.isdigit() and height.isdigit() else 0
    ratio: float = 1 if pixels <= 1280 * 720 else round(pixels / (1280 * 720), 4)
    billed = int(seconds) if seconds.isdigit() else 4
    return json.dumps({"seconds": billed, "size": ratio}, separators=(",", ":"))


def render(job: dict[str, Any]) -> dict[str, Any]:
    """The object new-api answers for ``job`` now (empty fields left out)."""
    now = job_phase(job)
    status = "unknown" if now.status == "queued" else now.status
    video: dict[str, Any] = {
        "id": job["id"],
        "task_id": job["id"],
        "object": "video",
        "model": job["model"],
        "status": status,
        "progress": now.progress,
        "created_at": int(job["_started"] * 1000),
    }
    if now.ended_at is not None and status == "completed":
        video["completed_at"] = int(now.ended_at)
        video["expires_at"] = int(now.ended_at) + PROVIDER_URL_TTL
    if job["seconds"]:
        video["seconds"] = job["seconds"]
    if job["size"]:
        video["size"] = job["size"]
    if status == "failed":
        video["error"] = {"message": "Simulated generation failure.", "code": "generation_failed"}
    base = result_base_url()
    if base is not None and status == "completed" and now.ended_at is not None:
        expires = int(now.ended_at) + PROVIDER_URL_TTL
        video["metadata"] = {"url": signed_result_url(base, job, expires)}
    return video


def _stored(task_id: str) -> dict[str, Any]:
    job = get_state().get_video(task_id)
    if job is None:
        raise task_error(400, "task_not_exist", "task_not_exist")
    return job


def _answer_new(prompt: str, model: str, size: str, seconds: str) -> Response:
    job = new_job(_task_id(), prompt=prompt, model=model, size=size, seconds=seconds)
    response = jsonify(render(job))
    response.headers["X-New-Api-Other-Ratios"] = _ratios(size, seconds)
    return response


@bp.post("/videos")
def create_video() -> Response:
    """Submit a task (JSON or multipart); answer 200 with the new-api object."""
    return _answer_new(*_checked_create())


@bp.post("/videos/<task_id>/remix")
def remix_video(task_id: str) -> Response:
    """Submit a remix of a stored task with a new ``prompt``."""
    source = _stored(task_id)
    try:
        fields, _ = read_fields()
    except ValueError as exc:
        raise task_error(400, "invalid_json", str(exc)) from exc
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise task_error(400, "invalid_request", "prompt is required")
    return _answer_new(prompt, source["model"], source["size"], source["seconds"])


@bp.get("/videos/<task_id>")
def retrieve_video(task_id: str) -> Response:
    """The task as of the last background poll; 400 ``task_not_exist`` when unknown."""
    return jsonify(render(_stored(task_id)))


def _stream(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


@bp.get("/videos/<task_id>/content")
def download_content(task_id: str) -> Response:
    """Relay the finished MP4 (query and ``Range`` ignored)."""
    job = get_state().get_video(task_id)
    if job is None:
        raise content_error(404, "Task not found", "invalid_request_error")
    status = render(job)["status"]
    if status != "completed":
        message = f"Task is not completed yet, current status: {status}"
        raise content_error(400, message, "invalid_request_error")
    if GONE_MARKER in job["prompt"]:
        raise content_error(502, "Upstream service returned status 404", "server_error")
    data, content_type, _ = media.load("video")
    headers = {"Cache-Control": "public, max-age=86400"}
    return Response(_stream(data), mimetype=content_type, headers=headers)
