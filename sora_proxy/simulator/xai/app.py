"""The app factory of the xAI simulator: bearer auth (a wrong key is a 400), the routes."""

from __future__ import annotations

import json
import os

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from ..app import IDENTITY_PATH
from ..gateways import results
from ..gateways.common import GatewayError, bearer_token, get_state, render_gateway_error, same_key
from ..recording import RecordingMiddleware
from ..state import SimulatorState
from .errors import NOT_FOUND, XaiError, render_xai_error, wrong_key
from .jobs import create_job, render

#: Where this app serves its own results when no result host was given (xAI's bucket path).
OWN_RESULTS_PREFIX = "/xai-vidgen-bucket"

bp = Blueprint("xai", __name__, url_prefix="/v1")


def create_xai_app(
    *,
    api_key: str | None = None,
    seconds_per_step: float = 1.0,
    result_base_url: str | None = None,
) -> Flask:
    """Build a simulator of xAI's REST video API.

    :param api_key: when set, every ``/v1`` request needs ``Authorization: Bearer <key>``;
        a wrong or missing one is answered 400 ``{code, error}`` ("Incorrect API key").
    :param seconds_per_step: a job is pending for three steps (``progress`` 0, then rising),
        then ends; ``failed`` ends after two.
    :param result_base_url: the result host (``create_result_host_app``) ``video.url`` points
        at; without it, this app's own ``/xai-vidgen-bucket/``.

    Every request is recorded raw in ``app.extensions["sora_simulator"]``; serve it with
    ``SimulatorServer(app=create_xai_app(...))``.
    """
    app = Flask(__name__)
    app.config.update(
        XAI_API_KEY=api_key,
        XAI_RESULT_BASE_URL=result_base_url.rstrip("/") if result_base_url else None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep xAI's field order
    state = SimulatorState(seconds_per_step=seconds_per_step)
    app.extensions["sora_simulator"] = state
    app.register_blueprint(bp)
    app.register_blueprint(results.bp, url_prefix=OWN_RESULTS_PREFIX)
    app.add_url_rule(IDENTITY_PATH, "sora_simulator_identity", _identity)
    app.register_error_handler(XaiError, render_xai_error)
    app.register_error_handler(GatewayError, render_gateway_error)
    app.register_error_handler(404, _route_miss)
    app.register_error_handler(405, _route_miss)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


@bp.before_request
def _authenticate() -> None:
    expected: str | None = current_app.config["XAI_API_KEY"]
    if expected is None:
        return
    presented = bearer_token()
    if not same_key(presented, expected):
        # A missing key's status is not documented; it is answered like a wrong one.
        raise wrong_key(presented)


def _result_base() -> str:
    base: str | None = current_app.config["XAI_RESULT_BASE_URL"]
    return base or request.host_url.rstrip("/") + OWN_RESULTS_PREFIX


@bp.post("/videos/generations")
def create_generation() -> Response:
    """Start a job: 200 ``{"request_id"}`` and nothing else."""
    if request.mimetype != "application/json":
        raise XaiError(415, "Expected request with `Content-Type: application/json`", code=415)
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError as exc:
        raise XaiError(400, f"Failed to parse the request body as JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise XaiError(422, "Failed to deserialize the JSON body into the target type")
    job = create_job(body)
    return jsonify(request_id=job["id"])


@bp.get("/videos/<request_id>")
def get_generation(request_id: str) -> Response:
    """The job now: ``pending`` / ``done`` / ``failed`` / ``expired``, always 200."""
    job = get_state().get_video(request_id)
    if job is None:
        raise XaiError(404, f"No deferred request found for id {request_id}.", code=NOT_FOUND)
    return jsonify(render(job, _result_base()))


def _identity() -> dict[str, object]:
    """Which simulator this is and which process answers (for ``sora-proxy serve``)."""
    return {"object": "sora_simulator", "dialect": "xai", "pid": os.getpid()}


def _route_miss(error: Exception) -> Response:
    status = getattr(error, "code", None) or 404
    response = jsonify(code=NOT_FOUND, error=f"{request.method} {request.path} is not a route.")
    response.status_code = status
    return response
