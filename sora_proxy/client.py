"""Sending to upstreams: one pooled Session per worker, timeouts, failover before a byte is
sent, and failures mapped to 502/504.

What to send (URL, credentials, body form) is the upstream's dialect's to say
(:mod:`sora_proxy.dialects`); how answers go back is :mod:`sora_proxy.streaming`'s job.
"""

from __future__ import annotations

import datetime
import http.cookiejar
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from werkzeug.datastructures import Headers

from .catalog import Upstream
from .dialects import Body, EncodedBody
from .errors import ProxyError, UpstreamAuthFailed, UpstreamTimeout, UpstreamUnreachable

log = logging.getLogger("sora_proxy.upstream")

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


def forwarded_headers(
    incoming: Headers,
    *,
    read_whole: bool,
    idempotency_key: str | None = None,
    request_id: str | None = None,
) -> dict[str, str]:
    """The caller's end-to-end headers worth sending upstream, and the proxy's own.

    :param read_whole: the proxy reads the answer (to record what it created), so it must
        arrive as-is (identity), and the caller's own ``Idempotency-Key`` stays here: it is
        replaced by ``idempotency_key``, scoped so two callers' keys never collide upstream.
    """
    headers = {name: incoming[name] for name in FORWARDED_REQUEST_HEADERS if name in incoming}
    if read_whole:
        headers["Accept-Encoding"] = "identity"
        headers.pop("Idempotency-Key", None)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return headers


class UpstreamClient:
    """Sends requests to upstreams over a Session made once per worker process.

    gunicorn forks workers after the app is built (``preload_app``), and a pooled connection
    must never be shared across a fork, so the Session is made lazily per process id.

    :param pool_maxsize: pooled connections per upstream host (keep ≥ the worker's threads).
    :param pool_connections: how many hosts' pools are kept.
    """

    def __init__(self, *, pool_maxsize: int, pool_connections: int = 4) -> None:
        self.pool_maxsize = pool_maxsize
        self.pool_connections = pool_connections
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._session_pid = -1

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
            pool_connections=self.pool_connections, pool_maxsize=self.pool_maxsize, max_retries=0
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
        body: Body | None = None,
        caller_authorization: str | None = None,
    ) -> requests.Response:
        """Send one request to ``upstream`` and return the streaming response (its
        ``elapsed`` is the time to the response headers).

        The proxy never retries a request that may have reached the upstream: a POST may have
        started a paid generation. Failures become 502/504 errors which, on a POST, carry
        ``x-should-retry: false`` so SDK retries cannot duplicate it either.
        """
        try:
            response = self._request(
                upstream, method, path, headers, params, body, caller_authorization
            )
        except requests.RequestException as error:
            raise _as_proxy_error(error, upstream, method, path) from None
        return _refuse_key_rejection(upstream, response, method, path)

    def send_first(
        self,
        candidates: list[Upstream],
        method: str,
        path: str,
        body: EncodedBody | Callable[[Upstream], EncodedBody],
        *,
        headers: Mapping[str, str],
        caller_authorization: str | None = None,
    ) -> tuple[Upstream, requests.Response]:
        """Send to the first candidate that accepts the connection.

        :param body: the body, or how to encode it for each candidate (its dialect's form).

        The next candidate is tried only when the connection failed before any byte of the
        request was sent; once sent, a failure is final (no duplicate generations).
        """
        last: requests.RequestException | None = None
        for number, upstream in enumerate(candidates, start=1):
            encoded = body if isinstance(body, EncodedBody) else body(upstream)
            try:
                response = self._request(
                    upstream,
                    method,
                    encoded.path or path,
                    {**headers, "Content-Type": encoded.content_type},
                    None,
                    encoded.content,
                    caller_authorization,
                )
                return upstream, _refuse_key_rejection(upstream, response, method, path)
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
        body: Body | None,
        caller_authorization: str | None,
    ) -> requests.Response:
        outgoing = upstream.dialect.request(
            upstream,
            method,
            path,
            headers={"Accept-Encoding": "identity", **headers},
            params=params,
            body=body,
            caller_authorization=caller_authorization,
        )
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=outgoing.method,
            url=outgoing.url,
            params=dict(outgoing.params),
            data=outgoing.body,
            headers=dict(outgoing.headers),
        )
        # Straight to the pooled adapter: Session.request would merge environment settings,
        # session headers, cookies, auth and hooks the proxy never uses, and follow redirects
        # it must not follow; profiled, that merging was ~13% of a relayed GET's CPU.
        adapter = self.session.get_adapter(prepared.url or "")
        started = time.perf_counter()
        response = adapter.send(
            prepared, stream=True, timeout=(upstream.connect_timeout, upstream.read_timeout)
        )
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return response


def _refuse_key_rejection(
    upstream: Upstream, response: requests.Response, method: str, path: str
) -> requests.Response:
    """An upstream 401/403 to the proxy's own key becomes 502 ``upstream_auth_failed``.

    Relayed, it would tell the caller their key is wrong (it is not: they never sent it
    upstream), and OpenAI-style messages quote the key's last characters. In pass-through the
    key is the caller's own, and the upstream's answer is theirs to see.
    """
    if upstream.api_key is None or response.status_code not in (401, 403):
        return response
    response.close()
    log.error(
        "upstream %s refused the proxy's key (HTTP %d on %s %s): check its api_key",
        upstream.name,
        response.status_code,
        method,
        path,
    )
    return_headers = {"x-should-retry": "false"} if method == "POST" else {}
    raise UpstreamAuthFailed(
        "The proxy's credentials for the upstream service were refused; the operator has "
        "been told. Nothing was generated.",
        headers=return_headers,
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
