"""The WSGI layer in front of the simulator app: record every request, then inject failures.

The body is read straight off ``wsgi.input`` before Flask parses anything, so the record holds
the bytes exactly as they came off the wire (after the server undid any chunked transfer
coding). The app then gets the same bytes back from a rewound spool file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs

from werkzeug.datastructures import EnvironHeaders
from werkzeug.formparser import parse_form_data
from werkzeug.http import parse_options_header

from .state import MAX_RECORDED_BODY, FailureSpec, RecordedFile, RecordedRequest, SimulatorState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_CHUNK = 64 * 1024
_SPOOL_IN_MEMORY = 8 * 1024 * 1024


class RecordingMiddleware:
    """Wrap ``app`` so each request is recorded into ``state`` and may hit an armed failure.

    :param app: the simulator's own WSGI app (``flask_app.wsgi_app``).
    :param state: where records go and where failures are armed.
    """

    def __init__(self, app: WSGIApplication, state: SimulatorState) -> None:
        self.app = app
        self.state = state

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        spool, record = _capture(environ)
        self.state.record(record)
        environ["wsgi.input"] = spool
        environ["CONTENT_LENGTH"] = str(record.body_length)
        # The spool ends where the body ends. Saying so keeps a chunked body readable: with
        # Transfer-Encoding: chunked werkzeug ignores Content-Length and trusts only this flag.
        environ["wsgi.input_terminated"] = True

        failure = self.state.take_failure(record.method, record.path)
        if failure is None:
            return self.app(environ, start_response)
        if failure.delay > 0:
            time.sleep(failure.delay)
        if failure.reset:
            _drop_connection(environ)
            raise ConnectionAbortedError("simulated connection reset")
        if failure.status is not None:
            return _failure_response(failure, start_response)
        body = self.app(environ, start_response)
        if failure.truncate_after is not None:
            return _truncated(body, failure.truncate_after, environ)
        return body


def _capture(environ: WSGIEnvironment) -> tuple[IO[bytes], RecordedRequest]:
    """Read the whole body into a spool file and build the record of this request."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        remaining: int | None = None
    else:
        try:
            remaining = max(int(environ.get("CONTENT_LENGTH") or 0), 0)
        except ValueError:
            remaining = 0

    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    head = bytearray()
    digest = hashlib.sha256()
    length = 0
    while remaining is None or remaining > 0:
        chunk = stream.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
        if not chunk:
            break
        spool.write(chunk)
        digest.update(chunk)
        length += len(chunk)
        if remaining is not None:
            remaining -= len(chunk)
        if len(head) < MAX_RECORDED_BODY:
            head += chunk[: MAX_RECORDED_BODY - len(head)]
    spool.seek(0)

    record = RecordedRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
        headers=dict(EnvironHeaders(environ)),
        body=bytes(head),
        body_length=length,
        body_sha256=digest.hexdigest(),
        body_truncated=length > MAX_RECORDED_BODY,
    )
    _parse_into(record, environ, spool, length)
    spool.seek(0)
    return spool, record


def _parse_into(
    record: RecordedRequest, environ: WSGIEnvironment, spool: IO[bytes], length: int
) -> None:
    """Fill ``record.form``, ``files`` or ``json`` from the spooled body (left empty if bad)."""
    mimetype, _ = parse_options_header(environ.get("CONTENT_TYPE", ""))
    if mimetype == "application/json":
        try:
            record.json = json.loads(record.body)
        except ValueError:
            record.json = None
        return
    if mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return
    copy = dict(environ)
    copy["wsgi.input_terminated"] = True
    copy["wsgi.input"] = spool
    copy["CONTENT_LENGTH"] = str(length)
    try:
        _, form, files = parse_form_data(copy, silent=False)
    except Exception:
        return
    record.form = form.to_dict(flat=False)
    record.files = {
        name: [RecordedFile(part.filename, part.content_type, part.read()) for part in parts]
        for name, parts in files.lists()
    }


def _failure_response(failure: FailureSpec, start_response: StartResponse) -> list[bytes]:
    """Answer an armed status failure with an OpenAI error envelope."""
    status = failure.status or 500
    error = {
        "message": f"Simulated failure (HTTP {status}).",
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "param": None,
        "code": "simulated_failure",
    }
    payload = json.dumps({"error": error}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
        ("x-request-id", f"req_{secrets.token_hex(16)}"),
    ]
    headers += list(failure.headers.items())
    start_response(f"{status} SIMULATED", headers)
    return [payload]


def _truncated(body: Iterable[bytes], limit: int, environ: WSGIEnvironment) -> Iterator[bytes]:
    """Pass through the first ``limit`` body bytes, then drop the connection."""
    sent = 0
    try:
        for chunk in body:
            if sent + len(chunk) >= limit:
                yield chunk[: limit - sent]
                break
            sent += len(chunk)
            yield chunk
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    _drop_connection(environ)
    raise ConnectionAbortedError("simulated connection reset mid-body")


def _drop_connection(environ: WSGIEnvironment) -> None:
    """Shut the client socket down (werkzeug's server exposes it); no-op elsewhere."""
    sock: Any = environ.get("werkzeug.socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed by the client: nothing to drop
        sock.shutdown(socket.SHUT_RDWR)
