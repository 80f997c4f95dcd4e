"""Answers going back: the upstream's status, headers and bytes, streamed unchanged.

Bodies are read from the raw socket without decoding (a gzip body stays gzip and its
``Content-Length`` stays true), in large chunks; hop-by-hop headers and the few the serving
side owns are dropped. An abandoned download closes its upstream connection at once.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from flask import Response

from .errors import UpstreamUnreachable

log = logging.getLogger("sora_proxy.upstream")

#: Read size for relayed bodies: large enough that a 1 GiB download is ~4k writes.
CHUNK_SIZE = 256 * 1024
#: RFC 9110 §7.6.1 hop-by-hop headers, plus the ones the serving side sets itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_SERVER_OWNED = frozenset({"date", "server", "set-cookie"})


def is_hop_by_hop(name: str, connection_header: str | None = None) -> bool:
    """True for hop-by-hop headers, including any the ``Connection`` header names."""
    lowered = name.lower()
    if lowered in _HOP_BY_HOP:
        return True
    if connection_header:
        return lowered in {token.strip().lower() for token in connection_header.split(",")}
    return False


def relayable_response_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Upstream response headers minus hop-by-hop and server-owned ones."""
    connection = headers.get("Connection")
    return [
        (name, value)
        for name, value in headers.items()
        if not is_hop_by_hop(name, connection) and name.lower() not in _SERVER_OWNED
    ]


class RelayedResponse(Response):
    """A response whose headers are exactly the upstream's: no default Content-Type added."""

    default_mimetype = None


class StreamedBody:
    """The upstream's body as a WSGI iterable, read raw (undecoded) in large chunks.

    ``close()`` closes the upstream response whether or not iteration ever started: the WSGI
    server calls it when the client goes away, and an abandoned download must not keep its
    upstream connection (and a 2 GB transfer) running.
    """

    def __init__(self, upstream: requests.Response, chunk_size: int = CHUNK_SIZE) -> None:
        self._upstream = upstream
        self._chunk_size = chunk_size
        self._callbacks: list[Callable[[int, str | None], None]] = []
        self.sent = 0
        #: ``upstream_broke_off`` once the upstream's body ended early, for the log line.
        self.error_code: str | None = None
        self._peeked: bytes | None = None

    def add_close_callback(self, callback: Callable[[int, str | None], None]) -> None:
        """Call ``callback(bytes_sent, error_code)`` once, when the body is closed."""
        self._callbacks.append(callback)

    def peek(self, size: int = 64) -> bytes:
        """Up to ``size`` of the body's first bytes, read now and still sent first."""
        if self._peeked is None:
            self._peeked = self._upstream.raw.read(size, decode_content=False) or b""
        return self._peeked

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self._peeked:
                self.sent += len(self._peeked)
                yield self._peeked
            for chunk in self._upstream.raw.stream(self._chunk_size, decode_content=False):
                self.sent += len(chunk)
                yield chunk
        except Exception as error:
            # Headers are already sent, so the status cannot change. The server must drop the
            # connection instead of ending a chunked body cleanly, so the caller sees a
            # truncated transfer rather than a silently short file. A connection reset is what
            # WSGI servers (gunicorn among them) take as "close this connection" without
            # printing a traceback for it; the log line and metrics carry the code instead.
            self.error_code = "upstream_broke_off"
            log.warning(
                "upstream body broke off after %d bytes (%s)", self.sent, type(error).__name__
            )
            raise ConnectionResetError(errno.ECONNRESET, "upstream broke off") from None
        finally:
            self._upstream.close()

    def close(self) -> None:
        """Release the upstream connection, then run the close callbacks (idempotent)."""
        self._upstream.close()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self.sent, self.error_code)


def answer_headers(upstream: requests.Response, method: str) -> list[tuple[str, str]]:
    """The headers to answer with: the upstream's, filtered.

    On a POST answered 5xx, ``x-should-retry: false`` is added unless the upstream said
    otherwise: the upstream may have started the generation before failing.
    """
    headers = relayable_response_headers(upstream.headers)
    if method == "POST" and upstream.status_code >= 500:
        if "x-should-retry" not in upstream.headers:
            headers.append(("x-should-retry", "false"))
    return headers


#: Largest JSON answer the proxy reads whole (to record ownership); a Video is ~1 KB.
MAX_ANSWER_BYTES = 1024 * 1024


def read_answer(
    upstream: requests.Response, *, method: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Read a small answer whole: status, headers to answer with, and the raw body bytes.

    Used where the proxy must see the answer (to record who owns what it created); the bytes
    go back unchanged. The request was sent with ``Accept-Encoding: identity`` for that.
    """
    # On a POST the upstream may have acted already: the SDK must not retry it.
    no_retry = {"x-should-retry": "false"} if method == "POST" else {}
    try:
        body = upstream.raw.read(MAX_ANSWER_BYTES + 1, decode_content=False)
    except Exception:
        log.warning("upstream answer broke off")
        raise UpstreamUnreachable(
            "The upstream's answer broke off.", code="upstream_broke_off", headers=no_retry
        ) from None
    finally:
        upstream.close()
    if len(body) > MAX_ANSWER_BYTES:
        raise UpstreamUnreachable("The upstream's answer was unexpectedly large.", headers=no_retry)
    return upstream.status_code, answer_headers(upstream, method), body


def small_answer(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    """An answer read whole (see :func:`read_answer`), sent back with exactly its headers."""
    return RelayedResponse(body, status=status, headers=headers)


def stream_back(upstream: requests.Response, *, method: str) -> Response:
    """Stream ``upstream``'s answer back unchanged and close it when done or abandoned."""
    headers = answer_headers(upstream, method)
    if method == "HEAD":
        upstream.close()
        return RelayedResponse([], status=upstream.status_code, headers=headers)
    return RelayedResponse(
        StreamedBody(upstream),
        status=upstream.status_code,
        headers=headers,
        direct_passthrough=True,
    )


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` value in seconds from ``now``: delay-seconds or an HTTP date;
    ``None`` when there is none or it cannot be read."""
    text = (value or "").strip()
    if text.isascii() and text.replace(".", "", 1).isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def parse_object(body: bytes) -> dict[str, Any] | None:
    """The JSON object in an answer, or ``None`` if it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
