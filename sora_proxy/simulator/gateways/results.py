"""A result host: where gateways' signed URLs (new-api's ``metadata.url``, a reseller's
``unsigned_urls``) point, on a port of its own, like a provider's storage bucket.

``GET``/``HEAD /<token>/<video_id>.mp4`` serves the sample MP4 with one ``Range`` honoured, for
any video id: the token (``<expires unix>-<32 hex>``) is what authorises, and past its expiry
the answer is 403. It needs no key and checks none; every request it receives is recorded with
its headers in ``app.extensions["sora_simulator"]``, so a test can prove that no gateway key
ever reached it::

    with SimulatorServer(app=create_result_host_app()) as host:
        gateway = create_gateway_app("reseller", result_base_url=host.base_url[:-3])
        ...
        assert all(r.header("Authorization") is None for r in host.state.requests)
"""

from __future__ import annotations

import re
import time

from flask import Blueprint, Flask, Response, request

from .. import media
from ..content import byte_range
from ..recording import RecordingMiddleware
from ..state import SimulatorState
from ..validation import SimError
from .common import GatewayError, render_gateway_error

bp = Blueprint("gateway_results", __name__)

_TOKEN = re.compile(r"(\d{1,12})-[0-9a-f]{32}")


def create_result_host_app() -> Flask:
    """Build the result host app (run it with ``SimulatorServer(app=...)``)."""
    app = Flask(__name__)
    state = SimulatorState()
    app.extensions["sora_simulator"] = state
    app.register_blueprint(bp)
    app.register_error_handler(GatewayError, render_gateway_error)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, _not_found)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, state)  # type: ignore[method-assign]
    return app


def _not_found(_error: Exception) -> Response:
    return Response("NoSuchKey", status=404, mimetype="text/plain")


@bp.route("/<token>/<name>", methods=["GET", "HEAD"])
def serve_result(token: str, name: str) -> Response:
    """The sample MP4 for a token that is well formed and not yet expired."""
    match = _TOKEN.fullmatch(token)
    if match is None or not name.endswith(".mp4"):
        raise GatewayError(403, "AccessDenied: invalid signature")
    if int(match.group(1)) < time.time():
        raise GatewayError(403, "AccessDenied: Request has expired")
    data, content_type, etag = media.load("video")
    try:
        span = byte_range(request.headers.get("Range"), len(data))
    except SimError as exc:
        raise GatewayError(416, "InvalidRange", headers=exc.headers) from exc
    start, end = span or (0, len(data))
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{etag}"'}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
    body = b"" if request.method == "HEAD" else data[start:end]
    response = Response(body, status=206 if span else 200, mimetype=content_type, headers=headers)
    response.headers["Content-Length"] = str(end - start)
    return response
