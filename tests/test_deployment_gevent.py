"""The deployment guarantees with gevent workers and no nginx in front: client -> gunicorn
(config/gunicorn.conf.py, ``SORA_PROXY_WORKER_CLASS=gevent``) -> the proxy -> the simulator.

A stream must not hold a worker thread: here every request is a greenlet, so hundreds of slow
readers share one worker with normal requests, and CPU-bound work (a large reference image, a
thumbnail) runs in gevent's native thread pool while the worker's loop keeps answering.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import openai
import pytest
import requests
from conftest import UPSTREAM_KEY
from deployment_checks import (
    download_is_byte_for_byte,
    large_video,
    leaving_client_stops_the_upstream,
    own,
    range_is_exact,
)
from images import parse_multipart, pixel_size
from PIL import Image
from servers import REPO, Gunicorn
from webhook_receiver import WebhookReceiver

from sora_proxy.simulator import SimulatorServer, large_body_sha256
from sora_proxy.simulator.media import load as load_asset

MB = 1024 * 1024
KEY = "sk-gevent-caller-9d1e"
AUTH = {"Authorization": f"Bearer {KEY}"}
MP4, _, _ = load_asset("video")
SLOW_READERS = 300


def gevent_settings(sim: SimulatorServer, store_url: str, folder: Path) -> dict[str, str]:
    """The proxy's settings for these tests: gevent workers, metrics on, an archive."""
    metrics = folder / "metrics"
    metrics.mkdir()
    return {
        "SORA_PROXY_WORKER_CLASS": "gevent",
        "SORA_PROXY_UPSTREAM_URL": sim.base_url,
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": f"dep:{KEY}",
        "SORA_PROXY_STORE_URL": store_url,
        "SORA_PROXY_ARCHIVE_URL": f"file://{folder / 'archive'}",
        "SORA_PROXY_POLL_INTERVAL": "0.2",
        "SORA_PROXY_METRICS": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }


def check_log(log: str) -> None:
    """Nothing gevent warns about when patched late, no traceback, no secret."""
    assert "Using worker: gevent" in log
    for unwanted in ("MonkeyPatchWarning", "Monkey-patching", "Traceback", "graceful timeout"):
        assert unwanted not in log, unwanted
    assert UPSTREAM_KEY not in log and KEY not in log


def worker_pids(log_path: Path) -> list[int]:
    """The pids gunicorn booted workers with, in order."""
    text = log_path.read_text(errors="replace")
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", text)]


def os_threads(pid: int) -> int:
    """How many OS threads process ``pid`` has now."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))


def noisy_png(width: int, height: int) -> bytes:
    """A PNG that is slow to decode and fit: a gradient with noise (so it compresses only a
    little), ``width`` x ``height`` RGB."""
    gradient = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    noise = Image.effect_noise((width, height), 16).convert("RGB")
    out = io.BytesIO()
    Image.blend(gradient, noise, 0.5).save(out, "PNG", compress_level=1)
    return out.getvalue()


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """About 18 MiB, 5400x3000: within the 20 MiB and 64 MiB decode limits, and a third of a
    second or so to decode and fit to 1280x720."""
    data = noisy_png(5400, 3000)
    assert len(data) < 20 * MB
    return data


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(seconds_per_step=0.05, api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 's.db'}"


@pytest.fixture(scope="module")
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(sim, store_url, receiver, tmp_path_factory):
    """One gevent worker: every test's requests share its one OS thread."""
    folder = tmp_path_factory.mktemp("gunicorn")
    settings = gevent_settings(sim, store_url, folder)
    settings.update(
        {
            "SORA_PROXY_WEBHOOK_URL": receiver.url,
            "SORA_PROXY_WEBHOOK_SECRET": receiver.secret,
            "SORA_PROXY_WEBHOOK_ALLOW_PRIVATE": "true",
        }
    )
    server = Gunicorn(settings, folder / "gunicorn.log", workers=1)
    yield server
    check_log(server.stop())


def sdk(proxy: Gunicorn) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=KEY, max_retries=0)


def test_sdk_create_poll_and_download(proxy, sim):
    client = sdk(proxy)
    video = client.videos.create_and_poll(prompt="A lighthouse in fog", seconds="4")
    assert video.status == "completed" and video.progress == 100
    assert video.id in [v.id for v in client.videos.list()]
    assert client.videos.download_content(video.id).content == MP4
    assert sim.state.requests[-1].header("Authorization") == f"Bearer {UPSTREAM_KEY}"


def test_200_mb_download_is_byte_for_byte(proxy, sim, store_url):
    video_id = large_video(sim, store_url, 200 * MB, seed=11)
    download_is_byte_for_byte(proxy.url, AUTH, video_id, 200 * MB, seed=11)


def test_range(proxy, sim, store_url):
    video_id = large_video(sim, store_url, 8 * MB, seed=5)
    range_is_exact(proxy.url, AUTH, video_id, 8 * MB, seed=5)


def test_a_leaving_client_closes_the_upstream_stream(proxy, sim, store_url):
    video_id = large_video(sim, store_url, 2048 * MB, seed=1)
    leaving_client_stops_the_upstream(proxy.url, AUTH, sim, video_id)


def test_a_bad_upload_is_refused_before_the_upstream_is_paid(proxy, sim):
    boundary = "bad-upload"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nSnow\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    before = len(sim.state.requests)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        conn.sendall(
            f"POST /v1/videos/edits HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {100 * MB}\r\n\r\n".encode()
            + head
            + bytes(MB)
        )
        answer = b""
        while b"invalid_video" not in answer and (chunk := conn.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"invalid_video" in answer
    assert len(sim.state.requests) == before  # nothing reached the upstream


def test_hundreds_of_slow_readers_leave_room_for_a_retrieve(proxy, sim, store_url):
    # Each reader takes 1 KB a second of a large download: with gthread workers, each would
    # hold one of the worker's 16 threads. The one gevent worker keeps answering a retrieve.
    video_id = sim.state.add_large_video(256 * MB, seed=3)
    own(store_url, video_id)
    created = sdk(proxy).videos.create(prompt="A quiet harbour", seconds="4")
    (worker,) = worker_pids(proxy.log_path)
    before = len(sim.state.content_streams)
    request = (
        f"GET /v1/videos/{video_id}/content HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {KEY}\r\n\r\n"
    ).encode()
    readers = []
    try:
        for _ in range(SLOW_READERS):
            reader = socket.socket()
            readers.append(reader)
            # A small window, so the kernel holds little of each stream for the reader.
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            reader.settimeout(60)
            reader.connect(("127.0.0.1", proxy.port))
            reader.sendall(request)
        for second in range(3):
            for reader in readers:
                chunk = reader.recv(1024)
                if second == 0:
                    assert chunk.startswith(b"HTTP/1.1 200 "), chunk[:100]
                else:
                    assert chunk
            response = requests.get(f"{proxy.url}/v1/videos/{created.id}", headers=AUTH, timeout=60)
            assert response.status_code == 200 and response.json()["id"] == created.id
            time.sleep(1)
        # Every reader is still being served, and none of them took an OS thread.
        streams = [r for r in sim.state.content_streams[before:] if r.video_id == video_id]
        assert len(streams) == SLOW_READERS
        assert os_threads(worker) < 50
    finally:
        for reader in readers:
            reader.close()
    deadline = time.monotonic() + 60
    while not all(r.ended for r in streams) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(r.closed_early and not r.finished for r in streams)
    assert worker_pids(proxy.log_path) == [worker]  # no worker was restarted meanwhile


class SentBody(io.BytesIO):
    """A request body that says when its last byte has been handed to the socket."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.sent = threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self.tell() == self.size:
            self.sent.set()
        return chunk


def multipart(fields: dict[str, str], name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "gevent-reference-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_a_big_reference_being_fitted_does_not_stop_a_retrieve(proxy, sim, big_png):
    existing = sdk(proxy).videos.create(prompt="A still pond", seconds="4")
    body, content_type = multipart(
        {"prompt": "A cat", "size": "1280x720", "seconds": "4"},
        "input_reference",
        "cat.png",
        big_png,
    )
    upload = SentBody(body)

    def create() -> requests.Response:
        return requests.post(
            f"{proxy.url}/v1/videos",
            data=upload,
            headers={**AUTH, "Content-Type": content_type},
            timeout=120,
        )

    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(create)
        assert upload.sent.wait(60)
        answered_meanwhile = 0
        while not creating.done():
            response = requests.get(
                f"{proxy.url}/v1/videos/{existing.id}", headers=AUTH, timeout=60
            )
            assert response.status_code == 200
            answered_meanwhile += not creating.done()
        created = creating.result()
    assert created.status_code == 200, created.text
    (recorded,) = [r for r in sim.state.requests if r.form.get("prompt") == ["A cat"]]
    parts = {p.name: p for p in parse_multipart(recorded.body, recorded.headers["Content-Type"])}
    assert pixel_size(parts["input_reference"].data) == (1280, 720)
    # Decoding, fitting and re-encoding the image took a native thread, not the loop: retrieves
    # came and went, one after another, while the create was still being worked on (about 140
    # on a 2-core machine). With the work on the loop, only the few that slip in while the
    # body is read and sent upstream get through (4 there).
    assert answered_meanwhile >= 20, answered_meanwhile


def test_the_tracker_follows_videos_to_their_end(proxy, sim, receiver):
    client = sdk(proxy)
    ids = [client.videos.create(prompt=f"A kite, take {n}", seconds="4").id for n in range(2)]
    # Nobody polls: the tracker alone sees them end, and says so to the webhook receiver.
    deadline = time.monotonic() + 60
    by_video: dict[str, dict] = {}
    while not set(ids) <= set(by_video):
        assert time.monotonic() < deadline, f"events for {sorted(by_video)}, not {ids}"
        time.sleep(0.1)
        by_video = {event["data"]["id"]: event for event in receiver.events().values()}
    assert all(by_video[video_id]["type"] == "video.completed" for video_id in ids)
    log = ""
    while time.monotonic() < deadline:
        log = proxy.log_path.read_text(errors="replace")
        if all(f"video {video_id} archived" in log for video_id in ids):
            break
        time.sleep(0.1)
    assert all(f"video {video_id} archived" in log for video_id in ids)
    for video_id in ids:
        assert client.videos.retrieve(video_id).status == "completed"
        assert client.videos.download_content(video_id).content == MP4


def test_prometheus_multiprocess_metrics_are_served(proxy):
    assert requests.get(f"{proxy.url}/v1/videos", headers=AUTH, timeout=10).status_code == 200
    response = requests.get(f"{proxy.url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200
    lines = [line for line in response.text.splitlines() if line.startswith("sora_proxy_")]
    assert any(
        line.startswith("sora_proxy_requests_total{") and 'route="/v1/videos"' in line
        for line in lines
    )


def test_sigterm_lets_a_running_download_finish(sim, tmp_path):
    store_url = f"sqlite:///{tmp_path / 's.db'}"
    size = 64 * MB
    video_id = sim.state.add_large_video(size, seed=21)
    own(store_url, video_id)
    server = Gunicorn(gevent_settings(sim, store_url, tmp_path), tmp_path / "g.log", workers=1)
    try:
        digest = hashlib.sha256()
        with requests.get(
            f"{server.url}/v1/videos/{video_id}/content", headers=AUTH, stream=True, timeout=60
        ) as response:
            assert response.status_code == 200
            first = response.raw.read(MB, decode_content=False)
            digest.update(first)
            received = len(first)
            server.process.send_signal(signal.SIGTERM)
            # The worker is told to stop while the download still has 63 MB to go.
            deadline = time.monotonic() + 10
            while "Handling signal: term" not in server.log_path.read_text(errors="replace"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(1.5)  # past the worker's next heartbeat, where it notices
            for chunk in response.raw.stream(MB, decode_content=False):
                digest.update(chunk)
                received += len(chunk)
        assert received == size
        assert digest.hexdigest() == large_body_sha256(size, seed=21)
        assert server.process.wait(timeout=30) == 0
    finally:
        log = server.stop()
    check_log(log)
    assert "Worker exiting" in log


def test_the_redis_store_works_under_gevent(sim, redis_server, tmp_path):
    settings = gevent_settings(sim, redis_server.url, tmp_path)
    settings["SORA_PROXY_STORE_PREFIX"] = f"gevent-{time.time_ns()}:"
    server = Gunicorn(settings, tmp_path / "g.log", workers=2)
    try:
        client = sdk(server)
        video = client.videos.create(prompt="A red balloon", seconds="4")
        deadline = time.monotonic() + 30
        while client.videos.retrieve(video.id).status != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.videos.download_content(video.id).content == MP4
        assert [v.id for v in client.videos.list()] == [video.id]
    finally:
        log = server.stop()
    check_log(log)
    assert "tracker started" in log


# --- CPU-bound work off the loop, seen from inside a gevent-patched process ---------------

_OFF_THE_LOOP = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import base64

    import gevent

    from sora_proxy import offload, references, thumbnails
    from sora_proxy.fetch import FetchPolicy
    from sora_proxy.sizing import VideoSize

    png_path, video_path = sys.argv[1:3]
    ticks = 0

    def tick():
        global ticks
        while True:
            gevent.sleep(0.001)
            ticks += 1

    def ticks_during(job):
        before = ticks
        job()
        return ticks - before

    gevent.spawn(tick)
    gevent.sleep(0.01)
    png = open(png_path, "rb").read()
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    policy = FetchPolicy(max_bytes=20 * 1024 * 1024)
    print(json.dumps({
        "patched": offload.gevent_patched(),
        "data_uri": ticks_during(lambda: references.resolve_reference(uri, policy)),
        "fit": ticks_during(lambda: references.fit_image(
            references.load_image(png), VideoSize(1280, 720), "cover")),
        "thumbnail": ticks_during(lambda: thumbnails.make_thumbnail(video_path)),
        "spritesheet": ticks_during(lambda: thumbnails.make_spritesheet(video_path)),
    }))
    """
)


def hd_video(path: Path, seconds: int = 6, fps: int = 10) -> Path:
    """A 1920x1080 H.264 video of noise, key frames 3 s apart (so seeks decode on)."""
    output = av.open(str(path), "w")
    stream = output.add_stream("libx264", rate=fps)
    stream.width, stream.height = 1920, 1080
    stream.pix_fmt = "yuv420p"
    stream.options = {"g": str(fps * 3), "preset": "ultrafast"}
    for index in range(seconds * fps):
        frame = av.VideoFrame.from_image(Image.effect_noise((1920, 1080), 64).convert("RGB"))
        frame.pts = index
        for packet in stream.encode(frame):
            output.mux(packet)
    for packet in stream.encode():
        output.mux(packet)
    output.close()
    return path


def test_cpu_bound_work_leaves_the_loop_running(tmp_path, big_png):
    # In a gevent-patched process, a greenlet that ticks every millisecond keeps ticking
    # while each job runs; were a job run on the loop's own thread, it would not tick once.
    png = tmp_path / "big.png"
    png.write_bytes(big_png)
    video = hd_video(tmp_path / "hd.mp4")
    result = subprocess.run(
        [sys.executable, "-c", _OFF_THE_LOOP, str(png), str(video)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    ticks = json.loads(result.stdout)
    assert ticks.pop("patched") is True
    assert all(count > 0 for count in ticks.values()), ticks


# --- refusing what the config cannot use ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SORA_PROXY_WORKER_CLASS", "eventlet", "must be one of gthread, gevent"),
        ("SORA_PROXY_WORKER_CONNECTIONS", "lots", "must be a whole number"),
    ],
)
def test_an_unusable_worker_setting_stops_gunicorn_with_one_line(name, value, message):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
            "SORA_PROXY_BIND": "127.0.0.1:0",
            "SORA_PROXY_WORKER_CLASS": "gevent",
            name: value,
        },
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"sora-proxy: configuration error: {name}: {message}"
    ]
