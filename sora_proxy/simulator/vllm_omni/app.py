"""The app factory of the vLLM-Omni simulator: routes, auth, and vLLM's error answers."""

from __future__ import annotations

import hashlib
import os
import secrets

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..app import IDENTITY_PATH
from ..recording import RecordingMiddleware
from ..state import SimulatorState
from . import routes
from .errors import VllmError

#: The model ``vllm serve`` names when started with no ``--served-model-name``.
DEFAULT_SERVED_MODEL = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"

#: Paths vLLM's ``AuthenticationMiddleware`` guards; the others (``/health``) stay open.
_GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")


def create_vllm_omni_app(
    *,
    served_model: str = DEFAULT_SERVED_MODEL,
    api_key: str | None = None,
    seconds_per_step: float = 1.0,
    required_num_frames: int | None = None,
) -> Flask:
    """Build a simulator of ``vllm serve <model> --omni`` serving one video model.

    :param served_model: the served model name; a create naming another model is refused.
    :param api_key: as ``--api-key``: when set, every ``/v1`` request needs
        ``Authorization: Bearer <key>``, else 401 ``{"error": "Unauthorized"}``.
    :param seconds_per_step: a job is queued one step, in progress two, then completed.
    :param required_num_frames: as a fixed-duration model (MAGI-2): a create sending another
        ``num_frames`` is accepted, then fails 400 "This diffusion model requires N frames".

    Every request is recorded raw in ``app.extensions["sora_simulator"]`` (a
    :class:`~sora_proxy.simulator.state.SimulatorState`, whose ``fail_next`` also works here);
    serve it with ``SimulatorServer(app=create_vllm_omni_app(...))``.
    """
    app = Flask(__name__)
    app.config.update(
        VLLM_OMNI_SERVED_MODEL=served_model,
        VLLM_OMNI_API_KEY=api_key,
        VLLM_OMNI_REQUIRED_NUM_FRAMES=required_num_frames,
        # image_reference may carry a data URL: no cap on text parts, as FastAPI has none.
        MAX_FORM_MEMORY_SIZE=None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep VideoResponse's key order
    state = SimulatorState(seconds_per_step=seconds_per_step)
    app.extensions["sora_simulator"] = state
    app.before_request(_authenticate)
    app.before_request(_fastapi_methods)
    app.register_blueprint(routes.bp)
    app.add_url_rule("/health", "health", _health)
    app.add_url_rule(IDENTITY_PATH, "sora_simulator_identity", _identity)
    app.register_error_handler(VllmError, _render_vllm_error)
    app.register_error_handler(HTTPException, _render_route_miss)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


def _authenticate() -> Response | None:
    """vLLM's bearer check: scheme case-insensitive, the token compared as sent."""
    expected: str | None = current_app.config["VLLM_OMNI_API_KEY"]
    if expected is None or request.method == "OPTIONS":
        return None
    if not request.path.startswith(_GUARDED_PREFIXES):
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    presented = hashlib.sha256(token.encode()).digest()
    wanted = hashlib.sha256(expected.encode()).digest()
    if scheme.lower() == "bearer" and secrets.compare_digest(presented, wanted):
        return None
    response = jsonify(error="Unauthorized")
    response.status_code = 401
    return response


def _fastapi_methods() -> None:
    """FastAPI routes answer only their declared methods: no automatic HEAD or OPTIONS."""
    if request.method in ("HEAD", "OPTIONS") and request.url_rule is not None:
        allowed = sorted((request.url_rule.methods or set()) - {"HEAD", "OPTIONS"})
        raise MethodNotAllowed(valid_methods=allowed)


def _health() -> Response:
    """``GET /health``: 200 with an empty body while the engine is alive."""
    return Response(status=200)


def _identity() -> dict[str, object]:
    """Which simulator this is and which process answers (for ``sora-proxy serve``)."""
    return {"object": "sora_simulator", "dialect": "vllm-omni", "pid": os.getpid()}


def _render_vllm_error(error: VllmError) -> tuple[Response, int]:
    return jsonify(error.body()), error.status


def _render_route_miss(error: HTTPException) -> Response:
    """Starlette's own errors (an unknown path, a wrong method, a body it cannot parse) reach
    FastAPI's default handler, not vLLM's: ``{"detail": "Not Found"}``."""
    status = error.code or 500
    detail = (
        error.name if isinstance(error, MethodNotAllowed) or status == 404 else error.description
    )
    response = jsonify(detail=detail)
    response.status_code = status
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        methods = [m for m in error.valid_methods if m not in ("HEAD", "OPTIONS")]
        response.headers["Allow"] = ", ".join(sorted(methods, reverse=True))
    return response
