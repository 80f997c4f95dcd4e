"""The blueprint: thin views that authenticate, validate, plan and relay.

Error handlers are registered on the blueprint, not the app: the proxy lives inside someone
else's Flask app and must not change how the host's own routes answer errors.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from .auth import Authenticator
from .bodies import read_form_body
from .errors import (
    MethodNotAllowed,
    NotFound,
    ProxyError,
    error_response,
    from_http_exception,
)
from .plan import plan_create
from .settings import Settings
from .upstream import FORWARDED_REQUEST_HEADERS, UpstreamClient, relay_response

log = logging.getLogger("sora_proxy")
EXTENSION_KEY = "sora_proxy"


class ProxyState:
    """What the extension keeps per app, in ``app.extensions["sora_proxy"]``."""

    def __init__(self, settings: Settings, authenticator: Authenticator) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.upstream = UpstreamClient(settings)


def proxy_state() -> ProxyState:
    """The current app's :class:`ProxyState`."""
    return current_app.extensions[EXTENSION_KEY]


def forwarded_headers() -> dict[str, str]:
    """The end-to-end request headers that go upstream."""
    return {
        name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers
    }


def create_video() -> Response:
    """``POST /v1/videos``: validate, infer size, rewrite the reference, relay."""
    state = proxy_state()
    caller = state.authenticator.authenticate(request)
    body = read_form_body(request, max_bytes=state.settings.create_body_limit)
    planned = plan_create(body, state.settings)
    headers = forwarded_headers()
    headers["Content-Type"] = planned.content_type
    upstream = state.upstream.send(
        "POST",
        "/videos",
        headers=headers,
        body=planned.content,
        caller_authorization=caller.upstream_authorization,
    )
    return relay_response(upstream, method="POST")


def _method_not_allowed() -> Response:
    allowed = {"POST"}
    raise MethodNotAllowed(
        f"Method {request.method} is not allowed on this route.",
        headers={"Allow": ", ".join(sorted(allowed))},
    )


def _unknown_route(rest: str = "") -> Response:
    raise NotFound(f"Unknown route: {request.method} {request.path}.", code="unknown_route")


def _render_proxy_error(error: ProxyError) -> Response:
    return error_response(error)


def _render_http_exception(error: HTTPException) -> Response:
    return error_response(from_http_exception(error))


def _render_unexpected(error: Exception) -> Response:
    log.exception("unexpected error in sora_proxy")
    return error_response(
        ProxyError("The proxy failed to handle the request.", code="internal_error")
    )


def create_blueprint() -> Blueprint:
    """A fresh blueprint (one per app, so several apps in one process stay independent)."""
    blueprint = Blueprint("sora_proxy", __name__)
    blueprint.add_url_rule("/v1/videos", view_func=create_video, methods=["POST"])
    blueprint.add_url_rule(
        "/v1/videos",
        endpoint="videos_other_methods",
        view_func=_method_not_allowed,
        methods=["GET", "HEAD", "PUT", "PATCH", "DELETE"],
    )
    blueprint.add_url_rule(
        "/v1/videos/<path:rest>",
        endpoint="unknown_route",
        view_func=_unknown_route,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
    )
    blueprint.register_error_handler(ProxyError, _render_proxy_error)
    blueprint.register_error_handler(HTTPException, _render_http_exception)
    blueprint.register_error_handler(Exception, _render_unexpected)
    return blueprint
