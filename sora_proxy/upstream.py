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
from dataclasses import dataclass
from typing import Any

import requests
from flask import Response
from requests.adapters import HTTPAdapter

from .errors import UpstreamTimeout, UpstreamUnreachable
from .settings import Settings

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


@dataclass(frozen=True)
class Upstream:
    """Where requests go and how they authenticate."""

    base_url: str
    api_key: str | None = None

    def url(self, path: str) -> str:
        """``base_url`` joined with a path such as ``/videos/abc``."""
        return self.base_url + path


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuse every cookie: one Session serves many callers, and must not carry one's to another."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class UpstreamClient:
    """Sends requests upstream over a Session made once per worker process.

    gunicorn forks workers after the app is built (``preload_app``), and a pooled connection
    must never be shared across a fork, so the Session is made lazily per process id.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.upstream = Upstream(settings.upstream_url, settings.upstream_api_key)
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._session_pid = -1

    def upstreams(self) -> dict[str, Upstream]:
        """Every configured upstream by name."""
        return {"default": self.upstream}

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
            pool_connections=4, pool_maxsize=self.settings.pool_maxsize, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        caller_authorization: str | None = None,
    ) -> requests.Response:
        """Send one request upstream and return the streaming response.

        The proxy never retries: a POST that reached the upstream may have started a paid
        generation. Failures become 502/504 errors which, on a POST, carry
        ``x-should-retry: false`` so SDK retries cannot duplicate it either.
        """
        outgoing = dict(headers)
        outgoing.setdefault("Accept-Encoding", "identity")
        if self.upstream.api_key:
            outgoing["Authorization"] = f"Bearer {self.upstream.api_key}"
        elif caller_authorization:
            outgoing["Authorization"] = caller_authorization
        no_retry = {"x-should-retry": "false"} if method == "POST" else {}
        try:
            return self.session.request(
                method,
                self.upstream.url(path),
                params=params,
                data=body,
                headers=outgoing,
                stream=True,
                allow_redirects=False,
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
            )
        except requests.exceptions.ConnectTimeout:
            log.warning("upstream connect timeout: %s %s", method, path)
            raise UpstreamTimeout(
                "The upstream service did not accept the connection in time.",
                code="upstream_connect_timeout",
                headers=no_retry,
            ) from None
        except requests.exceptions.ReadTimeout:
            log.warning("upstream read timeout: %s %s", method, path)
            raise UpstreamTimeout(
                "The upstream service did not answer in time.", headers=no_retry
            ) from None
        except requests.exceptions.RequestException as error:
            log.warning("upstream unreachable: %s %s (%s)", method, path, type(error).__name__)
            raise UpstreamUnreachable(
                "The upstream service could not be reached.", headers=no_retry
            ) from None


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
