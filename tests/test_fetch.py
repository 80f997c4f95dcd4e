"""fetch.py against real sockets on loopback only.

Every test here may talk to 127.0.0.1 / ::1 and nothing else: an autouse guard wraps
``socket.socket.connect`` and fails the test before any other address is dialled. Addresses
that must be blocked are checked by ``check_address`` directly, without connecting.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sora_proxy.errors import ReferenceFetchFailed
from sora_proxy.fetch import FetchPolicy, check_address, fetch_bytes, open_url

PARAM = "input_reference"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
LOCAL = FetchPolicy(max_bytes=1 << 20, allow_private=True, deadline=5.0, connect_timeout=2.0)
PUBLIC_ONLY = FetchPolicy(max_bytes=1 << 20, deadline=5.0, connect_timeout=2.0)


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback_available()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Fail (before dialling) any connect to an address that is not loopback."""
    violations: list[object] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if not isinstance(host, str) or not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            violations.append(address)
            raise AssertionError(f"test tried to connect to {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield violations
    assert violations == []


def _refusal(url: str, policy: FetchPolicy) -> ReferenceFetchFailed:
    with pytest.raises(ReferenceFetchFailed) as caught:
        fetch_bytes(url, policy, param=PARAM)
    error = caught.value
    assert error.param == PARAM
    assert error.status == 400
    assert error.message.startswith(f"{PARAM} URL ")
    for leak in ("127.0.0.1", "::1", "Errno", "urllib3", "Traceback", "HTTPConnection"):
        assert leak not in error.message
    return error


# --- check_address, no connections ------------------------------------------------------

# address, blocked with allow_private=False, blocked with allow_private=True
ADDRESSES = [
    ("127.0.0.1", True, False),
    ("10.0.0.1", True, False),
    ("172.16.5.4", True, False),
    ("192.168.1.1", True, False),
    ("100.64.0.1", True, False),
    ("169.254.169.254", True, True),
    ("169.254.1.1", True, True),
    ("224.0.0.1", True, True),
    ("239.255.255.250", True, True),
    ("0.0.0.0", True, True),
    ("255.255.255.255", True, True),
    ("198.18.0.1", True, True),
    ("192.0.2.1", True, True),
    ("240.0.0.1", True, True),
    ("::1", True, False),
    ("::", True, True),
    ("fe80::1", True, True),
    ("fec0::1", True, True),
    ("fc00::1", True, False),
    ("fd12::1", True, False),
    ("ff02::1", True, True),
    ("2001:db8::1", True, True),
    ("::ffff:127.0.0.1", True, False),
    ("::ffff:169.254.169.254", True, True),
    ("::ffff:10.0.0.1", True, False),
    ("::127.0.0.1", True, False),
    ("::169.254.169.254", True, True),
    ("64:ff9b::7f00:1", True, False),
    ("64:ff9b::a9fe:a9fe", True, True),
    ("2002:7f00:1::", True, False),
    ("2002:a9fe:a9fe::1", True, True),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True, True),
    ("8.8.8.8", False, False),
    ("1.1.1.1", False, False),
    ("2606:4700:4700::1111", False, False),
    ("2001:4860:4860::8888", False, False),
    ("::ffff:8.8.8.8", False, False),
    ("64:ff9b::808:808", False, False),
    ("2002:808:808::1", False, False),
]


@pytest.mark.parametrize(("text", "blocked", "blocked_when_private_allowed"), ADDRESSES)
def test_check_address(text: str, blocked: bool, blocked_when_private_allowed: bool) -> None:
    address = ipaddress.ip_address(text)
    assert (check_address(address, allow_private=False) is not None) is blocked
    assert (check_address(address, allow_private=True) is not None) is blocked_when_private_allowed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("fd12::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("192.0.2.1", "a reserved address"),
    ],
)
def test_check_address_reason(text: str, reason: str) -> None:
    assert check_address(ipaddress.ip_address(text), allow_private=False) == reason


@given(st.integers(min_value=0, max_value=2**32 - 1), st.booleans())
def test_mapped_ipv6_judged_as_its_ipv4(value: int, allow_private: bool) -> None:
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value)
    expected = check_address(v4, allow_private)
    assert check_address(mapped, allow_private) == expected
    assert check_address(nat64, allow_private) == expected


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_allow_private_only_widens(value: int) -> None:
    address = ipaddress.IPv6Address(value)
    if check_address(address, allow_private=True) is not None:
        assert check_address(address, allow_private=False) is not None


# --- servers on loopback ------------------------------------------------------------------


class Canary:
    """Listens on 127.0.0.1:P (and [::1]:P when it can) and records every connection."""

    def __init__(self) -> None:
        self.accepted: list[object] = []
        self._selector = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        self.ipv6 = False
        for _ in range(20):
            v4 = socket.create_server(("127.0.0.1", 0))
            self.port = v4.getsockname()[1]
            if not HAS_IPV6:
                break
            try:
                v6 = socket.create_server(("::1", self.port), family=socket.AF_INET6)
            except OSError:
                v4.close()
                continue
            self._listeners.append(v6)
            self.ipv6 = True
            break
        self._listeners.append(v4)
        for listener in self._listeners:
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                try:
                    conn, peer = key.fileobj.accept()  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                self.accepted.append(peer)
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for listener in self._listeners:
            listener.close()
        self._selector.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


class Upstream(BaseHTTPRequestHandler):
    """Routes by path; records what it received on ``server.received``."""

    protocol_version = "HTTP/1.1"
    server: UpstreamServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.received.append((self.path, dict(self.headers.items())))
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        try:
            self._route(parts, query)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, parts: list[str], query: dict[str, str]) -> None:
        match parts:
            case ["img"]:
                self._send(200, PNG, Content_Type="image/png")
            case ["chain", count]:
                if int(count) == 0:
                    self._send(200, b"end of chain", Content_Type="text/plain")
                else:
                    self._send(int(query.get("code", "302")), Location=f"/chain/{int(count) - 1}")
            case ["redirect"]:
                self._send(int(query.get("code", "302")), Location=query["to"])
            case ["rel", _]:
                self._send(302, Location="../img")
            case ["noloc"]:
                self._send(302)
            case ["status", code]:
                self._send(int(code), b"nope", Content_Type="text/plain")
            case ["declared-big"]:
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                self.wfile.flush()
                self.server.stopping.wait(3)
            case ["chunked"]:
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(200):
                    self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            case ["trickle"]:
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(100):
                    if self.server.stopping.is_set():
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            case _:
                self._send(404)


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Upstream)
        self.received: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


# --- refused before any connection ----------------------------------------------------------

BLOCKED_URLS = [
    pytest.param("http://127.0.0.1:{P}/", "loopback", id="ipv4-loopback"),
    pytest.param("http://localhost:{P}/", "loopback", id="localhost"),
    pytest.param(
        "http://[::1]:{P}/",
        "loopback",
        id="ipv6-loopback",
        marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback on this host"),
    ),
    pytest.param("http://2130706433:{P}/", "loopback", id="decimal"),
    pytest.param("http://127.1:{P}/", "loopback", id="short"),
    pytest.param("http://0177.0.0.1:{P}/", "loopback", id="octal"),
    pytest.param("http://0x7f000001:{P}/", "loopback", id="hex"),
    pytest.param("http://0x7f.1:{P}/", "loopback", id="hex-short"),
    pytest.param("http://[::ffff:127.0.0.1]:{P}/", "loopback", id="ipv4-mapped"),
    pytest.param("http://0.0.0.0:{P}/", "unspecified", id="unspecified"),
    pytest.param("file:///etc/passwd", "only http and https", id="file"),
    pytest.param("ftp://127.0.0.1:{P}/x", "only http and https", id="ftp"),
    pytest.param("gopher://127.0.0.1:{P}/_GET%20/", "only http and https", id="gopher"),
    pytest.param("data:text/plain,hello", "only http and https", id="data"),
    pytest.param("127.0.0.1:{P}/", "only http and https", id="no-scheme"),
    pytest.param("//127.0.0.1:{P}/", "only http and https", id="scheme-relative"),
    pytest.param("http://user:pw@127.0.0.1:{P}/", "user name or password", id="userinfo"),
    pytest.param("http://x@127.0.0.1:{P}/", "user name or password", id="user-only"),
    pytest.param("http://127.0.0.1:{P}/a b", "not a valid URL", id="space"),
    pytest.param("http://127.0.0.1:{P}/\r\nX-Evil: 1", "not a valid URL", id="crlf"),
    pytest.param("http://127.0.0.1:99999/", "not a valid URL", id="bad-port"),
    pytest.param("http:///nohost", "not a valid URL", id="no-host"),
]


@pytest.mark.parametrize(("template", "why"), BLOCKED_URLS)
def test_blocked_urls_never_connect(canary: Canary, template: str, why: str) -> None:
    error = _refusal(template.replace("{P}", str(canary.port)), PUBLIC_ONLY)
    assert why in error.message
    time.sleep(0.05)
    assert canary.accepted == []


def test_canary_sees_an_allowed_connection(canary: Canary) -> None:
    """Control: the canary does record a fetch that is let through."""
    _refusal(f"http://127.0.0.1:{canary.port}/", LOCAL)
    time.sleep(0.05)
    assert len(canary.accepted) == 1


def test_blocked_message_names_the_reason(canary: Canary) -> None:
    error = _refusal(f"http://127.0.0.1:{canary.port}/", PUBLIC_ONLY)
    assert error.message == (
        "input_reference URL is not allowed: the host resolves to a loopback address."
    )


# --- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("http://0.0.0.0:{P}/", "an unspecified address"),
        ("http://[::]:{P}/", "an unspecified address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("http://[::ffff:169.254.169.254]/", "a link-local address"),
        ("http://user:pw@127.0.0.1:{P}/", "user name or password"),
    ],
)
def test_redirect_target_is_checked_again(
    upstream: UpstreamServer, canary: Canary, target: str, why: str
) -> None:
    target = target.replace("{P}", str(canary.port))
    error = _refusal(upstream.url(f"/redirect?to={target}"), LOCAL)
    assert why in error.message
    assert len(upstream.received) == 1
    time.sleep(0.05)
    assert canary.accepted == []


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_chain_up_to_the_limit_is_followed(upstream: UpstreamServer, code: int) -> None:
    assert fetch_bytes(upstream.url(f"/chain/3?code={code}"), LOCAL, param=PARAM) == b"end of chain"
    assert [path for path, _ in upstream.received][-1] == "/chain/0"


def test_one_redirect_too_many_is_refused(upstream: UpstreamServer) -> None:
    error = _refusal(upstream.url("/chain/4"), LOCAL)
    assert "too many redirects" in error.message
    assert len(upstream.received) == 4


def test_max_redirects_zero_refuses_any_redirect(upstream: UpstreamServer) -> None:
    policy = FetchPolicy(max_bytes=1000, allow_private=True, deadline=5.0, max_redirects=0)
    assert "too many redirects" in _refusal(upstream.url("/chain/1"), policy).message


def test_relative_location(upstream: UpstreamServer) -> None:
    assert fetch_bytes(upstream.url("/rel/here"), LOCAL, param=PARAM) == PNG
    assert [path for path, _ in upstream.received] == ["/rel/here", "/img"]


def test_redirect_across_hosts_sends_the_new_host(upstream: UpstreamServer) -> None:
    target = upstream.url("/img", host="localhost")
    assert fetch_bytes(upstream.url(f"/redirect?code=307&to={target}"), LOCAL, param=PARAM) == PNG
    assert upstream.received[-1][1]["Host"] == f"localhost:{upstream.port}"


def test_redirect_without_location(upstream: UpstreamServer) -> None:
    assert "without a Location" in _refusal(upstream.url("/noloc"), LOCAL).message


# --- the happy path ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_fetch_bytes_and_headers_sent(upstream: UpstreamServer, host: str) -> None:
    with open_url(upstream.url("/img?sig=abc", host=host), LOCAL, param=PARAM) as stream:
        assert stream.content_type == "image/png"
        assert stream.content_length == len(PNG)
        assert b"".join(stream.iter_chunks(chunk_size=100)) == PNG
    path, headers = upstream.received[0]
    assert path == "/img?sig=abc"
    assert headers["Host"] == f"{host}:{upstream.port}"
    assert headers["User-Agent"] == "sora-proxy"
    assert headers["Accept"] == "*/*"
    assert "Cookie" not in headers
    assert "Authorization" not in headers


def test_query_string_is_not_logged(upstream: UpstreamServer, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG, logger="sora_proxy.fetch"):
        fetch_bytes(upstream.url("/img?signature=TOPSECRET"), LOCAL, param=PARAM)
    assert "TOPSECRET" not in caplog.text


def test_param_names_the_message(upstream: UpstreamServer) -> None:
    with pytest.raises(ReferenceFetchFailed) as caught:
        fetch_bytes(upstream.url("/status/404"), LOCAL, param="image_url")
    assert caught.value.param == "image_url"
    assert caught.value.message.startswith("image_url URL could not be fetched")


# --- limits and failures ----------------------------------------------------------------------


def test_declared_length_over_the_cap_is_refused_before_reading(upstream: UpstreamServer) -> None:
    started = time.monotonic()
    error = _refusal(upstream.url("/declared-big"), LOCAL)
    assert "is larger than the 1048576-byte limit" in error.message
    assert time.monotonic() - started < 1.0


def test_chunked_body_over_the_cap_is_refused_while_reading(upstream: UpstreamServer) -> None:
    policy = FetchPolicy(max_bytes=5000, allow_private=True, deadline=5.0)
    error = _refusal(upstream.url("/chunked"), policy)
    assert "is larger than the 5000-byte limit" in error.message


def test_chunked_body_under_the_cap_is_read(upstream: UpstreamServer) -> None:
    assert fetch_bytes(upstream.url("/chunked"), LOCAL, param=PARAM) == b"x" * 1024 * 200


def test_iter_chunks_stops_as_soon_as_the_cap_is_passed(upstream: UpstreamServer) -> None:
    policy = FetchPolicy(max_bytes=3000, allow_private=True, deadline=5.0)
    received = 0
    with (
        pytest.raises(ReferenceFetchFailed),
        open_url(upstream.url("/chunked"), policy, param=PARAM) as stream,
    ):
        for chunk in stream.iter_chunks(chunk_size=1000):
            received += len(chunk)
    assert received <= 3000


def test_slow_trickle_hits_the_deadline(upstream: UpstreamServer) -> None:
    policy = FetchPolicy(max_bytes=1000, allow_private=True, deadline=1.0)
    started = time.monotonic()
    error = _refusal(upstream.url("/trickle"), policy)
    assert "timed out" in error.message
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("code", [404, 500, 204])
def test_status(upstream: UpstreamServer, code: int) -> None:
    if code == 204:
        assert fetch_bytes(upstream.url("/status/204"), LOCAL, param=PARAM) == b""
        return
    error = _refusal(upstream.url(f"/status/{code}"), LOCAL)
    assert error.message == f"input_reference URL could not be fetched: it returned HTTP {code}."


def test_connection_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    error = _refusal(f"http://127.0.0.1:{port}/", LOCAL)
    assert error.message == "input_reference URL could not be fetched: connection failed."
    assert str(port) not in error.message


def test_tls_to_a_plain_http_server_fails_cleanly(upstream: UpstreamServer) -> None:
    error = _refusal(f"https://127.0.0.1:{upstream.port}/img", LOCAL)
    assert "could not be fetched" in error.message


def test_a_trickled_status_line_is_cut_at_the_deadline(trickler: str) -> None:
    """Each read of the head returns a byte before its timeout; the deadline still holds."""
    policy = FetchPolicy(max_bytes=1024, allow_private=True, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(ReferenceFetchFailed) as raised, open_url(trickler, policy, param="url"):
        pass
    assert "timed out" in raised.value.message
    assert time.monotonic() - started < 1.6
