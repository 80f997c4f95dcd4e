"""Talking to the upstream: one pooled Session per worker, timeouts, error mapping, relaying.

The upstream's answer goes back to the caller as it came: status, body bytes read from the raw
stream without decoding (so a gzip body stays gzip and its ``Content-Length`` stays true), and
every header but the hop-by-hop ones and the few the serving side owns.
"""

from __future__ import annotations

import http.cookiejar
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import requests
from flask import Response
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from .errors import ProxyError, UpstreamTimeout, UpstreamUnreachable
from .settings import Settings
from .upstreams import Catalog, Upstream

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
#: End-to-end request headers worth passing upstream; everything else (cookies, host, the
#: caller's own credentials in keyed mode) stays here.
FORWARDED_REQUEST_HEADERS = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "User-Agent",
    "X-Request-ID",
    "Idempotency-Key",
    "OpenAI-Beta",
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Modified-Since",
)


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


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuse every cookie: one Session serves many callers, and must not carry one's to another."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def never_sent(error: requests.RequestException) -> bool:
    """True when the request cannot have reached the upstream: the connection itself failed
    (refused, name not resolved, connect timeout, TLS handshake), so not one byte of it was
    sent."""
    if isinstance(error, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(
        reason, NewConnectionError | ConnectTimeoutError
    )


class UpstreamClient:
    """Sends requests to the catalog's upstreams over a Session made once per worker process.

    gunicorn forks workers after the app is built (``preload_app``), and a pooled connection
    must never be shared across a fork, so the Session is made lazily per process id.
    """

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._session_pid = -1

    def upstreams(self) -> dict[str, Upstream]:
        """Every configured upstream by name."""
        return self.catalog.upstreams

    @property
    def session(self) -> requests.Session:
        """This process's Session."""
        pid = os.getpid()
        if self._session is None or self._session_pid != pid:
            with self._lock:
                if self._session is None or self._session_pid != pid:
                    self._session = self._make_session()
                    self._session_pid = pid
        return self._session

    def _make_session(self) -> requests.Session:
        session = requests.Session()
        # Proxies and CA bundles from the environment would make the route to the upstream
        # differ between make serve, tests and production; configure them explicitly instead.
        session.trust_env = False
        session.cookies.set_policy(_NoCookies())
        session.headers.clear()
        adapter = HTTPAdapter(
            pool_connections=max(4, len(self.catalog.upstreams)),
            pool_maxsize=self.settings.pool_maxsize,
            max_retries=0,
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def send(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        caller_authorization: str | None = None,
    ) -> requests.Response:
        """Send one request to ``upstream`` and return the streaming response.

        The proxy never retries a request that may have reached the upstream: a POST may have
        started a paid generation. Failures become 502/504 errors which, on a POST, carry
        ``x-should-retry: false`` so SDK retries cannot duplicate it either.
        """
        try:
            return self._request(upstream, method, path, headers, params, body,
                                 caller_authorization)
        except requests.RequestException as error:
            raise _as_proxy_error(error, upstream, method, path) from None

    def send_first(
        self,
        candidates: list[Upstream],
        method: str,
        path: str,
        build: Callable[[Upstream], tuple[bytes, str]],
        *,
        headers: Mapping[str, str],
        caller_authorization: str | None = None,
    ) -> tuple[Upstream, requests.Response]:
        """Send to the first candidate that accepts the connection.

        The next candidate is tried only when the connection failed before any byte of the
        request was sent; once sent, a failure is final (no duplicate generations).
        """
        last: requests.RequestException | None = None
        for number, upstream in enumerate(candidates, start=1):
            body, content_type = build(upstream)
            try:
                response = self._request(
                    upstream, method, path, {**headers, "Content-Type": content_type}, None,
                    body, caller_authorization,
                )
                return upstream, response
            except requests.RequestException as error:
                if not never_sent(error):
                    raise _as_proxy_error(error, upstream, method, path) from None
                last = error
                if number < len(candidates):
                    log.warning("upstream %s: connection failed; trying the next", upstream.name)
        assert last is not None and candidates
        raise _as_proxy_error(last, candidates[-1], method, path) from None

    def _request(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | Iterable[bytes] | None,
        caller_authorization: str | None,
    ) -> requests.Response:
        outgoing = dict(headers)
        outgoing.setdefault("Accept-Encoding", "identity")
        outgoing.update(upstream.auth_headers(caller_authorization))
        return self.session.request(
            method,
            upstream.url(path),
            params={**upstream.query, **(params or {})},
            data=body,
            headers=outgoing,
            stream=True,
            allow_redirects=False,
            timeout=(upstream.connect_timeout, upstream.read_timeout),
        )


def _as_proxy_error(
    error: requests.RequestException, upstream: Upstream, method: str, path: str
) -> ProxyError:
    no_retry = {"x-should-retry": "false"} if method == "POST" else {}
    if isinstance(error, requests.exceptions.ConnectTimeout):
        log.warning("upstream %s connect timeout: %s %s", upstream.name, method, path)
        return UpstreamTimeout(
            "The upstream service did not accept the connection in time.",
            code="upstream_connect_timeout",
            headers=no_retry,
        )
    if isinstance(error, requests.exceptions.ReadTimeout):
        log.warning("upstream %s read timeout: %s %s", upstream.name, method, path)
        return UpstreamTimeout("The upstream service did not answer in time.", headers=no_retry)
    log.warning(
        "upstream %s unreachable: %s %s (%s)", upstream.name, method, path, type(error).__name__
    )
    return UpstreamUnreachable("The upstream service could not be reached.", headers=no_retry)


class RelayedResponse(Response):
    """A response whose headers are exactly the upstream's: no default Content-Type added."""

    default_mimetype = None


class UpstreamBody:
    """The upstream's body as a WSGI iterable, read raw (undecoded) in large chunks.

    ``close()`` closes the upstream response whether or not iteration ever started: the WSGI
    server calls it when the client goes away, and an abandoned download must not keep its
    upstream connection (and a 2 GB transfer) running.
    """

    def __init__(self, upstream: requests.Response, chunk_size: int = CHUNK_SIZE) -> None:
        self._upstream = upstream
        self._chunk_size = chunk_size
        self._callbacks: list[Callable[[int], None]] = []
        self.sent = 0

    def add_close_callback(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(bytes_sent)`` once, when the body is closed."""
        self._callbacks.append(callback)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._upstream.raw.stream(self._chunk_size, decode_content=False):
                self.sent += len(chunk)
                yield chunk
        except Exception:
            # Headers are already sent, so the status cannot change. Re-raising makes the
            # server drop the connection instead of ending a chunked body cleanly, so the
            # caller sees a truncated transfer rather than a silently short file.
            log.warning("upstream body broke off mid-stream")
            raise
        finally:
            self._upstream.close()

    def close(self) -> None:
        """Release the upstream connection, then run the close callbacks (idempotent)."""
        self._upstream.close()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self.sent)


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


def read_answer(upstream: requests.Response, *, method: str) -> tuple[int, list, bytes]:
    """Read a small answer whole: status, headers to answer with, and the raw body bytes.

    Used where the proxy must see the answer (to record who owns what it created); the bytes
    go back unchanged. The request was sent with ``Accept-Encoding: identity`` for that.
    """
    try:
        body = upstream.raw.read(MAX_ANSWER_BYTES + 1, decode_content=False)
    except Exception:
        log.warning("upstream answer broke off")
        raise UpstreamUnreachable("The upstream's answer broke off.") from None
    finally:
        upstream.close()
    if len(body) > MAX_ANSWER_BYTES:
        raise UpstreamUnreachable("The upstream's answer was unexpectedly large.")
    return upstream.status_code, answer_headers(upstream, method), body


def relay_response(upstream: requests.Response, *, method: str) -> Response:
    """Stream ``upstream`` back unchanged and close it when done or abandoned."""
    headers = answer_headers(upstream, method)
    if method == "HEAD":
        upstream.close()
        return RelayedResponse([], status=upstream.status_code, headers=headers)
    return RelayedResponse(
        UpstreamBody(upstream),
        status=upstream.status_code,
        headers=headers,
        direct_passthrough=True,
    )
