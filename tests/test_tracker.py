"""Every video followed to its end, in one proxy process: the tracker polls with no client
polling, delivers one signed event per finished video (verified by the official ``openai``
SDK), archives the bytes, and serves them after the upstream's copy is gone.

Real sockets throughout: the OpenAI and xAI simulators, the xAI result host, a webhook
receiver, and (for the S3 archive) moto's S3 server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from PIL import Image
from servers import served
from upstream_pair import openai_and_xai
from webhook_receiver import WebhookReceiver

from sora_proxy import create_app
from sora_proxy.archive import Archive, open_archive
from sora_proxy.simulator import FAIL_MARKER, SimulatorServer
from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")
THUMBNAIL, _, _ = load_asset("thumbnail")
SPRITESHEET, _, _ = load_asset("spritesheet")
ALICE, BOB = "sk-alice-tracker", "sk-bob-tracker"
OPENAI_KEY, XAI_KEY = "sk-upstream-openai-4f1e", "xai-upstream-key-77aa"


@dataclass
class Stack:
    openai_sim: SimulatorServer
    xai_sim: SimulatorServer
    results: SimulatorServer
    receiver: WebhookReceiver
    url: str
    archive_dir: Path
    store_path: Path
    archive_url: str

    def archive(self) -> Archive:
        return open_archive(self.archive_url, str(self.archive_dir))

    def sdk(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def get(self, path: str, key: str = ALICE, **headers: str) -> requests.Response:
        return requests.get(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
        )

    def polls(self, sim: SimulatorServer, upstream_id: str) -> list[Any]:
        return [
            r
            for r in sim.state.requests
            if r.method == "GET" and r.path.rstrip("/").endswith(f"/videos/{upstream_id}")
        ]

    def wait_archived(self, video_id: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            video = self.sdk().videos.retrieve(video_id)
            kept = self.archive().stat(f"videos/{video_id}/spritesheet")
            if (
                kept is not None
                and video.expires_at
                and video.expires_at > time.time() + 86400 * 29
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"{video_id} not archived after {timeout} s")


@contextmanager
def _stack(
    tmp_path: Path,
    *,
    seconds_per_step: float = 0.1,
    receiver_up: bool = True,
    archive_url: str | None = None,
    **settings: str,
) -> Iterator[Stack]:
    receiver = WebhookReceiver()
    if receiver_up:
        receiver.start()
    with openai_and_xai(OPENAI_KEY, XAI_KEY, seconds_per_step=seconds_per_step) as pair:
        upstreams = tmp_path / "upstreams.toml"
        upstreams.write_text(pair.toml())
        archive_dir = tmp_path / "archive"
        archive_url = archive_url or f"file://{archive_dir}"
        config = {
            "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
            "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
            "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
            "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
            "SORA_PROXY_FETCH_ALLOW_PRIVATE": "true",
            "SORA_PROXY_POLL_INTERVAL": "0.2",
            "SORA_PROXY_TRACKER_LEASE": "5",
            "SORA_PROXY_ARCHIVE_URL": archive_url,
            "SORA_PROXY_WEBHOOK_URL": receiver.url,
            "SORA_PROXY_WEBHOOK_SECRET": receiver.secret,
            "SORA_PROXY_WEBHOOK_ALLOW_PRIVATE": "true",
            **settings,
        }
        proxy = create_app(config)
        try:
            with served(proxy) as url:
                yield Stack(
                    pair.openai,
                    pair.xai,
                    pair.results,
                    receiver,
                    url,
                    archive_dir,
                    tmp_path / "store.sqlite3",
                    archive_url,
                )
        finally:
            state = proxy.extensions["sora_proxy"]
            if state.tracker is not None:
                state.tracker.stop()
            receiver.stop()


def _create(stack: Stack, model: str, prompt: str, key: str = ALICE) -> str:
    seconds = "4"
    video = stack.sdk(key).videos.create(
        model=model, prompt=prompt, seconds=seconds, size="1280x720"
    )
    return video.id


def _kick(stack: Stack) -> None:
    """One request, so the tracker (started on a worker's first proxy request) runs."""
    assert stack.get("/v1/videos/models").status_code == 200


def test_every_video_ends_with_one_verified_event_and_no_client_polling(tmp_path: Path) -> None:
    with _stack(tmp_path) as stack:
        done = [_create(stack, "sora-2", "a lighthouse") for _ in range(2)]
        done += [_create(stack, "grok-imagine-video", "a kite") for _ in range(2)]
        failed = [
            _create(stack, "sora-2", f"a storm {FAIL_MARKER}"),
            _create(stack, "grok-imagine-video", f"a storm {FAIL_MARKER}"),
        ]
        events = stack.receiver.wait_for(6, timeout=30)
        time.sleep(1.0)  # room for a duplicate, if there were one

        by_video = {event["data"]["id"]: event for event in events.values()}
        assert set(by_video) == set(done + failed)
        for video_id in done:
            assert by_video[video_id]["type"] == "video.completed"
        for video_id in failed:
            assert by_video[video_id]["type"] == "video.failed"
        for event in by_video.values():
            assert event["object"] == "event" and event["id"].startswith("evt_")
            assert isinstance(event["created_at"], int)
        # Exactly one delivery per event: every one was accepted the first time.
        assert len(stack.receiver.deliveries) == 6
        assert all(d.verified for d in stack.receiver.deliveries)

        # Nobody polled through the proxy, yet the store knows every end.
        client = stack.sdk()
        for video_id in done:
            assert client.videos.retrieve(video_id).status == "completed"
        for video_id in failed:
            video = client.videos.retrieve(video_id)
            assert video.status == "failed" and video.error is not None and video.error.code
        # The OpenAI-shaped upstream's own code, as it said it.
        assert client.videos.retrieve(failed[0]).error.code == "generation_failed"
        # Polls stop once a video ended: no poll of a finished video after its event.
        for sim in (stack.openai_sim, stack.xai_sim):
            count = len(sim.state.requests)
            time.sleep(1.0)
            later = [r for r in sim.state.requests[count:] if r.method == "GET"]
            assert [r.path for r in later if "/content" not in r.path] == []


def test_a_timeout_fails_the_video_with_one_event(tmp_path: Path) -> None:
    with _stack(tmp_path, seconds_per_step=3600, SORA_PROXY_JOB_TIMEOUT="1.5") as stack:
        video_id = _create(stack, "grok-imagine-video", "an endless render")
        other = _create(stack, "sora-2", "another endless render")
        events = stack.receiver.wait_for(2, timeout=20)
        time.sleep(1.0)
        assert sorted(e["type"] for e in events.values()) == ["video.failed", "video.failed"]
        assert len(stack.receiver.deliveries) == 2
        for vid in (video_id, other):
            video = stack.sdk().videos.retrieve(vid)
            assert video.status == "failed"
            assert video.error is not None and video.error.code == "timeout"


def test_receiver_down_for_a_while_gets_every_event_after_it_returns(tmp_path: Path) -> None:
    with _stack(tmp_path, receiver_up=False, SORA_PROXY_WEBHOOK_RETRY_SCHEDULE="0.5,1") as stack:
        ids = [_create(stack, "sora-2", f"a tide {n}") for n in range(3)]
        _kick(stack)
        time.sleep(4.0)  # the videos end; every attempt meanwhile is refused
        assert stack.receiver.deliveries == []
        stack.receiver.start()
        events = stack.receiver.wait_for(3, timeout=20)
        assert {e["data"]["id"] for e in events.values()} == set(ids)
        # One webhook-id per event however many attempts it took.
        assert len({d.webhook_id for d in stack.receiver.deliveries}) == 3


@pytest.fixture(params=["local", "s3"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The archive: the default local folder, or a bucket on moto's S3 server."""
    if request.param == "local":
        return None
    s3 = request.getfixturevalue("s3_server")
    request.getfixturevalue("aws_env")
    bucket = f"videos-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/proxy?endpoint_url={s3.url}&region=us-east-1"


def test_content_is_served_from_the_archive_after_the_upstream_copy_is_gone(
    tmp_path: Path, archive_url: str | None
) -> None:
    with _stack(tmp_path, archive_url=archive_url) as stack:
        openai_id = _create(stack, "sora-2", "a glacier")
        xai_id = _create(stack, "grok-imagine-video", "a canyon")
        stack.receiver.wait_for(2, timeout=30)
        stack.wait_archived(openai_id)
        stack.wait_archived(xai_id)

        # The upstream copies go: the OpenAI simulator forgets its video, the result host
        # stops serving xAI's.
        for sim_video in list(stack.openai_sim.state.videos):
            stack.openai_sim.state.delete_video(sim_video)
        stack.results.stop()

        for video_id in (openai_id, xai_id):
            _check_archived_content(stack, video_id)
        # OpenAI's own variants were copied as they are.
        assert stack.get(f"/v1/videos/{openai_id}/content?variant=thumbnail").content == THUMBNAIL
        assert (
            stack.get(f"/v1/videos/{openai_id}/content?variant=spritesheet").content == SPRITESHEET
        )
        # xAI has none: they were made from the video, WebP as OpenAI's are.
        for variant in ("thumbnail", "spritesheet"):
            made = stack.get(f"/v1/videos/{xai_id}/content?variant={variant}")
            assert made.headers["Content-Type"] == "image/webp"
            assert Image.open(io.BytesIO(made.content)).format == "WEBP"
        # Every variant, whole and in part, byte-exact.
        for video_id in (openai_id, xai_id):
            for variant in ("thumbnail", "spritesheet"):
                path = f"/v1/videos/{video_id}/content?variant={variant}"
                whole = stack.get(path).content
                kept = b"".join(stack.archive().read(f"videos/{video_id}/{variant}"))
                assert whole == kept and len(whole) > 200
                part = stack.get(path, Range="bytes=10-109")
                assert part.status_code == 206 and part.content == whole[10:110]

        # The caller's expires_at is the archive's retention now.
        video = stack.sdk().videos.retrieve(xai_id)
        stored = stack.archive().stat(f"videos/{xai_id}/video")
        assert stored is not None and video.expires_at == int(stored.stored_at + 30 * 86400)

        # Another caller still cannot see it, archive or not.
        assert stack.get(f"/v1/videos/{openai_id}/content", key=BOB).status_code == 404

        # A delete removes the archived bytes.
        stack.sdk().videos.delete(xai_id)
        for variant in ("video", "thumbnail", "spritesheet"):
            assert stack.archive().stat(f"videos/{xai_id}/{variant}") is None
        assert stack.archive().stat(f"videos/{openai_id}/video") is not None


def _check_archived_content(stack: Stack, video_id: str) -> None:
    whole = stack.get(f"/v1/videos/{video_id}/content")
    assert whole.status_code == 200 and whole.content == MP4
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes"
    etag = whole.headers["ETag"]
    assert etag.strip('"') == hashlib.sha256(MP4).hexdigest()
    part = stack.get(f"/v1/videos/{video_id}/content", Range="bytes=100-1099")
    assert part.status_code == 206 and part.content == MP4[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(MP4)}"
    tail = stack.get(f"/v1/videos/{video_id}/content", Range="bytes=-500")
    assert tail.status_code == 206 and tail.content == MP4[-500:]
    unchanged = stack.get(f"/v1/videos/{video_id}/content", **{"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    # The SDK's own download, from the archive.
    assert stack.sdk().videos.download_content(video_id).read() == MP4


def test_retrieve_answers_from_the_store_and_the_upstream_is_polled_by_the_tracker_alone(
    tmp_path: Path,
) -> None:
    with _stack(tmp_path, seconds_per_step=1.0, SORA_PROXY_POLL_INTERVAL="0.5") as stack:
        video_id = _create(stack, "sora-2", "a slow sunrise")
        client = stack.sdk()
        started = time.monotonic()
        while client.videos.retrieve(video_id).status != "completed":
            assert time.monotonic() - started < 20
        elapsed = time.monotonic() - started
        polls = stack.polls(stack.openai_sim, video_id)
        # A client polling flat out costs the upstream one poll per interval at most.
        assert len(polls) <= elapsed / 0.5 + 2
        for first, second in zip(polls, polls[1:], strict=False):
            assert first.answered_at is not None and first.answered_at <= second.received_at


def test_the_store_and_logs_never_hold_the_webhook_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with _stack(tmp_path) as stack:
        _create(stack, "sora-2", "a quiet harbour")
        stack.receiver.wait_for(1, timeout=30)
        secret = stack.receiver.secret
        with sqlite3.connect(stack.store_path) as db:
            dump = "\n".join(db.iterdump())
        assert secret not in dump and secret.removeprefix("whsec_") not in dump
        assert secret.removeprefix("whsec_") not in caplog.text


def test_readyz_shows_the_trackers_backlog_and_an_unusable_archive(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the archive folder should be")
    with _stack(tmp_path, archive_url=f"file://{blocked}") as stack:
        _create(stack, "sora-2", "a backlog")
        ready = requests.get(f"{stack.url}/readyz", timeout=10).json()
        assert ready["tracker"]["mode"] == "workers"
        assert set(ready["tracker"]["pending"]) <= {"poll", "archive", "webhook"}
        assert any(warning.startswith("archive unavailable") for warning in ready["warnings"])


def test_deliveries_polls_and_copies_are_counted_in_metrics(tmp_path: Path) -> None:
    with _stack(tmp_path, SORA_PROXY_METRICS="true") as stack:
        video_id = _create(stack, "grok-imagine-video", "a counted kite")
        stack.receiver.wait_for(1, timeout=30)
        stack.wait_archived(video_id)
        text = stack.get("/metrics").text
    assert 'sora_proxy_webhook_deliveries_total{outcome="delivered"} 1.0' in text
    assert 'sora_proxy_videos_ended_total{status="completed",upstream="xai"} 1.0' in text
    assert 'sora_proxy_archived_total{source="upstream",variant="video"} 1.0' in text
    assert 'sora_proxy_archived_total{source="made",variant="thumbnail"} 1.0' in text
    assert 'sora_proxy_archived_total{source="made",variant="spritesheet"} 1.0' in text
    assert 'sora_proxy_tracker_polls_total{outcome="ok",upstream="xai"}' in text
