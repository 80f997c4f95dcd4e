"""CORS for the proxy's routes only (``SORA_PROXY_CORS_ORIGINS``), so that a page on another
origin can call the API from a browser.

One blueprint ``after_request`` hook, :func:`add_cors_headers`, does it all; the host app's
own routes never see it. With no origins configured (the default) it changes nothing.

* Every answer of the blueprint to an allowed ``Origin`` (errors too: a page must be able to
  read the 401, 404 or 429 envelope) gets ``Access-Control-Allow-Origin`` (the origin itself,
  or ``*`` when any origin is allowed) and ``Access-Control-Expose-Headers``.
* A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 by the
  blueprint's fallback with ``Allow`` listing what the route takes; this hook adds
  ``Access-Control-Allow-Methods`` from that same list, ``Access-Control-Allow-Headers``
  naming those requested headers that are allowed, and ``Access-Control-Max-Age``.
* Another origin gets no CORS headers at all, and its preflight the same plain 204 as any
  OPTIONS: the browser then refuses the request itself. A 403 would tell a page nothing it
  could read (the browser hides it) and would make OPTIONS answer differently per caller.

Credentials mode (cookies) is not offered: callers authenticate with bearer keys, which a
page sends in ``Authorization`` without it; ``Access-Control-Allow-Credentials`` would only
let other origins ride on a host app's session cookie.
"""

from __future__ import annotations

from flask import Response, request

from .extension import proxy_state

#: Request headers a page may send (lower case): the proxy's own, conditional and range
#: downloads, and those the openai SDKs add.
ALLOWED_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "idempotency-key",
        "x-request-id",
        "range",
        "if-range",
        "if-none-match",
        "if-modified-since",
        "openai-organization",
        "openai-project",
        "openai-beta",
        "openai-version",
    }
)
#: Prefixes of allowed request headers: the openai JS SDK's ``x-stainless-os``,
#: ``x-stainless-retry-count``, ``x-stainless-timeout``, ...
ALLOWED_HEADER_PREFIXES = ("x-stainless-",)

#: Response headers a page may read beyond the CORS-safelisted ones.
EXPOSED_HEADERS = (
    "openai-poll-after-ms",
    "x-request-id",
    "x-should-retry",
    "Retry-After",
    "retry-after-ms",
    "idempotent-replayed",
    "openai-processing-ms",
    "openai-version",
    "Content-Range",
    "Accept-Ranges",
    "Content-Length",
    "Content-Disposition",
    "ETag",
)

#: Seconds a browser may keep a preflight's answer (Chromium keeps at most 7200).
MAX_AGE = 600


def add_cors_headers(response: Response) -> Response:
    """Blueprint ``after_request``: the CORS headers for this request's ``Origin``."""
    origins = proxy_state().settings.cors_origins
    if not origins:
        return response
    # An upstream's own CORS headers speak for its origin, not the proxy's: a relayed
    # "Access-Control-Allow-Origin: *" would open the proxy to every page.
    for name in {name for name in response.headers.keys() if _is_cors_header(name)}:
        del response.headers[name]
    response.vary.add("Origin")  # answers with and without an allowed Origin differ
    allowed = _allowed_origin(request.headers.get("Origin"), origins)
    if allowed is None:
        return response
    response.headers["Access-Control-Allow-Origin"] = allowed
    response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
    if _is_preflight() and response.status_code == 204 and "Allow" in response.headers:
        _add_preflight_headers(response)
    return response


def _add_preflight_headers(response: Response) -> None:
    response.vary.update(("Access-Control-Request-Method", "Access-Control-Request-Headers"))
    response.headers["Access-Control-Allow-Methods"] = response.headers["Allow"]
    requested = request.headers.get("Access-Control-Request-Headers", "")
    names = [name.strip().lower() for name in requested.split(",") if name.strip()]
    # Only what was asked and is allowed: a header asked for and left out makes the browser
    # refuse the request, which is the answer for a header the proxy does not take.
    granted = [name for name in dict.fromkeys(names) if _header_allowed(name)]
    if granted:
        response.headers["Access-Control-Allow-Headers"] = ", ".join(granted)
    response.headers["Access-Control-Max-Age"] = str(MAX_AGE)


def _allowed_origin(origin: str | None, origins: tuple[str, ...]) -> str | None:
    """What ``Access-Control-Allow-Origin`` says to ``origin``, or ``None`` to say nothing."""
    if not origin:
        return None
    if "*" in origins:
        return "*"
    # Browsers send scheme and host in lower case; a setting may have been typed otherwise.
    if origin.lower() in {allowed.lower() for allowed in origins}:
        return origin
    return None


def _is_preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _header_allowed(name: str) -> bool:
    return name in ALLOWED_HEADERS or name.startswith(ALLOWED_HEADER_PREFIXES)


def _is_cors_header(name: str) -> bool:
    return name.lower().startswith("access-control-")
