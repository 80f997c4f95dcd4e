"""Fetch a URL a client named, without letting the client aim the proxy at its own network.

This is the only module that opens a URL supplied from outside: a client's reference or result
URL, and a webhook endpoint (:func:`post_to_url`). Every hop (the first request and
each redirect) goes through the same steps: only ``http``/``https`` without user info; the host
is resolved once and *every* address it resolves to is checked with :func:`check_address`; the
connection is then made to a checked address (never to the name again, so a second DNS answer
cannot swap in another target) with the original host in ``Host`` and, for TLS, in SNI and the
certificate check. Bodies are capped while they are read and the whole fetch, DNS included,
runs against one deadline. Every refusal is a :class:`ReferenceFetchFailed` whose message says
why in the caller's terms and never carries a resolved address or a library's error text.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import certifi
from urllib3 import HTTPConnectionPool, HTTPHeaderDict, HTTPResponse, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from .errors import ReferenceFetchFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger("sora_proxy.fetch")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOSTNAME = re.compile(r"[a-z0-9_.-]+")
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: How much of a POST's answer is read (and thrown away) before the connection is closed.
_ANSWER_BYTES = 4096


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch.

    :param max_bytes: largest body accepted; enforced while reading, and a larger declared
        ``Content-Length`` is refused before reading.
    :param allow_private: also permit loopback and private targets (RFC 1918, CGNAT
        ``100.64.0.0/10``, IPv6 ULA ``fc00::/7``). Link-local, multicast, unspecified and
        reserved addresses stay blocked regardless.
    :param deadline: seconds for the whole fetch: DNS, connects, redirects and body.
    :param connect_timeout: upper bound for each TCP (and TLS) connect.
    :param max_redirects: redirects followed before the fetch is refused.
    """

    max_bytes: int
    allow_private: bool = False
    deadline: float = 20.0
    connect_timeout: float = 5.0
    max_redirects: int = 3


def check_address(address: IPAddress, allow_private: bool) -> str | None:
    """Return ``None`` if ``address`` may be connected to, else a short caller-safe reason.

    The reason completes "the host resolves to ...", e.g. ``"a loopback address"``. IPv6 forms
    that carry an IPv4 address (mapped, compatible, NAT64) are judged by that IPv4 address;
    6to4 and Teredo addresses are refused if an embedded IPv4 address is.
    """
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return None if allow_private else "a loopback address"
    if isinstance(address, ipaddress.IPv6Address):
        translated = _translated_ipv4(address)
        if translated is not None:
            return check_address(translated, allow_private)
        tunnelled = [address.sixtofour] if address.sixtofour else list(address.teredo or ())
        for embedded in tunnelled:
            reason = check_address(embedded, allow_private)
            if reason is not None:
                return reason
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if any(address in net for net in _PRIVATE_NETWORKS if net.version == address.version):
        return None if allow_private else "a private address"
    # Python counts deprecated site-local and unallocated IPv6 space as global; neither routes.
    v6_unrouted = isinstance(address, ipaddress.IPv6Address) and (
        address.is_site_local or address.is_reserved
    )
    if v6_unrouted or not address.is_global:
        return "a reserved address"
    return None


def _translated_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, IPv4-compatible or NAT64 address stands for."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == 0 or address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


class FetchedStream:
    """A successful (2xx) response whose body has not been read yet.

    :attr content_type: the declared ``Content-Type``, informational only.
    :attr content_length: the body's length from ``Content-Length``, when it is a number and
        the body is not content-encoded (so it is the length ``iter_chunks`` will yield).
    """

    def __init__(
        self, response: HTTPResponse, policy: FetchPolicy, deadline_at: float, param: str
    ) -> None:
        self._response = response
        self._policy = policy
        self._deadline_at = deadline_at
        self._param = param
        self.content_type: str | None = response.headers.get("Content-Type")
        self.content_length = _declared_length(response)
        self.status = response.status
        #: The response's headers, as the fetched host sent them.
        self.headers: dict[str, str] = dict(response.headers.items())
        #: The URL that answered (after redirects), and the checked address it answered from.
        self.url = ""
        self.address = ""

    def iter_chunks(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """Yield the body, refusing once it exceeds the byte cap or the deadline passes."""
        total = 0
        while True:
            remaining = _remaining(self._deadline_at, self._param)
            connection = self._response.connection
            if connection is not None and connection.sock is not None:
                # A slow trickle never trips a per-read timeout, so each read gets what is left.
                connection.sock.settimeout(remaining)
            try:
                chunk = self._response.read1(chunk_size)
            except (ReadTimeoutError, TimeoutError):
                raise _failed(self._param, "timed out") from None
            except (HTTPError, OSError):
                if time.monotonic() >= self._deadline_at:  # the deadline's cutoff shut it
                    raise _failed(self._param, "timed out") from None
                raise _failed(self._param, "the connection broke while reading") from None
            if not chunk:
                return
            total += len(chunk)
            if total > self._policy.max_bytes:
                raise _too_large(self._param, self._policy.max_bytes)
            yield chunk


@contextmanager
def open_url(
    url: str, policy: FetchPolicy, *, param: str, headers: Mapping[str, str] | None = None
) -> Iterator[FetchedStream]:
    """Open ``url`` under ``policy``, following redirects; yield the final 2xx response.

    :param headers: end-to-end request headers to send (``Range``); never credentials.

    The connection is closed when the block exits. Every refusal raises
    :class:`ReferenceFetchFailed` naming ``param``.
    """
    deadline_at = time.monotonic() + policy.deadline
    # The deadline holds while the status line and headers come in, too (a body's chunks
    # are checked one by one, but headers arrive in a single read a trickle can stretch).
    with _Cutoff(deadline_at) as cutoff:
        yield from _follow(url, policy, deadline_at, param, headers, cutoff)


def _follow(
    url: str,
    policy: FetchPolicy,
    deadline_at: float,
    param: str,
    headers: Mapping[str, str] | None,
    cutoff: _Cutoff,
) -> Iterator[FetchedStream]:
    """:func:`open_url`'s hops: redirects followed, the final 2xx yielded."""
    for hop in range(max(policy.max_redirects, 0) + 1):
        try:
            pool, response = _request(url, policy, deadline_at, param, headers, cutoff=cutoff)
        except ReferenceFetchFailed as error:
            if cutoff.fired and error.reason != "refused":
                raise _failed(param, "timed out") from None
            raise
        try:
            if response.status in REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise _failed(param, "it redirected without a Location")
                if hop >= policy.max_redirects:
                    raise _failed(param, f"too many redirects (more than {policy.max_redirects})")
                url = urljoin(url, location.strip())
                continue
            if not 200 <= response.status < 300:
                raise _failed(param, f"it returned HTTP {response.status}")
            stream = FetchedStream(response, policy, deadline_at, param)
            stream.url, stream.address = url, str(pool.host).strip("[]")
            if stream.content_length is not None and stream.content_length > policy.max_bytes:
                raise _too_large(param, policy.max_bytes)
            yield stream
            return
        finally:
            response.close()
            pool.close()
    raise AssertionError("unreachable: the last hop either returns or raises")


def fetch_bytes(url: str, policy: FetchPolicy, *, param: str) -> bytes:
    """Fetch ``url`` under ``policy`` and return its whole (capped) body."""
    with open_url(url, policy, param=param) as stream:
        return b"".join(stream.iter_chunks())


def post_to_url(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    allow_private: bool,
    param: str,
    user_agent: str = "sora-proxy",
) -> tuple[int, Mapping[str, str]]:
    """POST ``body`` to ``url`` once under the same rules as a fetch; return the answer's
    status and (case-insensitive) headers, whatever the status.

    Redirects are not followed: a 3xx is returned like any other status. ``timeout`` bounds
    the whole attempt, DNS, connect, sending and the answer's head, even from a server that
    sends it a byte at a time. At most 4 KiB of the answer's body is read, then dropped.

    :param headers: end-to-end request headers (``Content-Type``, signatures).
    :raises ReferenceFetchFailed: naming ``param``; ``reason`` is ``refused`` when the URL may
        never be posted to (scheme, user info, address), else ``failed`` (no answer in time).
    """
    policy = FetchPolicy(
        max_bytes=_ANSWER_BYTES,
        allow_private=allow_private,
        deadline=timeout,
        connect_timeout=timeout,
        max_redirects=0,
    )
    deadline_at = time.monotonic() + timeout
    with _Cutoff(deadline_at) as cutoff:
        try:
            pool, response = _request(
                url, policy, deadline_at, param, headers,
                method="POST", body=body, user_agent=user_agent, cutoff=cutoff,
            )  # fmt: skip
        except ReferenceFetchFailed as error:
            if cutoff.fired and error.reason != "refused":
                raise _failed(param, "timed out") from None
            raise
        try:
            # The status is the answer; a body cut short or late changes nothing.
            answer = FetchedStream(response, policy, deadline_at, param)
            with suppress(ReferenceFetchFailed):
                next(answer.iter_chunks(_ANSWER_BYTES), b"")
        finally:
            response.close()
            pool.close()
    return response.status, HTTPHeaderDict(response.headers)


def _request(
    url: str,
    policy: FetchPolicy,
    deadline_at: float,
    param: str,
    extra_headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    user_agent: str = "sora-proxy",
    cutoff: _Cutoff | None = None,
) -> tuple[HTTPConnectionPool, HTTPResponse]:
    """Check ``url``, resolve and check its host, and send the request to a checked address."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise _refused(param, "it is not a valid URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refused(param, "it is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refused(param, "only http and https URLs are accepted")
    if "@" in parts.netloc:
        raise _refused(param, "URLs with a user name or password are not accepted")
    host = _ascii_host(parts.hostname, param)
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    addresses = _resolve(host, port, deadline_at, param)
    for address in addresses:
        reason = check_address(address, policy.allow_private)
        if reason is not None:
            raise _refused(param, f"the host resolves to {reason}")

    host_header = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        host_header = f"{host_header}:{port}"
    headers = {**(extra_headers or {}), "Host": host_header, "User-Agent": user_agent}
    headers.setdefault("Accept", "*/*")
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    if parts.query:
        target += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=~-._")
    log.debug("%s %s://%s for %s", method, scheme, host_header, param)

    timed_out = False
    for address in addresses:
        remaining = _remaining(deadline_at, param)
        timeout = Timeout(connect=min(policy.connect_timeout, remaining), read=remaining)
        pool = _pool(scheme, address, port, host, timeout, cutoff)
        try:
            response = pool.urlopen(
                method,
                target,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=True,
                assert_same_host=False,
            )
        except (HTTPError, OSError) as exc:
            pool.close()
            if isinstance(exc, ConnectTimeoutError):
                # NewConnectionError is a ConnectTimeoutError too: refused, try the next address.
                timed_out = timed_out or not isinstance(exc, NewConnectionError)
                continue
            raise _failed(param, _describe(exc)) from None
        log.debug("%s://%s answered %d", scheme, host_header, response.status)
        assert isinstance(response, HTTPResponse)  # preload_content=False: never a stub
        return pool, response
    raise _failed(param, "timed out" if timed_out else "connection failed")


def _pool(
    scheme: str,
    address: IPAddress,
    port: int,
    host: str,
    timeout: Timeout,
    cutoff: _Cutoff | None = None,
) -> HTTPConnectionPool:
    watched: dict[str, Any] = {} if cutoff is None else {"cutoff": cutoff}
    pool: HTTPConnectionPool
    if scheme == "http":
        pool = HTTPConnectionPool(
            str(address), port, timeout=timeout, maxsize=1, retries=False, **watched
        )
    else:
        pool = HTTPSConnectionPool(
            str(address), port, timeout=timeout, maxsize=1, retries=False,
            server_hostname=host, assert_hostname=host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), **watched,
        )  # fmt: skip
    if cutoff is not None:
        pool.ConnectionCls = _WatchedHTTP if scheme == "http" else _WatchedHTTPS
    return pool


class _Cutoff:
    """Shuts the sockets of one request's connections when its deadline passes.

    A socket timeout bounds each read, not their sum: a server sending its status line a byte
    at a time never trips it. Shutting the socket from a timer ends the read wherever it is.
    """

    def __init__(self, deadline_at: float) -> None:
        self.fired = False
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()
        delay = max(deadline_at - time.monotonic(), 0.0)
        self._timer = threading.Timer(delay, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Cutoff:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)

    def _cut(self) -> None:
        with self._lock:
            self.fired = True
            for connection in self._connections:
                sock = connection.sock
                if sock is not None:
                    # The plain socket's shutdown: an SSLSocket's own would also drop its TLS
                    # state under the reading thread; a closed socket just raises here.
                    with suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedHTTP(HTTPConnection):
    def __init__(self, *args: Any, cutoff: _Cutoff, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cutoff.watch(self)


class _WatchedHTTPS(HTTPSConnection):
    def __init__(self, *args: Any, cutoff: _Cutoff, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cutoff.watch(self)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ReadTimeoutError):
        return "timed out"
    if isinstance(exc, SSLError):
        return "the TLS connection failed"
    return "connection failed"


def _ascii_host(hostname: str | None, param: str) -> str:
    """The host as sent on the wire: an IP literal or an IDNA-encoded, lower-case name."""
    if not hostname:
        raise _refused(param, "it is not a valid URL")
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _refused(param, "it is not a valid URL") from None
    if not _HOSTNAME.fullmatch(host):
        raise _refused(param, "it is not a valid URL")
    return host


def _resolve(host: str, port: int, deadline_at: float, param: str) -> list[IPAddress]:
    """Every distinct address ``host`` resolves to, within the deadline."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    # getaddrinfo has no timeout of its own; a resolver that hangs is left behind in its thread.
    result: list[list[IPAddress]] = []

    def work() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        found = [
            ipaddress.ip_address(info[4][0])
            for info in infos
            if info[0] in (socket.AF_INET, socket.AF_INET6)
        ]
        result.append(list(dict.fromkeys(found)))

    resolver = threading.Thread(target=work, name="sora-proxy-resolve", daemon=True)
    resolver.start()
    resolver.join(_remaining(deadline_at, param))
    if resolver.is_alive():
        raise _failed(param, "timed out")
    if not result or not result[0]:
        raise _failed(param, "the host name did not resolve")
    return result[0]


def _declared_length(response: HTTPResponse) -> int | None:
    # With a Content-Encoding the declared length is of the encoded bytes, not of what
    # iter_chunks yields (decoded), so it says nothing about the body's real size.
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _remaining(deadline_at: float, param: str) -> float:
    remaining = deadline_at - time.monotonic()
    if remaining <= 0:
        raise _failed(param, "timed out")
    return remaining


def _refused(param: str, why: str) -> ReferenceFetchFailed:
    return ReferenceFetchFailed(
        f"{param} URL is not allowed: {why}.", param=param, reason="refused"
    )


def _failed(param: str, why: str, reason: str = "failed") -> ReferenceFetchFailed:
    return ReferenceFetchFailed(
        f"{param} URL could not be fetched: {why}.", param=param, reason=reason
    )


def _too_large(param: str, max_bytes: int) -> ReferenceFetchFailed:
    return _failed(param, f"the content is larger than the {max_bytes}-byte limit", "too_large")
