"""The playground page (``SORA_PROXY_PLAYGROUND``): try the API from a browser.

``GET {prefix}/playground`` is one server-rendered page (``playground_assets/playground.html``,
a Jinja template) with a little plain JavaScript and CSS beside it, served from
``{prefix}/playground/assets/<name>``. No build step, nothing from another origin: the page
works with no internet. The script calls the proxy's own API (``{prefix}/v1``) on the same
origin, exactly as any client does: with a caller key the visitor types (kept in the tab's
``sessionStorage``), or, when the host app passed ``authenticate=``, with the host app's own
session cookie. The page itself holds no key and no secret, so it needs no authentication.

With the setting off, both routes answer the same 404 as a route that does not exist.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import NoReturn

from flask import Response, request, url_for
from jinja2 import Environment, PackageLoader, Template

from .errors import NotFound
from .extension import ProxyState, proxy_state

_PACKAGE = "sora_proxy"
_FOLDER = "playground_assets"
_TEMPLATE = "playground.html"

#: The files ``{prefix}/playground/assets/<name>`` serves, and their types: nothing else.
#: (The template is not among them: unrendered, it is of no use to a browser.)
ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}

#: Only this origin's script, style, API and media, plus the ``blob:`` URLs the page makes
#: itself (the reference preview, and a video fetched with the key when no signed URL can be
#: had) and ``data:`` images (the empty favicon). No inline script or style at all, so an API
#: text that slipped into the markup could still not run; no framing (clickjacking), no
#: plugins, no ``<base>`` rewriting.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_PAGE_HEADERS = {
    **_COMMON_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # Rendered per app and per setting: never kept by a shared cache.
    "Cache-Control": "no-store",
}
#: A versioned asset URL (``?v=<etag>``) never changes content, so it may be kept for a year;
#: any other is revalidated against its ETag each time.
_VERSIONED = "public, max-age=31536000, immutable"
_UNVERSIONED = "no-cache"


@dataclass(frozen=True)
class _Asset:
    body: bytes
    etag: str


def page() -> Response:
    """``GET {prefix}/playground``: the page, with the API's base and the way to sign in."""
    state = proxy_state()
    _require_on(state)
    # The page's own script reads these from data attributes: no inline script is needed.
    html = _template().render(
        api_base=request.script_root + state.settings.url_prefix + "/v1",
        auth=_auth_mode(state),
        key_required=bool(state.settings.api_keys),
        script_url=_asset_url("playground.js"),
        style_url=_asset_url("playground.css"),
    )
    return Response(html, mimetype="text/html", headers=_PAGE_HEADERS)


def asset(name: str) -> Response:
    """``GET {prefix}/playground/assets/<name>``: one of :data:`ASSETS`, with an ETag."""
    _require_on(proxy_state())
    if name not in ASSETS:
        _unknown_route()
    found = _asset(name)
    response = Response(found.body, content_type=ASSETS[name], headers=_COMMON_HEADERS)
    response.set_etag(found.etag)
    versioned = request.args.get("v") == found.etag
    response.headers["Cache-Control"] = _VERSIONED if versioned else _UNVERSIONED
    response.make_conditional(request)  # 304 for a matching If-None-Match; in place
    return response


def _auth_mode(state: ProxyState) -> str:
    """``session`` when the host app's login decides who calls (its cookie goes with every
    same-origin fetch, so there is no key to type), else ``key``.

    Read from public facts: callers are identified but no caller keys are configured, so a
    callback must be. With both a callback and keys the callback wins in the authenticator;
    the page then shows a key field that is simply not needed, and still works.
    """
    identified = state.authenticator.identifies_callers
    return "session" if identified and not state.settings.api_keys else "key"


def _require_on(state: ProxyState) -> None:
    if not state.settings.playground:
        _unknown_route()


def _unknown_route() -> NoReturn:
    """The blueprint fallback's answer for a path no route takes."""
    raise NotFound(f"Unknown route: {request.method} {request.path}.", code="unknown_route")


def _asset_url(name: str) -> str:
    return url_for(".asset", name=name, v=_asset(name).etag)


@cache
def _asset(name: str) -> _Asset:
    """A packaged file, read once per process (the package does not change under it)."""
    body = resources.files(_PACKAGE).joinpath(_FOLDER, name).read_bytes()
    return _Asset(body, hashlib.sha256(body).hexdigest()[:24])


@cache
def _template() -> Template:
    # Our own environment, not the host app's: its globals, filters and context processors
    # have no business in this page. Autoescaping on: every value is escaped in the markup.
    environment = Environment(loader=PackageLoader(_PACKAGE, _FOLDER), autoescape=True)
    return environment.get_template(_TEMPLATE)
