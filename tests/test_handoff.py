"""Hand-off to nginx (SORA_PROXY_HANDOFF=nginx): client -> the shipped nginx site -> gunicorn,
which decides each download and hands its bytes to nginx (X-Accel-Redirect), against the
OpenAI and xAI simulators and an xAI result host, all on loopback."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests
from nginx import Nginx
from servers import Gunicorn
from upstream_pair import openai_and_xai

from sora_proxy.archive import LocalArchive
from sora_proxy.simulator import SimulatorServer, large_body_sha256
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.store import OwnedResource, open_store

MB = 1024 * 1024
MP4, _, _ = load_asset("video")
ALICE, BOB = "sk-alice-handoff-3c1d", "sk-bob-handoff-9e0f"
OPENAI_KEY, XAI_KEY = "sk-upstream-openai-handoff-51aa", "xai-upstream-handoff-key-0b7c"
SECRETS = (OPENAI_KEY, XAI_KEY, "Bearer sk-upstream", "X-Sora-Handoff")
CAP = 2


@dataclass
class Site:
    """One gunicorn and the shipped nginx site in front of it."""

    proxy: Gunicorn
    nginx: Nginx

    def get(self, path: str, key: str = ALICE, **headers: str) -> requests.Response:
        return requests.get(
            f"{self.nginx.url}{path}",
            headers={"Authorization": f"Bearer {key}", **headers},
            timeout=30,
        )


@dataclass
class Stack:
    openai_sim: SimulatorServer
    xai_sim: SimulatorServer
    results: SimulatorServer
    archive_dir: Path
    store_url: str
    site: Site  # hand-off, no stream cap; 2 workers x 4 threads
    capped: Site  # hand-off, SORA_PROXY_STREAMS_PER_CALLER=2; one worker

    def archive(self) -> LocalArchive:
        return LocalArchive(self.archive_dir)

    def own(self, video_id: str, owner: str = "alice") -> None:
        store = open_store(self.store_url)
        try:
            store.record(OwnedResource(video_id, owner, "openai", "video", time.time(), None))
        finally:
            store.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("handoff")
    with openai_and_xai(OPENAI_KEY, XAI_KEY, seconds_per_step=0.05) as pair:
        upstreams = root / "upstreams.toml"
        upstreams.write_text(pair.toml())
        archive_dir = root / "archive"
        store_url = f"sqlite:///{root}/store.sqlite3"
        settings = {
            "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
            "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
            "SORA_PROXY_STORE_URL": store_url,
            "SORA_PROXY_FETCH_ALLOW_PRIVATE": "true",
            "SORA_PROXY_POLL_INTERVAL": "0.2",
            "SORA_PROXY_ARCHIVE_URL": f"file://{archive_dir}",
            "SORA_PROXY_HANDOFF": "nginx",
            "SORA_PROXY_TRUSTED_PROXIES": "1",
            "SORA_PROXY_THREADS": "4",
        }
        sites = []
        for name, cap, workers in (("site", 0, 2), ("capped", CAP, 1)):
            folder = root / name
            (folder / "nginx").mkdir(parents=True)
            proxy = Gunicorn(
                {**settings, "SORA_PROXY_STREAMS_PER_CALLER": str(cap)},
                folder / "gunicorn.log",
                workers=workers,
            )
            nginx = Nginx(
                f"127.0.0.1:{proxy.port}",
                folder / "nginx",
                archive_dir=archive_dir,
                streams_per_caller=cap,
            )
            sites.append(Site(proxy, nginx))
        try:
            yield Stack(pair.openai, pair.xai, pair.results, archive_dir, store_url, *sites)
        finally:
            for site in sites:
                site.nginx.stop()
                log = site.proxy.stop()
                assert OPENAI_KEY not in log and XAI_KEY not in log and ALICE not in log
                logs = site.nginx.logs()
                assert "[alert]" not in logs and "[emerg]" not in logs


def _sdk(site: Site, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{site.nginx.url}/v1", api_key=key, max_retries=0)


def _archived_video(stack: Stack, model: str) -> str:
    """A video made through nginx and kept in the archive (the workers' tracker copies it)."""
    video = _sdk(stack.site).videos.create(model=model, prompt="a dune", seconds="4")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if stack.archive().stat(f"videos/{video.id}/spritesheet") is not None:
            return video.id
        time.sleep(0.1)
    raise AssertionError(f"{video.id} not archived")


def _proxy_log(site: Site, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in site.proxy.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return json.loads(line)
        time.sleep(0.05)
    raise AssertionError(f"no proxy log line for {request_id}")


def _no_secrets(response: requests.Response) -> None:
    shown = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    for secret in SECRETS:
        assert secret.lower() not in shown.lower()
        assert secret.encode() not in response.content


def test_archived_content_is_sent_by_nginx(stack: Stack) -> None:
    video_id = _archived_video(stack, "sora-2")
    stored = stack.archive().stat(f"videos/{video_id}/video")
    assert stored is not None
    kept = stack.archive().local_path(f"videos/{video_id}/video")
    assert kept is not None
    whole_bytes = kept.read_bytes()
    request_id = f"handoff-{uuid.uuid4()}"
    path = f"/v1/videos/{video_id}/content"

    whole = stack.site.get(path, **{"X-Request-ID": request_id})
    assert whole.status_code == 200 and whole.content == whole_bytes
    assert whole.headers["ETag"] == f'"{stored.etag}"'  # the proxy's SHA-256, not nginx's
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Content-Disposition"] == f'attachment; filename="{video_id}.mp4"'
    assert whole.headers["Cache-Control"] == "private, max-age=3600"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Last-Modified"]
    _no_secrets(whole)
    entry = _proxy_log(stack.site, request_id)
    assert entry["handoff"] == "nginx" and entry["handoff_bytes"] == stored.size
    assert entry["bytes_out"] == 0  # gunicorn sent no body
    logged = stack.site.nginx.access_entry(request_id=request_id)
    assert logged["bytes_out"] >= stored.size and logged["uri"] == path

    part = stack.site.get(path, Range="bytes=100-1099")
    assert part.status_code == 206 and part.content == whole_bytes[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{stored.size}"
    tail = stack.site.get(path, Range="bytes=-500")
    assert tail.status_code == 206 and tail.content == whole_bytes[-500:]
    honoured = stack.site.get(path, Range="bytes=0-9", **{"If-Range": f'"{stored.etag}"'})
    assert honoured.status_code == 206 and honoured.content == whole_bytes[:10]
    stale = stack.site.get(path, Range="bytes=0-9", **{"If-Range": '"another"'})
    assert stale.status_code == 200 and stale.content == whole_bytes  # streamed by the proxy

    unchanged = stack.site.get(path, **{"If-None-Match": f'"{stored.etag}"'})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == f'"{stored.etag}"'
    beyond = stack.site.get(path, Range=f"bytes={stored.size + 10}-")
    assert beyond.status_code == 416 and beyond.json()["error"]["code"] == "range_not_satisfiable"
    # Another caller still cannot see it.
    assert stack.site.get(path, key=BOB).status_code == 404


def test_upstream_content_is_relayed_by_nginx_with_the_proxys_key(stack: Stack) -> None:
    size = 16 * MB
    video_id = stack.openai_sim.state.add_large_video(size, seed=3)
    stack.own(video_id)
    request_id = f"handoff-{uuid.uuid4()}"
    before = len(stack.openai_sim.state.requests)
    response = stack.site.get(
        f"/v1/videos/{video_id}/content", **{"X-Request-ID": request_id, "Cookie": "c=1"}
    )
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == large_body_sha256(size, seed=3)
    _no_secrets(response)
    (seen,) = stack.openai_sim.state.requests[before:]
    assert seen.header("Authorization") == f"Bearer {OPENAI_KEY}"  # the proxy's, from nginx
    assert seen.header("Cookie") is None and seen.header("X-Sora-Proxy-Handoff") is None
    assert seen.header("Host") == stack.openai_sim.base_url.split("/")[2]
    entry = _proxy_log(stack.site, request_id)
    assert entry["handoff"] == "nginx" and entry["upstream"] == "openai"

    part = stack.site.get(f"/v1/videos/{video_id}/content", Range="bytes=100-1099")
    assert part.status_code == 206 and len(part.content) == 1000
    assert part.headers["Content-Range"] == f"bytes 100-1099/{size}"
    _no_secrets(part)


def test_a_result_url_is_fetched_by_nginx_without_credentials(stack: Stack) -> None:
    video_id = _archived_video(stack, "grok-imagine-video")
    shutil.rmtree(stack.archive_dir / "videos" / video_id)  # now only the result host has it
    before = len(stack.results.state.requests)
    request_id = f"handoff-{uuid.uuid4()}"
    whole = stack.site.get(f"/v1/videos/{video_id}/content", **{"X-Request-ID": request_id})
    assert whole.status_code == 200 and whole.content == MP4
    _no_secrets(whole)
    part = stack.site.get(f"/v1/videos/{video_id}/content", Range="bytes=100-1099")
    assert part.status_code == 206 and part.content == MP4[100:1100]
    seen = stack.results.state.requests[before:]
    assert len(seen) == 4  # a one-byte probe by the proxy, then nginx's fetch; twice
    assert all(r.header("Authorization") is None for r in seen)
    assert all(r.header("x-goog-api-key") is None and r.header("Cookie") is None for r in seen)
    assert _proxy_log(stack.site, request_id)["handoff"] == "nginx"


def test_no_handoff_without_the_nginx_marker(stack: Stack) -> None:
    video_id = stack.openai_sim.state.add_large_video(MB, seed=4)
    stack.own(video_id)
    # Straight to gunicorn, with hand-off lookalikes: an ordinary streamed answer.
    for headers in (
        {"X-Accel-Redirect": "/_sora_proxy_handoff/archive/videos"},
        {"X-Sora-Proxy-Handoff": "/elsewhere"},
    ):
        response = requests.get(
            f"{stack.site.proxy.url}/v1/videos/{video_id}/content",
            headers={"Authorization": f"Bearer {ALICE}", **headers},
            timeout=30,
        )
        assert response.status_code == 200 and len(response.content) == MB
        assert "X-Accel-Redirect" not in response.headers
        _no_secrets(response)


def test_a_client_cannot_reach_the_internal_locations(stack: Stack) -> None:
    video_id = _archived_video(stack, "sora-2")
    for path in (
        f"/_sora_proxy_handoff/archive/videos/{video_id}/video",
        "/_sora_proxy_handoff/relay/",
        "/_sora_proxy_handoff/fetch/",
    ):
        response = requests.get(f"{stack.site.nginx.url}{path}", timeout=10)
        assert response.status_code == 404
        assert response.content != MP4


def test_slow_readers_hold_no_gunicorn_thread(stack: Stack) -> None:
    video_id = stack.openai_sim.state.add_large_video(64 * MB, seed=6)
    stack.own(video_id)
    readers = []
    try:
        for _ in range(24):  # 2 workers x 4 threads = 8 gunicorn threads
            reader = requests.get(
                f"{stack.site.nginx.url}/v1/videos/{video_id}/content",
                headers={"Authorization": f"Bearer {ALICE}"},
                stream=True,
                timeout=30,
            )
            assert reader.status_code == 200
            assert len(reader.raw.read(1024)) == 1024
            readers.append(reader)
        retrieved = requests.get(
            f"{stack.site.nginx.url}/v1/videos", headers={"Authorization": f"Bearer {ALICE}"},
            timeout=20,
        )  # fmt: skip
        assert retrieved.status_code == 200
    finally:
        for reader in readers:
            reader.close()


def _open_streams(url: str, key: str, count: int) -> list[requests.Response]:
    streams = []
    for _ in range(count):
        response = requests.get(
            url, headers={"Authorization": f"Bearer {key}"}, stream=True, timeout=30
        )
        assert response.status_code == 200, response.text
        streams.append(response)
    return streams


@pytest.mark.parametrize("through", ["nginx", "proxy"])
def test_the_stream_cap_refuses_one_more_stream_of_a_caller(stack: Stack, through: str) -> None:
    video_id = stack.openai_sim.state.add_large_video(64 * MB, seed=7)
    stack.own(video_id)
    bobs = stack.openai_sim.state.add_large_video(64 * MB, seed=8)
    stack.own(bobs, owner="bob")
    base = stack.capped.nginx.url if through == "nginx" else stack.capped.proxy.url
    streams = _open_streams(f"{base}/v1/videos/{video_id}/content", ALICE, CAP)
    try:
        refused = requests.get(
            f"{base}/v1/videos/{video_id}/content",
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=30,
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        assert refused.headers["Retry-After"] == "1"
        streams += _open_streams(f"{base}/v1/videos/{bobs}/content", BOB, 1)  # bob still may
    finally:
        for stream in streams:
            stream.close()
    # Closed streams are given back (the client left): alice may download again.
    deadline = time.monotonic() + 10
    while True:
        again = requests.get(
            f"{base}/v1/videos/{video_id}/content",
            headers={"Authorization": f"Bearer {ALICE}", "Range": "bytes=0-9"},
            timeout=30,
        )
        if again.status_code == 206 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert again.status_code == 206 and len(again.content) == 10


def test_only_a_loopback_peer_with_the_marker_gets_a_handoff(make_app, upstream) -> None:
    video_id = upstream.state.add_large_video(MB, seed=9)
    client = make_app(
        upstream_api_key=OPENAI_KEY, allow_anonymous="true", handoff="nginx", trusted_proxies="1"
    ).test_client()
    headers = {"X-Sora-Proxy-Handoff": "/_sora_proxy_handoff"}
    # A forwarded loopback address does not count: the socket's own peer decides.
    for peer, forwarded, handed in (
        ("127.0.0.1", "198.51.100.7", True),
        ("192.0.2.9", "127.0.0.1", False),
    ):
        response = client.get(
            f"/v1/videos/{video_id}/content",
            headers={**headers, "X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": peer},
        )
        assert ("X-Accel-Redirect" in response.headers) is handed
        assert (response.data == b"") is handed
        if not handed:
            assert len(response.data) == MB
            assert OPENAI_KEY not in str(response.headers)


def test_handoff_needs_a_trusted_proxy() -> None:
    from sora_proxy.errors import ConfigError
    from sora_proxy.settings import load_settings

    with pytest.raises(ConfigError, match="SORA_PROXY_HANDOFF"):
        load_settings(
            {"SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9", "SORA_PROXY_HANDOFF": "nginx"}
        )
