"""Nothing paid is lost or bought twice when the store fails around a paid POST.

Real gunicorn in front of the simulator, the official SDK (retries on) as the client, a real
redis-server stopped mid-request, and a SQLite store on a tmpfs that is filled up or remounted
read-only while the upstream works on the create.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import requests
from conftest import UPSTREAM_KEY
from redis_server import RedisServer
from servers import Gunicorn

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.simulator.records import FailureSpec

MP4, _, _ = load_asset("video")
KEY = "sk-durable-caller-5e1d"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: How long the upstream takes to answer a POST; the store fails in the meantime.
UPSTREAM_DELAY = 1.5


def _posts(sim: SimulatorServer, path: str) -> int:
    return sum(1 for r in sim.state.requests if r.method == "POST" and r.path == path)


def _spooled(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.json")) if spool.exists() else []


def _wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@contextlib.contextmanager
def _proxy(
    tmp_path: Path, sim: SimulatorServer, store_url: str, **extra: str
) -> Iterator[Gunicorn]:
    settings = {
        "SORA_PROXY_UPSTREAM_URL": sim.base_url,
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": f"alice:{KEY}",
        "SORA_PROXY_STORE_URL": store_url,
        "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
        **extra,
    }
    proxy = Gunicorn(settings, tmp_path / "gunicorn.log", workers=2)
    try:
        yield proxy
    finally:
        logs = proxy.stop()
        assert KEY not in logs and UPSTREAM_KEY not in logs
        assert "Traceback" not in logs, logs


def _sdk(proxy: Gunicorn) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=2, timeout=30)


def _during_upstream_work(sim: SimulatorServer, path: str, action: Callable[[], None]) -> None:
    """Arm a slow upstream answer on ``path`` and run ``action`` while it is being made."""
    sim.state.fail_next.append(FailureSpec(path_prefix=path, method="POST", delay=UPSTREAM_DELAY))
    threading.Timer(UPSTREAM_DELAY / 3, action).start()


def _retrievable(proxy: Gunicorn, video_id: str) -> bool:
    answer = requests.get(f"{proxy.url}/v1/videos/{video_id}", headers=AUTH, timeout=10)
    return answer.status_code == 200 and answer.json()["id"] == video_id


# -- Redis -----------------------------------------------------------------------------------


def test_redis_stopped_while_the_upstream_creates_loses_nothing(tmp_path):
    with SimulatorServer(seconds_per_step=0.05) as sim, RedisServer() as redis:
        with _proxy(tmp_path, sim, redis.url) as proxy:
            _during_upstream_work(sim, "/v1/videos", redis.stop)
            video = _sdk(proxy).videos.create(prompt="A paper boat")
            # One paid generation, answered to the caller although the record could not be
            # written; the SDK did not retry.
            assert _posts(sim, "/v1/videos") == 1
            assert video.id in sim.state.videos
            assert _spooled(tmp_path / "spool")
            redis.start()
            _wait_for(lambda: _retrievable(proxy, video.id))
            _wait_for(lambda: not _spooled(tmp_path / "spool"))
            listed = requests.get(f"{proxy.url}/v1/videos", headers=AUTH, timeout=10).json()
            assert [item["id"] for item in listed["data"]] == [video.id]
            assert _posts(sim, "/v1/videos") == 1


def test_redis_down_before_the_create_sends_nothing_upstream(tmp_path):
    with SimulatorServer(seconds_per_step=0.05) as sim, RedisServer() as redis:
        with _proxy(tmp_path, sim, redis.url) as proxy:
            redis.stop()
            with pytest.raises(openai.InternalServerError) as raised:
                _sdk(proxy).videos.create(prompt="A paper boat")
            assert raised.value.status_code == 503
            assert raised.value.body["code"] == "service_unavailable"
            assert _posts(sim, "/v1/videos") == 0
            redis.start()


def test_redis_stopped_during_an_upload_loses_nothing(tmp_path):
    with SimulatorServer(seconds_per_step=0.05) as sim, RedisServer() as redis:
        with _proxy(tmp_path, sim, redis.url) as proxy:
            _during_upstream_work(sim, "/v1/videos/edits", redis.stop)
            answer = requests.post(
                f"{proxy.url}/v1/videos/edits",
                headers=AUTH,
                timeout=30,
                data={"prompt": "make it snow"},
                files={"video": ("clip.mp4", MP4, "video/mp4")},
            )
            assert answer.status_code == 200, answer.text
            video_id = answer.json()["id"]
            assert _posts(sim, "/v1/videos/edits") == 1
            redis.start()
            _wait_for(lambda: _retrievable(proxy, video_id))


def test_idempotent_create_with_redis_stopped_is_answered_once_and_replayed(tmp_path):
    with SimulatorServer(seconds_per_step=0.05) as sim, RedisServer() as redis:
        with _proxy(tmp_path, sim, redis.url) as proxy:
            headers = {**AUTH, "Idempotency-Key": "create-once-7"}
            _during_upstream_work(sim, "/v1/videos", redis.stop)
            first = requests.post(
                f"{proxy.url}/v1/videos", json={"prompt": "p"}, headers=headers, timeout=30
            )
            assert first.status_code == 200, first.text
            redis.start()
            # The claim ended with the request: once the spool is replayed, a retry is a
            # replay of the first answer, never an in-flight 409 for 15 minutes, never a
            # second generation.
            _wait_for(lambda: not _spooled(tmp_path / "spool"))
            again = requests.post(
                f"{proxy.url}/v1/videos", json={"prompt": "p"}, headers=headers, timeout=30
            )
            assert again.status_code == 200, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json()["id"] == first.json()["id"]
            assert _posts(sim, "/v1/videos") == 1


def _keyed_app(upstream: SimulatorServer, redis: RedisServer, tmp_path: Path, **settings: str):
    from sora_proxy import create_app

    return create_app(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": f"alice:{KEY}",
            "SORA_PROXY_STORE_URL": redis.url,
            "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
            **settings,
        }
    )


def test_idempotency_claim_is_released_when_the_intent_cannot_be_written(tmp_path, upstream):
    """A store that takes the claim but then fails: the claim must not stay in flight."""
    with RedisServer() as redis:
        app = _keyed_app(upstream, redis, tmp_path)
        client = app.test_client()
        store = app.extensions["sora_proxy"].records.store
        original = store.begin_intent

        def failing_intent(intent, *, ttl):
            redis.stop()  # the store goes away between the claim and the intent
            return original(intent, ttl=ttl)

        store.begin_intent = failing_intent
        headers = {**AUTH, "Idempotency-Key": "k-released"}
        refused = client.post("/v1/videos", json={"prompt": "p"}, headers=headers)
        assert refused.status_code == 503
        assert upstream.state.requests == []
        store.begin_intent = original
        redis.start()
        app.extensions["sora_proxy"].records.writes.replay()
        accepted = client.post("/v1/videos", json={"prompt": "p"}, headers=headers)
        assert accepted.status_code == 200, accepted.get_data(as_text=True)
        assert len(upstream.state.requests) == 1


def test_retrieve_answers_when_the_store_cannot_write_its_refresh(upstream, tmp_path):
    with RedisServer() as redis:
        # Without the tracker a retrieve asks the upstream and refreshes the record itself.
        app = _keyed_app(upstream, redis, tmp_path, SORA_PROXY_TRACKER="off")
        client = app.test_client()
        video_id = client.post("/v1/videos", json={"prompt": "p"}, headers=AUTH).get_json()["id"]
        upstream.state.complete(video_id)
        # Reads work, every write is refused (no replica to acknowledge it).
        import redis as redis_client

        admin = redis_client.Redis.from_url(redis.url)
        admin.config_set("min-replicas-to-write", 1)
        with pytest.raises(redis_client.ResponseError):
            admin.set("probe", "x")
        answer = client.get(f"/v1/videos/{video_id}", headers=AUTH)
        assert answer.status_code == 200
        assert answer.get_json()["status"] == "completed"
        admin.config_set("min-replicas-to-write", 0)


# -- SQLite on a disk that fills up or turns read-only ----------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> None:
    """Take every free block of the tmpfs."""
    descriptor = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for block in (1 << 20, 65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, b"\0" * block)
    finally:
        os.close(descriptor)


def _remount(directory: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)


def test_sqlite_disk_full_during_a_create_loses_nothing(tmp_path):
    with _tmpfs(tmp_path / "disk", "4m") as disk, SimulatorServer(seconds_per_step=0.05) as sim:
        with _proxy(tmp_path, sim, f"sqlite:///{disk}/store.sqlite3") as proxy:
            client = _sdk(proxy)
            client.videos.create(prompt="warm-up")  # connections exist before the failure
            _during_upstream_work(sim, "/v1/videos", lambda: _fill(disk))
            video = client.videos.create(prompt="A paper boat")
            assert _posts(sim, "/v1/videos") == 2
            # A full disk may still take a small write on a retry (SQLite reuses its WAL once
            # the failed connection is dropped), else the write waits in the spool: either
            # way the record is not lost.
            (disk / "filler").unlink()
            _wait_for(lambda: _retrievable(proxy, video.id))
            _wait_for(lambda: not _spooled(tmp_path / "spool"))
            assert _posts(sim, "/v1/videos") == 2
        assert "disk is full" in (tmp_path / "gunicorn.log").read_text()


def test_sqlite_read_only_sends_nothing_then_recovers(tmp_path):
    """Linux refuses to remount a file system read-only while a file on it is open for
    writing, so the disk turns read-only before the workers opened the store (the master
    created it and closed it before forking). A worker's tracker opens the store as soon as
    the worker starts, so here the tracker is off."""
    with _tmpfs(tmp_path / "disk", "4m") as disk, SimulatorServer(seconds_per_step=0.05) as sim:
        store = f"sqlite:///{disk}/store.sqlite3"
        with _proxy(tmp_path, sim, store, SORA_PROXY_TRACKER="off") as proxy:
            _remount(disk, "ro")
            with pytest.raises(openai.InternalServerError) as raised:
                _sdk(proxy).videos.create(prompt="A paper boat")
            assert raised.value.status_code == 503
            assert _posts(sim, "/v1/videos") == 0
            _remount(disk, "rw")
            video = _sdk(proxy).videos.create(prompt="A paper boat")
            assert _posts(sim, "/v1/videos") == 1
            assert _retrievable(proxy, video.id)
        assert "SQLite store begin_intent failed" in (tmp_path / "gunicorn.log").read_text()


def test_deleted_sqlite_file_is_detected(tmp_path):
    with SimulatorServer(seconds_per_step=0.05) as sim:
        store = tmp_path / "data" / "store.sqlite3"
        with _proxy(tmp_path, sim, f"sqlite:///{store}") as proxy:
            created = requests.post(
                f"{proxy.url}/v1/videos", json={"prompt": "p"}, headers=AUTH, timeout=10
            )
            assert created.status_code == 200
            for leftover in store.parent.iterdir():
                leftover.unlink()
            time.sleep(5.1)  # readyz verdicts are cached for 5 s
            ready = requests.get(f"{proxy.url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["checks"]["store"] == "unavailable"
            refused = requests.post(
                f"{proxy.url}/v1/videos", json={"prompt": "p"}, headers=AUTH, timeout=10
            )
            assert refused.status_code == 503
            assert _posts(sim, "/v1/videos") == 1
            assert not store.exists()  # not silently replaced by an empty file
        log = (tmp_path / "gunicorn.log").read_text()
        assert "was deleted while the proxy runs" in log
