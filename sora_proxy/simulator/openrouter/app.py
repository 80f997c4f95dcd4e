"""The app factory of the OpenRouter simulator: bearer auth, the four video routes."""

from __future__ import annotations

import json
import os

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from .. import media
from ..app import IDENTITY_PATH
from ..content import byte_range
from ..gateways import results
from ..gateways.common import GatewayError, bearer_token, get_state, render_gateway_error, same_key
from ..gateways.reseller import PollLimiter
from ..recording import RecordingMiddleware
from ..state import SimulatorState
from ..validation import SimError
from .errors import OpenRouterError, render_openrouter_error
from .jobs import MAX_BODY_BYTES, MODELS, RETRY_AFTER_SECONDS, create_job, job_status, render

#: Where the API lives on the host, as at ``https://openrouter.ai/api/v1``.
API_PREFIX = "/api/v1"
#: Where this app serves its own signed ``urls`` when no storage host was given.
OWN_STORAGE_PREFIX = "/_storage"
_LIMITER_KEY = "sora_openrouter_poll_limiter"

bp = Blueprint("openrouter", __name__, url_prefix=API_PREFIX)


def create_openrouter_app(
    *,
    api_key: str | None = None,
    seconds_per_step: float = 1.0,
    storage_base_url: str | None = None,
) -> Flask:
    """Build a simulator of OpenRouter's video API under ``/api/v1``.

    :param api_key: when set, every route but ``/videos/models`` needs ``Authorization: Bearer
        <key>``; a missing or wrong one is a 401 in OpenRouter's envelope.
    :param seconds_per_step: a job is ``pending`` one step, ``in_progress`` two, then ends.
    :param storage_base_url: the storage host (``create_result_host_app``) the signed ``urls``
        point at; without it, this app's own ``/_storage/``.

    Every request is recorded raw in ``app.extensions["sora_simulator"]``; serve it with
    ``SimulatorServer(app=create_openrouter_app(...))``.
    """
    app = Flask(__name__)
    app.config.update(
        OPENROUTER_API_KEY=api_key,
        OPENROUTER_STORAGE_BASE_URL=storage_base_url.rstrip("/") if storage_base_url else None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep OpenRouter's field order
    state = SimulatorState(seconds_per_step=seconds_per_step)
    app.extensions["sora_simulator"] = state
    app.extensions[_LIMITER_KEY] = PollLimiter()
    app.register_blueprint(bp)
    app.register_blueprint(results.bp, url_prefix=OWN_STORAGE_PREFIX)
    app.add_url_rule(IDENTITY_PATH, "sora_simulator_identity", _identity)
    app.register_error_handler(OpenRouterError, render_openrouter_error)
    app.register_error_handler(GatewayError, render_gateway_error)
    app.register_error_handler(404, _route_miss)
    app.register_error_handler(405, _route_miss)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


@bp.before_request
def _authenticate() -> None:
    if request.endpoint == "openrouter.list_models":
        return  # the docs' curl sends no key here
    expected: str | None = current_app.config["OPENROUTER_API_KEY"]
    if expected is None:
        return
    presented = bearer_token()
    if not presented:
        raise OpenRouterError(401, "No auth credentials found")
    if not same_key(presented, expected):
        raise OpenRouterError(401, "User not found.")


def _api_base() -> str:
    return request.host_url.rstrip("/") + API_PREFIX


def _storage_base() -> str:
    base: str | None = current_app.config["OPENROUTER_STORAGE_BASE_URL"]
    return base or request.host_url.rstrip("/") + OWN_STORAGE_PREFIX


@bp.post("/videos")
def create_video() -> tuple[Response, int]:
    """Accept a job: **202** ``{id, polling_url, status: "pending"}``."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise OpenRouterError(413, "Request body exceeds the 50 MiB limit.")
    if request.mimetype != "application/json":
        raise OpenRouterError(400, "Invalid request body: expected application/json.")
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError as exc:
        raise OpenRouterError(400, f"Invalid JSON in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise OpenRouterError(400, "Invalid request body: expected a JSON object.")
    job = create_job(body)
    return jsonify(render(job, _api_base(), _storage_base())), 202


@bp.get("/videos/models")
def list_models() -> Response:
    """The video models and what each accepts."""
    return jsonify(data=list(MODELS.values()))


def _stored(job_id: str) -> dict[str, object]:
    job = get_state().get_video(job_id)
    if job is None:
        raise OpenRouterError(404, f"Video job {job_id} not found.")
    return job


@bp.get("/videos/<job_id>")
def get_video(job_id: str) -> Response:
    """The job now; polls faster than the limit (or a job's armed 429) get ``Retry-After``."""
    limiter: PollLimiter = current_app.extensions[_LIMITER_KEY]
    if not limiter.allow(bearer_token()):
        raise OpenRouterError(
            429, "Rate limit exceeded: poll at most 5 times a second.", headers={"Retry-After": "1"}
        )
    job = _stored(job_id)
    with get_state().lock:
        limited = int(str(job["_rate_limited"]))
        job["_rate_limited"] = max(0, limited - 1)
    if limited:
        raise OpenRouterError(
            429,
            "Rate limit exceeded: slow down polling.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return jsonify(render(job, _api_base(), _storage_base()))


@bp.get("/videos/<job_id>/content")
def get_content(job_id: str) -> Response:
    """A completed job's output ``index`` as ``video/mp4`` (one ``Range`` honoured)."""
    job = _stored(job_id)
    index = request.args.get("index", "0")
    if not index.isdigit():
        raise OpenRouterError(400, "Invalid 'index': must be a non-negative integer.")
    status, _ = job_status(job)
    if status == "expired":
        raise OpenRouterError(410, "The video output has expired and is no longer available.")
    if status != "completed":
        raise OpenRouterError(409, f"Video job {job_id} is {status}; it has no content.")
    if int(index) != 0:
        raise OpenRouterError(400, f"Invalid 'index': this job has 1 output, not {int(index) + 1}.")
    data, content_type, etag = media.load("video")
    try:
        span = byte_range(request.headers.get("Range"), len(data))
    except SimError as exc:
        raise OpenRouterError(416, "Requested range not satisfiable.", headers=exc.headers) from exc
    start, end = span or (0, len(data))
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{etag}"'}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
    return Response(
        data[start:end], status=206 if span else 200, mimetype=content_type, headers=headers
    )


def _identity() -> dict[str, object]:
    """Which simulator this is and which process answers (for ``sora-proxy serve``)."""
    return {"object": "sora_simulator", "dialect": "openrouter", "pid": os.getpid()}


def _route_miss(error: Exception) -> Response:
    status = getattr(error, "code", None) or 404
    return OpenRouterError(status, f"{request.method} {request.path} is not a route.").response()
