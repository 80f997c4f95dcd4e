"""The gateway simulators' app factory: one style's routes behind the recording middleware."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from ..recording import RecordingMiddleware
from ..state import SimulatorState
from . import litellm, newapi, reseller
from .common import GatewayError, render_gateway_error

#: Each style's name -> the function adding its routes and error shapes to an app.
STYLES: dict[str, Callable[[Flask], None]] = {
    "new-api": newapi.install,
    "litellm": litellm.install,
    "reseller": reseller.install,
}


def create_gateway_app(
    style: str,
    *,
    api_key: str | None = None,
    seconds_per_step: float = 1.0,
    result_base_url: str | None = None,
) -> Flask:
    """Build a simulator of one OpenAI-format gateway family.

    :param style: ``"new-api"``, ``"litellm"`` or ``"reseller"``.
    :param api_key: when set, the gateway's routes require it (in the style's header), else 401.
    :param seconds_per_step: a job is queued (new-api: ``unknown``) for one step, in progress
        for two, then done; failures and cancellations end after two.
    :param result_base_url: the result host's base URL (``create_result_host_app``): new-api
        then puts a completed job's URL in ``metadata.url``, a reseller in ``unsigned_urls``
        (without it, a reseller points them at its own ``/_results``; new-api gives none).
    """
    install = STYLES.get(style)
    if install is None:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    app = Flask(__name__)
    app.config.update(
        SORA_GATEWAY_STYLE=style,
        SORA_GATEWAY_API_KEY=api_key,
        SORA_GATEWAY_RESULT_BASE_URL=result_base_url.rstrip("/") if result_base_url else None,
        # Text parts may carry data URLs; gateways take them.
        MAX_FORM_MEMORY_SIZE=None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the gateway's field order
    state = SimulatorState(seconds_per_step=seconds_per_step)
    app.extensions["sora_simulator"] = state
    install(app)
    app.register_error_handler(GatewayError, render_gateway_error)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app
