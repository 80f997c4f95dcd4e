"""The app factory of the Gemini simulator: the key check, routes, Google's error answers."""

from __future__ import annotations

import hmac
import os

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from ..app import IDENTITY_PATH
from ..recording import RecordingMiddleware
from ..state import SimulatorState
from . import routes
from .errors import ERROR_INFO, GoogleError


def create_gemini_app(*, api_key: str | None = None, seconds_per_step: float = 1.0) -> Flask:
    """Build a simulator of the Gemini API's Veo endpoints under ``/v1beta``.

    :param api_key: when set, every ``/v1beta`` request needs it in ``x-goog-api-key`` or
        ``?key=``: none is 403 ``PERMISSION_DENIED``, a wrong one 400 ``INVALID_ARGUMENT``
        with ``reason: API_KEY_INVALID``.
    :param seconds_per_step: an operation runs three steps, then is done (failed after two).

    Every request is recorded raw in ``app.extensions["sora_simulator"]``; serve it with
    ``SimulatorServer(app=create_gemini_app(...))``.
    """
    app = Flask(__name__)
    app.config.update(GEMINI_API_KEY=api_key)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = SimulatorState(seconds_per_step=seconds_per_step)
    app.extensions["sora_simulator"] = state
    app.before_request(_authenticate)
    app.register_blueprint(routes.bp)
    app.add_url_rule(IDENTITY_PATH, "sora_simulator_identity", _identity)
    app.register_error_handler(GoogleError, _render)
    app.register_error_handler(HTTPException, _route_miss)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


def _authenticate() -> Response | None:
    expected: str | None = current_app.config["GEMINI_API_KEY"]
    if expected is None or not request.path.startswith("/v1beta"):
        return None
    presented = request.headers.get("x-goog-api-key") or request.args.get("key")
    if presented is None:
        raise GoogleError(
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API.",
        )
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        info = {
            "@type": ERROR_INFO,
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        raise GoogleError(
            "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details=[info]
        )
    return None


def _identity() -> dict[str, object]:
    """Which simulator this is and which process answers (for ``sora-proxy serve``)."""
    return {"object": "sora_simulator", "dialect": "gemini", "pid": os.getpid()}


def _render(error: GoogleError) -> Response:
    return error.response()


def _route_miss(error: HTTPException) -> Response:
    """An unknown path or method: Google's 404 ``NOT_FOUND`` envelope."""
    return GoogleError("NOT_FOUND", f"Method not found: {request.method} {request.path}").response()
