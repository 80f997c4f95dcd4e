"""URL references that point inside the network are refused before any connection is made."""

from __future__ import annotations

import socket
import threading

import pytest
from images import make_image


class Canary:
    """A listener on 127.0.0.1 that counts every connection that reaches it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def canary():
    listener = Canary()
    yield listener
    listener.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


LOOPBACK_FORMS = [
    "http://127.0.0.1:{port}/ref.png",
    "http://localhost:{port}/ref.png",
    "http://2130706433:{port}/ref.png",
    "http://127.1:{port}/ref.png",
    "http://0177.0.0.1:{port}/ref.png",
    "http://0x7f000001:{port}/ref.png",
    "http://[::ffff:127.0.0.1]:{port}/ref.png",
    "https://127.0.0.1:{port}/ref.png",
    "http://user:pass@127.0.0.1:{port}/ref.png",
    "file:///etc/passwd",
    "ftp://127.0.0.1:{port}/ref.png",
    "gopher://127.0.0.1:{port}/_x",
]
if _ipv6_loopback():
    LOOPBACK_FORMS.append("http://[::1]:{port}/ref.png")


@pytest.mark.parametrize("template", LOOPBACK_FORMS)
@pytest.mark.parametrize("shape", ["string", "image_url", "multipart_text"])
def test_internal_urls_are_refused_and_never_connected(make_app, upstream, canary, template, shape):
    client = make_app().test_client()  # FETCH_ALLOW_PRIVATE defaults to false
    url = template.format(port=canary.port)
    if shape == "multipart_text":
        response = client.post(
            "/v1/videos",
            data={"prompt": "p", "input_reference": url},
            content_type="multipart/form-data",
        )
        param = "input_reference"
    else:
        value = url if shape == "string" else {"image_url": url}
        response = client.post("/v1/videos", json={"prompt": "p", "input_reference": value})
        param = "input_reference" if shape == "string" else "input_reference.image_url"
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert "127.0.0.1" not in error["message"] or "127.0.0.1" in url
    assert canary.connections == 0
    assert upstream.state.requests == []


def test_redirect_to_loopback_is_refused(make_app, upstream, file_server, canary):
    # The first hop is allowed only because private fetches are on; the redirect goes to the
    # link-local metadata address, which stays blocked even then, and is never connected to.
    url = file_server.add("/hop", b"", status=302, Location="http://169.254.169.254/latest/")
    client = make_app(fetch_allow_private="true").test_client()
    response = client.post("/v1/videos", json={"prompt": "p", "input_reference": url})
    assert response.status_code == 400
    assert "link-local" in response.get_json()["error"]["message"]
    assert upstream.state.requests == []


def test_redirect_from_public_policy_to_loopback_canary(make_app, upstream, file_server, canary):
    url = file_server.add("/hop", b"", status=302, Location=f"http://127.0.0.1:{canary.port}/x")
    client = make_app().test_client()
    response = client.post("/v1/videos", json={"prompt": "p", "input_reference": url})
    assert response.status_code == 400  # refused at the first (loopback) hop already
    assert canary.connections == 0 and file_server.hits == []


def test_allowed_private_fetch_follows_redirects(make_app, upstream, file_server):
    png = make_image(720, 1280)
    final = file_server.add("/final.png", png)
    start = file_server.add("/start", b"", status=302, Location=final)
    client = make_app(fetch_allow_private="true").test_client()
    response = client.post("/v1/videos", json={"prompt": "p", "input_reference": start})
    assert response.status_code == 200, response.get_json()
    assert file_server.hits == ["/start", "/final.png"]


def test_failed_fetch_says_why_without_internals(make_app, upstream, file_server):
    client = make_app(fetch_allow_private="true").test_client()
    missing = file_server.base_url + "/missing.png"
    response = client.post("/v1/videos", json={"prompt": "p", "input_reference": missing})
    assert response.status_code == 400
    message = response.get_json()["error"]["message"]
    assert "404" in message and "Traceback" not in message and "urllib3" not in message
