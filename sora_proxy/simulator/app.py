"""The simulator's app factory: the Videos API blueprints behind the recording middleware."""

from __future__ import annotations

import hmac
import json
import os
import secrets

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from . import content, edits, views
from .recording import RecordingMiddleware
from .state import SimulatorState
from .validation import SimError

#: Answers which process serves this simulator, so ``sora-proxy serve`` can tell the
#: simulator it started from another program that happens to hold the port.
IDENTITY_PATH = "/_simulator/identity"


def create_simulator_app(
    *,
    api_key: str | None = None,
    seconds_per_step: float = 1.0,
    auth_header: str = "authorization",
    deployments: dict[str, str] | None = None,
    required_query: dict[str, str] | None = None,
) -> Flask:
    """Build the simulator app.

    :param api_key: when set, every ``/v1`` request must present it, else 401.
    :param seconds_per_step: a video is queued for one step, in progress for two, then done.
    :param auth_header: ``"authorization"`` (``Bearer <key>``, as OpenAI) or ``"api-key"``
        (the bare key in an ``api-key`` header, as Azure OpenAI).
    :param deployments: extra model names accepted, each mapped to the model it deploys
        (Azure OpenAI names deployments freely: ``{"my-sora-deploy": "sora-2"}``).
    :param required_query: query parameters every ``/v1`` request must carry with these
        values (Azure OpenAI's ``api-version``), else 400.
    """
    if auth_header not in ("authorization", "api-key"):
        raise ValueError("auth_header must be 'authorization' or 'api-key'")
    app = Flask(__name__)
    app.config.update(
        SORA_SIMULATOR_API_KEY=api_key,
        SORA_SIMULATOR_AUTH_HEADER=auth_header,
        SORA_SIMULATOR_DEPLOYMENTS=dict(deployments or {}),
        SORA_SIMULATOR_REQUIRED_QUERY=dict(required_query or {}),
        # Text parts may carry data URLs; the real upstream takes them, so should we.
        MAX_FORM_MEMORY_SIZE=None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the upstream's field order
    state = SimulatorState(seconds_per_step=seconds_per_step)
    app.extensions["sora_simulator"] = state
    app.before_request(_authenticate)
    for blueprint in (views.bp, content.bp, edits.bp):
        app.register_blueprint(blueprint)
    app.add_url_rule(IDENTITY_PATH, "sora_simulator_identity", _identity)
    app.register_error_handler(SimError, _render_sim_error)
    app.register_error_handler(HTTPException, _render_http_error)
    app.after_request(_add_request_id)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


def _authenticate() -> None:
    """Check the API key, when the app was built with one, in the configured header style."""
    for name, value in current_app.config["SORA_SIMULATOR_REQUIRED_QUERY"].items():
        if request.args.get(name) != value:
            raise SimError(
                400,
                f"Missing or unsupported query parameter '{name}'.",
                param=name,
                code="invalid_query",
            )
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


def _identity() -> dict[str, object]:
    """This simulator's identity: what it is and which process answers."""
    return {"object": "sora_simulator", "pid": os.getpid()}


def _render_sim_error(error: SimError) -> tuple[dict[str, object], int, dict[str, str]]:
    return error.envelope(), error.status, error.headers


def _render_http_error(error: HTTPException) -> Response:
    """Render werkzeug's errors (404 route, 405, 416 range) as the envelope, keeping headers."""
    status = error.code or 500
    envelope = SimError(
        status,
        error.description or error.name,
        error_type="invalid_request_error" if status < 500 else "server_error",
    ).envelope()
    response = Response(json.dumps(envelope), status=status, mimetype="application/json")
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _add_request_id(response: Response) -> Response:
    response.headers.setdefault("x-request-id", f"req_{secrets.token_hex(16)}")
    return response
