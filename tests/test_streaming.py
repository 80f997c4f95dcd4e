"""Large bodies stream through the proxy under gunicorn both ways, and disconnects propagate."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
import requests
from servers import Gunicorn
from videos import VideoUpload

from sora_proxy.simulator import FailureSpec, SimulatorServer, large_body_sha256
from sora_proxy.simulator.media import load as load_asset

MB = 1024 * 1024
MP4, _, _ = load_asset("video")


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(seconds_per_step=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(sim, tmp_path_factory):
    server = Gunicorn(
        {"SORA_PROXY_UPSTREAM_URL": sim.base_url},
        tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
    )
    yield server
    server.stop()


def test_300_mb_download_is_byte_for_byte(proxy, sim):
    size = 300 * MB
    video_id = sim.state.add_large_video(size, seed=7)
    digest = hashlib.sha256()
    received = 0
    with requests.get(
        f"{proxy.url}/v1/videos/{video_id}/content", stream=True, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(size)
        assert response.headers["Content-Type"] == "video/mp4"
        for chunk in response.raw.stream(MB, decode_content=False):
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == large_body_sha256(size, seed=7)


def test_range_on_a_large_body(proxy, sim):
    from sora_proxy.simulator import large_body_chunks

    size = 64 * MB
    video_id = sim.state.add_large_video(size, seed=3)
    start, end = 10 * MB + 123, 20 * MB + 456
    response = requests.get(
        f"{proxy.url}/v1/videos/{video_id}/content",
        headers={"Range": f"bytes={start}-{end}"},
        timeout=60,
    )
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert response.content == b"".join(large_body_chunks(size, seed=3, start=start, end=end + 1))


def test_100_mb_upload_to_edits_is_byte_for_byte(proxy, sim):
    upload = VideoUpload(100 * MB)
    response = requests.post(
        f"{proxy.url}/v1/videos/edits",
        data=upload,
        timeout=120,
        headers={"Content-Type": upload.content_type},
    )
    assert response.status_code == 200, response.text
    recorded = sim.state.requests[-1]
    assert recorded.path == "/v1/videos/edits"
    assert recorded.headers.get("Content-Length") == str(len(upload))
    (video,) = recorded.files["video"]
    assert video.size == upload.size
    assert video.sha256 == upload.sha256
    assert recorded.form["prompt"] == ["More rain"]


def test_client_disconnect_closes_the_upstream_stream(proxy, sim):
    video_id = sim.state.add_large_video(2048 * MB, seed=1)
    before = len(sim.state.content_streams)
    with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
        conn.sendall(f"GET /v1/videos/{video_id}/content HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        while received < 8 * MB:
            received += len(conn.recv(MB))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        records = sim.state.content_streams[before:]
        if records and records[-1].closed_early:
            break
        time.sleep(0.1)
    (record,) = sim.state.content_streams[before:]
    assert record.closed_early and not record.finished
    assert record.bytes_sent < 2048 * MB


def test_upstream_reset_mid_stream_is_not_a_clean_end(proxy, sim):
    video_id = sim.state.add_large_video(32 * MB, seed=2)
    sim.state.fail_next.append(
        FailureSpec(
            path_prefix=f"/v1/videos/{video_id}/content", method="GET", truncate_after=5 * MB
        )
    )
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        with requests.get(
            f"{proxy.url}/v1/videos/{video_id}/content", stream=True, timeout=30
        ) as response:
            assert response.status_code == 200
            for _ in response.iter_content(MB):
                pass
