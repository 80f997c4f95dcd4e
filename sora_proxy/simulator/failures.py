"""Carrying out an armed :class:`~sora_proxy.simulator.records.FailureSpec` at the WSGI layer."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .records import FailureSpec

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def apply_failure(
    failure: FailureSpec,
    app: WSGIApplication,
    environ: WSGIEnvironment,
    start_response: StartResponse,
) -> Iterable[bytes]:
    """Answer this request the way ``failure`` says (see :class:`FailureSpec`)."""
    if failure.delay > 0:
        time.sleep(failure.delay)
    if failure.reset:
        drop_connection(environ)
        raise ConnectionAbortedError("simulated connection reset")
    if failure.status is not None:
        return _failure_response(failure, start_response)
    body = app(environ, start_response)
    if failure.chunk_delay > 0:
        body = _slowed(body, failure.chunk_delay)
    if failure.truncate_after is not None:
        body = _truncated(body, failure.truncate_after, environ)
    return body


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


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _slowed(body: Iterable[bytes], delay: float) -> Iterator[bytes]:
    """Pass the body through, sleeping ``delay`` seconds before every chunk after the first."""
    try:
        for index, chunk in enumerate(body):
            if index:
                time.sleep(delay)
            yield chunk
    finally:
        _close(body)


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
        _close(body)
    drop_connection(environ)
    raise ConnectionAbortedError("simulated connection reset mid-body")


def drop_connection(environ: WSGIEnvironment) -> None:
    """Shut the client socket down (werkzeug's server exposes it); no-op elsewhere."""
    sock: Any = environ.get("werkzeug.socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed by the client: nothing to drop
        sock.shutdown(socket.SHUT_RDWR)
