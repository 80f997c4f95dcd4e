"""The upstream's answer comes back unchanged; upstream failures become 502/504."""

from __future__ import annotations

import gzip
import socket
import threading

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from sora_proxy import create_app

GZIPPED = gzip.compress(b'{"id": "video_123", "object": "video", "status": "queued"}' * 50)


class RawUpstream:
    """An upstream answering fixed bytes and headers, recording request headers."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __call__(self, environ, start_response):
        request = Request(environ)
        request.get_data()
        self.seen.append(dict(request.headers))
        response = Response(
            GZIPPED,
            status=201,
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Connection": "X-Hop",
                "X-Hop": "must-not-pass",
                "Keep-Alive": "timeout=5",
                "Set-Cookie": "upstream_session=abc",
                "openai-poll-after-ms": "2500",
                "x-request-id": "req_upstream_1",
                "retry-after": "3",
            },
        )
        return response(environ, start_response)


@pytest.fixture
def raw_upstream():
    upstream = RawUpstream()
    yield upstream
    upstream.server.shutdown()
    upstream.server.server_close()


def test_body_bytes_status_and_end_to_end_headers_pass_unchanged(raw_upstream):
    client = create_app({"SORA_PROXY_UPSTREAM_URL": raw_upstream.base_url}).test_client()
    response = client.post(
        "/v1/videos",
        json={"prompt": "p"},
        headers={
            "Accept-Encoding": "gzip",
            "X-Request-ID": "mine-1",
            "Cookie": "host_session=secret",
        },
    )
    assert response.status_code == 201
    assert response.get_data() == GZIPPED  # not decompressed
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Length"] == str(len(GZIPPED))
    assert response.headers["openai-poll-after-ms"] == "2500"
    assert response.headers["x-request-id"] == "req_upstream_1"
    assert response.headers["retry-after"] == "3"
    for dropped in ("X-Hop", "Keep-Alive", "Set-Cookie", "Connection"):
        assert dropped not in response.headers
    (seen,) = raw_upstream.seen
    assert seen["Accept-Encoding"] == "gzip"
    assert seen["X-Request-Id"] == "mine-1"
    assert "Cookie" not in seen


def test_no_accept_encoding_means_identity_upstream(raw_upstream):
    client = create_app({"SORA_PROXY_UPSTREAM_URL": raw_upstream.base_url}).test_client()
    client.post("/v1/videos", json={"prompt": "p"})
    assert raw_upstream.seen[0]["Accept-Encoding"] == "identity"


def test_upstream_4xx_is_relayed_without_should_retry(client, upstream):
    upstream.state.fail_next.append(_failure(status=429))
    response = client.post("/v1/videos", json={"prompt": "p"})
    assert response.status_code == 429
    assert response.get_json()["error"]["type"]
    assert "x-should-retry" not in response.headers  # 429 is safe for the SDK to retry


def _failure(**kwargs):
    from sora_proxy.simulator import FailureSpec

    return FailureSpec(path_prefix="/v1/videos", method="POST", **kwargs)


def test_upstream_5xx_on_create_carries_should_retry_false(client, upstream):
    upstream.state.fail_next.append(_failure(status=500))
    response = client.post("/v1/videos", json={"prompt": "p"})
    assert response.status_code == 500
    assert response.headers["x-should-retry"] == "false"


def test_unreachable_upstream_is_502_with_should_retry_false():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = create_app({"SORA_PROXY_UPSTREAM_URL": f"http://127.0.0.1:{port}/v1"}).test_client()
    response = client.post("/v1/videos", json={"prompt": "p"})
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    error = response.get_json()["error"]
    assert error["code"] == "upstream_unreachable" and error["type"] == "server_error"
    assert str(port) not in error["message"]


def test_upstream_timeout_is_504_with_should_retry_false(make_app, upstream):
    client = make_app(read_timeout="0.3").test_client()
    upstream.state.fail_next.append(_failure(delay=1.5))
    response = client.post("/v1/videos", json={"prompt": "p"})
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"
    assert response.get_json()["error"]["code"] == "upstream_timeout"


def test_proxy_never_retries_a_post(make_app, upstream):
    client = make_app(read_timeout="0.3").test_client()
    upstream.state.fail_next.append(_failure(delay=1.0))
    client.post("/v1/videos", json={"prompt": "p"})
    import time

    time.sleep(1.2)
    assert len([r for r in upstream.state.requests if r.method == "POST"]) == 1
