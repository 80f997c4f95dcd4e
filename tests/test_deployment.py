"""The deployment the README describes: client -> nginx (config/nginx/sora-proxy.conf) ->
gunicorn (config/gunicorn.conf.py) -> the proxy -> the simulator upstream, all on loopback."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import uuid

import openai
import pytest
import requests
from conftest import UPSTREAM_KEY
from deployment_checks import (
    download_is_byte_for_byte,
    large_video,
    leaving_client_stops_the_upstream,
    range_is_exact,
)
from nginx import Nginx
from servers import Gunicorn
from videos import VideoUpload

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.media import load as load_asset

MB = 1024 * 1024
KEY = "sk-deployment-caller-5e0c"
AUTH = {"Authorization": f"Bearer {KEY}"}
MP4, _, _ = load_asset("video")


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(seconds_per_step=0.05, api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 's.db'}"


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("archive")


@pytest.fixture(scope="module")
def proxy(sim, store_url, archive_dir, tmp_path_factory):
    server = Gunicorn(
        {
            "SORA_PROXY_UPSTREAM_URL": sim.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": f"dep:{KEY}",
            "SORA_PROXY_TRUSTED_PROXIES": "1",
            "SORA_PROXY_STORE_URL": store_url,
            # As documented: downloads are handed to nginx, so they hold no gunicorn thread.
            "SORA_PROXY_HANDOFF": "nginx",
            "SORA_PROXY_ARCHIVE_URL": str(archive_dir),
        },
        tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
    )
    yield server
    log = server.stop()
    assert UPSTREAM_KEY not in log and KEY not in log


@pytest.fixture(scope="module")
def nginx(proxy, archive_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("nginx")
    with Nginx(f"127.0.0.1:{proxy.port}", directory, archive_dir=archive_dir) as server:
        yield server
    assert "[alert]" not in server.logs() and "[emerg]" not in server.logs()


def proxy_log_entries(proxy: Gunicorn) -> list[dict]:
    """The proxy's JSON log lines so far (one object per line on gunicorn's stderr)."""
    entries = []
    for line in proxy.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


def proxy_log_entry(proxy: Gunicorn, request_id: str) -> dict:
    """The proxy's log line for ``request_id`` (written as the response ends: poll briefly)."""
    deadline = time.monotonic() + 5
    while True:
        found = [e for e in proxy_log_entries(proxy) if e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(found) == 1, f"no single JSON log line with request_id {request_id!r}"
    return found[0]


def test_sdk_create_and_poll_through_nginx(nginx, sim):
    client = openai.OpenAI(base_url=nginx.url + "/v1", api_key=KEY, max_retries=0)
    video = client.videos.create_and_poll(prompt="A lighthouse in fog", seconds="4")
    assert video.status == "completed" and video.progress == 100
    assert [v.id for v in client.videos.list()] == [video.id]
    assert client.videos.download_content(video.id).content == MP4
    assert sim.state.requests[-1].header("Authorization") == f"Bearer {UPSTREAM_KEY}"


def test_200_mb_download_is_byte_for_byte(nginx, sim, store_url):
    video_id = large_video(sim, store_url, 200 * MB, seed=11)
    download_is_byte_for_byte(nginx.url, AUTH, video_id, 200 * MB, seed=11)


def test_range_through_nginx(nginx, sim, store_url):
    video_id = large_video(sim, store_url, 8 * MB, seed=5)
    range_is_exact(nginx.url, AUTH, video_id, 8 * MB, seed=5)


def test_50_mb_upload_to_edits_is_streamed_byte_for_byte(nginx, sim):
    upload = VideoUpload(50 * MB, {"prompt": "Snow"})
    response = requests.post(
        f"{nginx.url}/v1/videos/edits",
        data=upload,
        timeout=120,
        headers={**AUTH, "Content-Type": upload.content_type},
    )
    assert response.status_code == 200, response.text
    recorded = sim.state.requests[-1]
    assert recorded.path == "/v1/videos/edits"
    assert recorded.header("Content-Length") == str(len(upload))
    (video,) = recorded.files["video"]
    assert video.size == upload.size
    assert video.sha256 == upload.sha256
    assert recorded.form["prompt"] == ["Snow"]


def test_a_bad_upload_is_refused_before_the_upstream_is_paid(nginx, sim):
    # nginx buffers uploads (a slow uploader holds no gunicorn thread), so the proxy sees the
    # body once nginx has it all, then refuses a file that is not a video before sending
    # anything upstream.
    boundary = "bad-upload"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nSnow\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + bytes(5 * MB)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    before = len(sim.state.requests)
    response = requests.post(
        f"{nginx.url}/v1/videos/edits",
        data=body,
        timeout=30,
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert len(sim.state.requests) == before  # nothing reached the upstream


def test_nginx_refuses_an_over_size_upload_in_the_envelope(nginx, sim):
    before = len(sim.state.requests)
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as conn:
        conn.sendall(
            f"POST /v1/videos/edits HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {300 * MB}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert len(sim.state.requests) == before


def test_client_address_and_request_id_reach_the_proxy_log(nginx, proxy):
    request_id = f"dep-test-{uuid.uuid4()}"
    conn = http.client.HTTPConnection(
        "127.0.0.1", nginx.port, timeout=10, source_address=("127.0.0.2", 0)
    )
    try:
        # A client-sent X-Forwarded-For must not decide the address (nginx appends the real
        # one; the proxy trusts only that last hop).
        conn.request(
            "GET",
            "/v1/videos?limit=5",
            headers={**AUTH, "X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9"},
        )
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert nginx.access_entry(request_id=request_id)["remote_addr"] == "127.0.0.2"
    entry = proxy_log_entry(proxy, request_id)
    assert entry["client_addr"] == "127.0.0.2"
    assert entry["caller"] == "dep" and entry["status"] == 200 and entry["method"] == "GET"
    for key in ("route", "path", "upstream", "duration_ms", "bytes_in", "bytes_out"):
        assert key in entry


def test_a_request_id_is_made_when_the_client_sends_none(nginx, proxy):
    missing = f"video_{uuid.uuid4().hex}"  # not this caller's: answered by the proxy itself
    response = requests.get(f"{nginx.url}/v1/videos/{missing}", headers=AUTH, timeout=10)
    assert response.status_code == 404
    made = response.headers.get("X-Request-ID")
    assert made and re.fullmatch(r"[0-9a-f]{32}", made)  # nginx's $request_id
    assert nginx.access_entry(uri=f"/v1/videos/{missing}")["request_id"] == made
    assert proxy_log_entry(proxy, made)["status"] == 404


def test_nginx_does_not_read_ahead_and_a_leaving_client_stops_the_upstream(nginx, sim, store_url):
    video_id = large_video(sim, store_url, 2048 * MB, seed=1)
    leaving_client_stops_the_upstream(nginx.url, AUTH, sim, video_id)


def test_nginx_answers_in_the_envelope_when_gunicorn_is_down(tmp_path):
    from servers import free_port

    with Nginx(f"127.0.0.1:{free_port()}", tmp_path) as down:
        response = requests.post(
            f"{down.url}/v1/videos", json={"prompt": "p"}, headers=AUTH, timeout=10
        )
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "server_error"
        assert response.headers["x-should-retry"] == "false"  # the SDK must not retry a POST
        assert response.headers["X-Request-ID"]
        assert requests.get(f"{down.url}/v1/videos", headers=AUTH, timeout=10).status_code == 502


def test_metrics_are_only_served_to_this_host(nginx):
    # From this host the request reaches the proxy, which answers 404 (metrics are off here).
    for source, expected in (("127.0.0.2", 403), ("127.0.0.1", 404)):
        conn = http.client.HTTPConnection(
            "127.0.0.1", nginx.port, timeout=10, source_address=(source, 0)
        )
        try:
            conn.request("GET", "/metrics")
            status = conn.getresponse().status
        finally:
            conn.close()
        assert status == expected
