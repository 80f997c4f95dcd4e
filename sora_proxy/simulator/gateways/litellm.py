"""A LiteLLM proxy (1.110.2) as an upstream: ``openai-gateways.md`` §2.

* Routes, each with and without ``/v1``: ``POST /videos``, ``GET /videos`` (list, unfiltered),
  ``GET /videos/{id}``, ``GET /videos/{id}/content``, ``POST /videos/{id}/remix``. No DELETE:
  the path exists for GET, so it is FastAPI's 405 ``{"detail": "Method Not Allowed"}``; an
  unknown path is 404 ``{"detail": "Not Found"}`` (both before any key check).
* Keys: ``x-litellm-api-key: <key>`` (looked at first) or ``Authorization: Bearer <key>``.
* Ids: ``video_`` + base64 of ``litellm:custom_llm_provider:openai;model_id:<deployment>;
  video_id:<upstream id>``, the deployment a UUID per model name (so ids end in ``=``). An id
  that lost its ``=`` padding is re-padded, as LiteLLM does.
* The object is OpenAI's plus ``usage.duration_seconds`` (a float).
* Content is buffered (``Content-Length``), always ``video/mp4`` with ``Content-Disposition:
  attachment; filename=video_{id}.mp4``; ``variant`` and ``Range`` are ignored, so a thumbnail
  request gets the MP4. While the job is not completed the answer is still **200**, labelled
  ``video/mp4``, with the upstream's error JSON as its body.
* Errors: ``{"error": {"message", "type", "param", "code": "<HTTP status>"}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from .. import media
from .common import (
    GatewayError,
    api_key,
    bearer_token,
    get_state,
    job_phase,
    list_page,
    new_job,
    read_fields,
    same_key,
)

bp = Blueprint("gateway_litellm", __name__)

#: The provider named in every id (LiteLLM routes the id back to it).
PROVIDER = "openai"
#: ``SpecialEnums.LITELLM_MANAGED_VIDEO_COMPLETE_STR``.
MANAGED_ID = "litellm:custom_llm_provider:{};model_id:{};video_id:{}"
#: How long a completed video's assets live at the provider (its ``expires_at``).
ASSET_TTL = 3600


def install(app: Flask) -> None:
    """Add LiteLLM's routes (under ``/v1`` and bare) and FastAPI's error shapes to ``app``."""
    app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(bp, url_prefix="", name="gateway_litellm_bare")
    app.register_error_handler(404, _fastapi_not_found)
    app.register_error_handler(405, _fastapi_method_not_allowed)


def proxy_error(
    status: int, message: str, error_type: str = "invalid_request_error", param: str | None = None
) -> GatewayError:
    """LiteLLM's proxy error: the HTTP status, as a string, is the ``code``."""
    error = {"message": message, "type": error_type, "param": param, "code": str(status)}
    return GatewayError(status, {"error": error})


def _fastapi_not_found(_error: Exception) -> Response:
    return GatewayError(404, {"detail": "Not Found"}).response()


def _fastapi_method_not_allowed(error: Exception) -> Response:
    valid = getattr(error, "valid_methods", None)
    headers = {"Allow": ", ".join(valid)} if valid else {}
    return GatewayError(405, {"detail": "Method Not Allowed"}, headers=headers).response()


@bp.before_request
def _authenticate() -> None:
    expected = api_key()
    if expected is None:
        return
    presented = request.headers.get("x-litellm-api-key", "").strip() or bearer_token()
    if not presented:
        raise proxy_error(401, "Authentication Error, No api key passed in.", "auth_error", "None")
    if not same_key(presented, expected):
        message = "Authentication Error, Invalid proxy server token passed."
        raise proxy_error(401, message, "auth_error", "None")


def encode_id(upstream_id: str, model: str) -> str:
    """The LiteLLM-managed id of ``upstream_id``, created through ``model``'s deployment."""
    deployment = str(uuid.uuid5(uuid.NAMESPACE_URL, f"litellm-deployment:{model}"))
    managed = MANAGED_ID.format(PROVIDER, deployment, upstream_id)
    return "video_" + base64.b64encode(managed.encode()).decode()


def decode_id(video_id: str) -> str | None:
    """The managed string inside a LiteLLM id (padding restored), or ``None`` if it is not one."""
    if not video_id.startswith("video_"):
        return None
    encoded = video_id.removeprefix("video_")
    encoded += "=" * (-len(encoded) % 4)
    try:
        managed = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return managed if managed.startswith("litellm:custom_llm_provider:") else None


def _stored(video_id: str) -> dict[str, Any]:
    managed = decode_id(video_id)
    canonical = "video_" + base64.b64encode(managed.encode()).decode() if managed else video_id
    job = get_state().get_video(canonical)
    if job is None:
        raise proxy_error(404, f"Video with id '{video_id}' not found.", param="video_id")
    return job


def render(job: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI object LiteLLM relays for ``job`` now, plus ``usage``."""
    now = job_phase(job)
    ended = None if now.ended_at is None else max(int(now.ended_at), int(job["_started"]))
    seconds: str = job["seconds"]
    video: dict[str, Any] = {
        "id": job["id"],
        "object": "video",
        "status": now.status,
        "created_at": int(job["_started"]),
        "completed_at": ended if now.status == "completed" else None,
        "expires_at": ended + ASSET_TTL
        if ended is not None and now.status == "completed"
        else None,
        "error": None,
        "progress": now.progress,
        "remixed_from_video_id": job.get("_remixed_from"),
        "seconds": seconds,
        "size": job["size"],
        "model": job["model"],
        "usage": {"duration_seconds": float(seconds) if _is_number(seconds) else 0.0},
    }
    if now.status == "failed":
        video["error"] = {"code": "generation_failed", "message": "Simulated generation failure."}
    return video


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _create(prompt: str, model: str, size: str, seconds: str, **extra: Any) -> Response:
    upstream_id = f"video_{secrets.token_hex(16)}"
    job_id = encode_id(upstream_id, model)
    job = new_job(job_id, prompt=prompt, model=model, size=size, seconds=seconds)
    job["_upstream_id"] = upstream_id
    job.update(extra)
    return jsonify(render(job))


@bp.post("/videos")
def create_video() -> Response:
    """Create a video through the model's deployment (JSON or multipart)."""
    try:
        fields, _ = read_fields()
    except ValueError as exc:
        raise proxy_error(400, f"Invalid JSON body: {exc}") from exc
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise proxy_error(400, "model is required for video generation", param="model")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise proxy_error(400, "prompt is required", param="prompt")
    size = str(fields.get("size") or "720x1280")
    seconds = str(fields.get("seconds") or "4")
    return _create(prompt, model, size, seconds)


@bp.post("/videos/<video_id>/remix")
def remix_video(video_id: str) -> Response:
    """Remix a stored video with a new ``prompt``."""
    source = _stored(video_id)
    try:
        fields, _ = read_fields()
    except ValueError as exc:
        raise proxy_error(400, f"Invalid JSON body: {exc}") from exc
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise proxy_error(400, "prompt is required", param="prompt")
    return _create(
        prompt, source["model"], source["size"], source["seconds"], _remixed_from=source["id"]
    )


@bp.get("/videos")
def list_videos() -> Response:
    """Every stored video, whoever created it (LiteLLM does not filter by key)."""
    return list_page(render)


@bp.get("/videos/<video_id>")
def retrieve_video(video_id: str) -> Response:
    """A video's current state."""
    return jsonify(render(_stored(video_id)))


@bp.get("/videos/<video_id>/content")
def download_content(video_id: str) -> Response:
    """The MP4, buffered and labelled ``video/mp4`` whatever was asked, even when not ready."""
    job = _stored(video_id)
    headers = {"Content-Disposition": f"attachment; filename=video_{video_id}.mp4"}
    status = job_phase(job).status
    if status == "completed":
        data, _, _ = media.load("video")
    else:
        # The upstream's 400 comes back as the body of a 200 "video" (LiteLLM PR #32602).
        upstream_id = job["_upstream_id"]
        message = (
            f"Video is not ready yet, use GET /v1/videos/{upstream_id} to check its status."
            if status != "failed"
            else f"Video '{upstream_id}' failed; it has no content to download."
        )
        code = "video_not_ready" if status != "failed" else "video_failed"
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        data = json.dumps({"error": error}, separators=(",", ":")).encode()
    return Response(data, status=200, mimetype="video/mp4", headers=headers)
