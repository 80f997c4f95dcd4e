"""The tracker across processes and hosts: gunicorn instances sharing one Redis.

Two instances x 2 workers follow 50 videos on two dialects with no client polling: no video is
ever polled by two trackers at once (the simulators record each poll's start and end), every
video ends, one verified event per video reaches the receiver, and each is archived once. A
worker killed with SIGKILL while copying a video into the archive: the copy completes later
in another worker, and no partial bytes are ever served.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from servers import Gunicorn
from upstream_pair import openai_and_xai, upstreams_toml
from webhook_receiver import WebhookReceiver

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.large import large_body_sha256
from sora_proxy.simulator.state import FailureSpec

ALICE = "sk-alice-cluster"
OPENAI_KEY, XAI_KEY = "sk-upstream-openai-cluster", "xai-upstream-key-cluster"


def _settings(tmp_path: Path, upstreams: str, receiver: WebhookReceiver, **extra: str) -> dict:
    path = tmp_path / "upstreams.toml"
    path.write_text(upstreams)
    return {
        "SORA_PROXY_UPSTREAMS_FILE": str(path),
        "SORA_PROXY_API_KEYS": f"alice:{ALICE}",
        "SORA_PROXY_FETCH_ALLOW_PRIVATE": "true",
        "SORA_PROXY_POLL_INTERVAL": "0.3",
        "SORA_PROXY_TRACKER_LEASE": "3",
        "SORA_PROXY_ARCHIVE_URL": f"file://{tmp_path / 'archive'}",
        "SORA_PROXY_WEBHOOK_URL": receiver.url,
        "SORA_PROXY_WEBHOOK_SECRET": receiver.secret,
        "SORA_PROXY_WEBHOOK_ALLOW_PRIVATE": "true",
        **extra,
    }


def _instance(tmp_path: Path, name: str, settings: dict, workers: int = 2) -> Gunicorn:
    folder = tmp_path / name
    folder.mkdir()
    return Gunicorn(settings, folder / "gunicorn.log", workers=workers)


def _create(url: str, model: str, prompt: str) -> str:
    answer = requests.post(
        f"{url}/v1/videos",
        json={"model": model, "prompt": prompt, "seconds": "4", "size": "1280x720"},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _overlaps(requests_seen: list) -> list[str]:
    """Paths polled by two callers at once: a poll that started before the previous one of
    the same video was answered."""
    by_path = defaultdict(list)
    for seen in requests_seen:
        if seen.method == "GET" and "/content" not in seen.path:
            by_path[seen.path].append(seen)
    found = []
    for path, polls in by_path.items():
        polls.sort(key=lambda r: r.received_at)
        for first, second in zip(polls, polls[1:], strict=False):
            if first.answered_at is None or first.answered_at > second.received_at:
                found.append(path)
    return found


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


def test_two_instances_on_one_redis_follow_fifty_videos(
    tmp_path: Path, redis_server, receiver: WebhookReceiver
) -> None:
    with openai_and_xai(OPENAI_KEY, XAI_KEY, seconds_per_step=0.4) as pair:
        settings = _settings(
            tmp_path,
            pair.toml(),
            receiver,
            SORA_PROXY_STORE_URL=redis_server.url,
            SORA_PROXY_STORE_PREFIX=f"cluster{uuid.uuid4().hex}:",
        )
        instances = [_instance(tmp_path, name, settings) for name in ("a", "b")]
        try:
            jobs = [
                (instances[n % 2].url, "sora-2" if n < 25 else "grok-imagine-video")
                for n in range(50)
            ]
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(lambda job: _create(job[0], job[1], "a harbour at dawn"), jobs))
            events = receiver.wait_for(50, timeout=120)
            archive = tmp_path / "archive" / "videos"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                kept = [archive / v / "spritesheet" for v in ids]
                if all(path.exists() for path in kept):
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # room for a second copy or event, if there were one
        finally:
            logs = [instance.stop() for instance in instances]

        # Every video ended (completed) and its event arrived once, verified by the SDK.
        assert sorted(event["data"]["id"] for event in events.values()) == sorted(ids)
        assert {event["type"] for event in events.values()} == {"video.completed"}
        assert all(d.verified for d in receiver.deliveries)
        assert len(receiver.deliveries) == 50

        # No video was ever polled by two trackers at once.
        assert _overlaps(pair.openai.state.requests) == []
        assert _overlaps(pair.xai.state.requests) == []
        xai_polls = [r for r in pair.xai.state.requests if r.method == "GET"]
        assert xai_polls, "the xAI jobs were polled"

        # Each video archived once: one download per variant at the OpenAI simulator, one
        # fetch per result URL at the result host; the rest made from the archived video.
        downloads = Counter(
            (r.path, r.query.get("variant", ["video"])[0])
            for r in pair.openai.state.requests
            if r.method == "GET" and r.path.endswith("/content")
        )
        assert len(downloads) == 25 * 3 and set(downloads.values()) == {1}
        fetched = Counter(r.path for r in pair.results.state.requests if r.method == "GET")
        assert len(fetched) == 25 and set(fetched.values()) == {1}
        for video_id in ids:
            for variant in ("video", "thumbnail", "spritesheet"):
                assert (tmp_path / "archive" / "videos" / video_id / variant).exists()
        for log in logs:
            assert "Traceback" not in log


def _worker_pids(master: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_worker_killed_mid_archive_leaves_no_partial_bytes_and_the_copy_completes(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    size, seed = 24 << 20, 7
    expected = large_body_sha256(size, seed)
    with SimulatorServer(api_key=OPENAI_KEY, seconds_per_step=0.5) as sim:
        settings = _settings(tmp_path, upstreams_toml(sim.base_url, OPENAI_KEY), receiver)
        proxy = _instance(tmp_path, "proxy", settings, workers=1)
        try:
            video_id = _create(proxy.url, "sora-2", "a long river")
            sim.state.videos[video_id]["_large"] = {"video": (size, seed)}
            sim.state.fail_next.append(
                FailureSpec(
                    path_prefix=f"/v1/videos/{video_id}/content", method="GET", chunk_delay=0.3
                )
            )
            served_bodies: list[tuple[int, str]] = []
            stop = threading.Event()

            def read_content() -> None:
                while not stop.is_set():
                    try:
                        answer = requests.get(
                            f"{proxy.url}/v1/videos/{video_id}/content",
                            headers={"Authorization": f"Bearer {ALICE}"},
                            timeout=60,
                        )
                    except requests.RequestException:
                        continue  # the worker serving it was the one killed: nothing served
                    if answer.status_code == 200:
                        served_bodies.append(
                            (len(answer.content), hashlib.sha256(answer.content).hexdigest())
                        )
                    time.sleep(0.2)

            # The copy starts, slowly; the worker making it is killed halfway through.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                streams = [s for s in sim.state.content_streams if s.video_id == video_id]
                if any(s.bytes_sent >= 4 << 20 for s in streams):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the archive copy never started")
            reader = threading.Thread(target=read_content, daemon=True)
            reader.start()
            final = tmp_path / "archive" / "videos" / video_id / "video"
            assert not final.exists()
            (worker,) = _worker_pids(proxy.process)
            os.kill(worker, signal.SIGKILL)

            # A new worker takes the task once the dead one's lease ran out.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not final.exists():
                time.sleep(0.2)
            assert final.exists(), "the archive copy never completed"
            time.sleep(1.0)
            stop.set()
            reader.join(timeout=70)
            digest = hashlib.sha256(final.read_bytes()).hexdigest()
            assert digest == expected

            # Served from the archive once the upstream's copy is gone; byte-exact.
            sim.state.delete_video(video_id)
            answer = requests.get(
                f"{proxy.url}/v1/videos/{video_id}/content",
                headers={"Authorization": f"Bearer {ALICE}"},
                timeout=60,
            )
            assert answer.status_code == 200
            assert hashlib.sha256(answer.content).hexdigest() == expected
        finally:
            stop_log = proxy.stop()
        # Every body a client got in full was the whole video, never a part of it.
        assert served_bodies, "content was read while the copy was being made"
        assert set(served_bodies) == {(size, expected)}
        assert "Traceback" not in stop_log
        # Only the finished file is ever at the final name; partial files are elsewhere.
        leftovers = [p.name for p in final.parent.iterdir() if p.name.startswith("video.partial")]
        assert len(leftovers) <= 1
