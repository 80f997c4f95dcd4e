"""The blueprint: routes, and the error handlers that render every failure as the envelope.

Error handlers are registered on the blueprint, not the app: the proxy lives inside someone
else's Flask app and must not change how the host's own routes answer errors.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RoutingMethodNotAllowed
from werkzeug.exceptions import NotFound as RoutingNotFound

from . import cors, health, playground, views
from .bodies import LARGE_BODY_BYTES
from .errors import (
    MethodNotAllowed,
    NotFound,
    ProxyError,
    ReferenceFetchFailed,
    error_response,
    from_http_exception,
)
from .extension import proxy_state
from .imagework import release_free_memory
from .observability import begin_request, current_info, finish_request

log = logging.getLogger("sora_proxy")
#: Every method the fallback answers (404, 405 or OPTIONS) in the envelope, so that none of
#: them reaches werkzeug's own HTML error page.
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]

#: (rule, view, methods). Literal paths share a prefix with ``/v1/videos/<video_id>``;
#: werkzeug ranks static segments above variables, so they win whatever the order here.
ROUTES = (
    ("/v1/videos", views.create_video, ["POST"]),
    ("/v1/videos", views.list_videos, ["GET"]),
    ("/v1/videos/models", views.models, ["GET"]),
    ("/v1/videos/edits", views.edit_video, ["POST"]),
    ("/v1/videos/extensions", views.extend_video, ["POST"]),
    ("/v1/videos/characters", views.create_character, ["POST"]),
    ("/v1/videos/characters/<character_id>", views.get_character, ["GET"]),
    ("/v1/videos/<video_id>", views.retrieve_video, ["GET"]),
    ("/v1/videos/<video_id>", views.delete_video, ["DELETE"]),
    ("/v1/videos/<video_id>/content", views.video_content, ["GET", "HEAD"]),
    ("/v1/videos/<video_id>/content_url", views.create_content_url, ["POST"]),
    ("/v1/videos/<video_id>/remix", views.remix_video, ["POST"]),
    ("/sora/v1/characters", views.create_character_from_url, ["POST"]),
    ("/v1/usage", views.usage, ["GET"]),
    ("/playground", playground.page, ["GET"]),
    ("/playground/assets/<name>", playground.asset, ["GET"]),
    ("/healthz", health.healthz, ["GET"]),
    ("/readyz", health.readyz, ["GET"]),
    ("/metrics", health.metrics, ["GET"]),
)
_FALLBACK_RULES = ("/v1/videos", "/v1/videos/<path:rest>", "/sora/v1/characters", "/v1/usage")


def _fallback(rest: str = "") -> Response:
    """Any path or method under the proxy's routes that no route takes: 404 or 405, and the
    answer to OPTIONS. ``Allow`` lists exactly the methods a real route takes there."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in _ALL_METHODS:
        try:
            rule, _ = adapter.match(method=method, return_rule=True)
        except (RoutingNotFound, RoutingMethodNotAllowed):
            continue
        except HTTPException:  # a redirect for a trailing slash: not a match either
            continue
        if not rule.endpoint.endswith(".fallback"):
            allowed.append(method)
    if not allowed:
        raise NotFound(f"Unknown route: {request.method} {request.path}.", code="unknown_route")
    allow = ", ".join([*allowed, "OPTIONS"])
    if request.method == "OPTIONS":
        return Response(status=204, headers={"Allow": allow})
    raise MethodNotAllowed(
        f"Method {request.method} is not allowed on {request.path}.", headers={"Allow": allow}
    )


def _render_proxy_error(error: ProxyError) -> Response:
    info = current_info()
    if info is not None:
        info.error_code = error.code or f"http_{error.status}"
    metrics = proxy_state().metrics
    if metrics is not None and isinstance(error, ReferenceFetchFailed):
        metrics.fetches_refused.labels(error.reason).inc()
    return error_response(error)


def _render_http_exception(error: HTTPException) -> Response:
    return _render_proxy_error(from_http_exception(error))


def _render_unexpected(error: Exception) -> Response:
    log.exception("unexpected error in sora_proxy")
    return _render_proxy_error(
        ProxyError("The proxy failed to handle the request.", code="internal_error")
    )


def _return_body_memory(_error: BaseException | None) -> None:
    """Hand a big body's freed pages back to the system once its request is over: glibc keeps
    them in per-thread arenas otherwise (16 concurrent 5 MB JSON creates held 372 MB)."""
    if (request.content_length or 0) >= LARGE_BODY_BYTES or g.get("sora_proxy_large_body"):
        release_free_memory()


def _start_tracker() -> None:
    """Start this worker's tracker on its first proxy request, where no gunicorn hook did
    (``flask run``, other servers); a no-op once it runs."""
    state = proxy_state()
    if state.tracker is not None:
        state.tracker.ensure_running(state)


def create_blueprint() -> Blueprint:
    """A fresh blueprint (one per app, so several apps in one process stay independent)."""
    blueprint = Blueprint("sora_proxy", __name__)
    for rule, view, methods in ROUTES:
        # No automatic OPTIONS: Flask's would list the fallback's methods in Allow too.
        blueprint.add_url_rule(
            rule,
            endpoint=f"{view.__name__}",
            view_func=view,
            methods=methods,
            provide_automatic_options=False,
        )
    # Registered last: for a path and method a real route takes, the real route wins.
    for rule in _FALLBACK_RULES:
        blueprint.add_url_rule(
            rule,
            endpoint="fallback",
            view_func=_fallback,
            methods=_ALL_METHODS,
            provide_automatic_options=False,
        )
    blueprint.before_request(begin_request)
    blueprint.before_request(_start_tracker)
    blueprint.after_request(finish_request)
    # On every answer of the blueprint, errors included; preflights are the fallback's 204.
    blueprint.after_request(cors.add_cors_headers)
    blueprint.teardown_request(_return_body_memory)
    blueprint.register_error_handler(ProxyError, _render_proxy_error)
    blueprint.register_error_handler(HTTPException, _render_http_exception)
    blueprint.register_error_handler(Exception, _render_unexpected)
    return blueprint
