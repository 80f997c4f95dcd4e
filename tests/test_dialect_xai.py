"""The proxy in front of the xAI simulator, driven by the official openai SDK.

xAI answers a create with only ``request_id``, says ``pending`` (or nothing) while it works,
``done`` even when moderation kept the video, and puts the video at a public temporary URL;
through the proxy the SDK sees OpenAI's Videos API. The simulator's recordings show the wire
the dialect spoke (``shared/dialects/xai.md``).
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests
from images import make_image
from servers import served

from sora_proxy import create_app
from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.gateways.results import create_result_host_app
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.simulator.state import FailureSpec
from sora_proxy.simulator.xai import (
    EXPIRE_MARKER,
    FAIL_MARKER,
    MODERATED_MARKER,
    NO_CREDITS_MARKER,
    NO_STATUS_MARKER,
    create_xai_app,
)

MP4, _, _ = load_asset("video")
UPSTREAM_KEY = "xai-upstream-key-9c1d"
ALICE, BOB = "sk-alice-xai", "sk-bob-xai"
MODEL = "grok-imagine-video"


@dataclass
class Stack:
    """The xAI simulator, its result host, and the proxy in front of them."""

    sim: SimulatorServer
    results: SimulatorServer
    url: str

    def sdk(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def upstream(self, method: str | None = None) -> list:
        return [
            r
            for r in self.sim.state.requests
            if (method is None or r.method == method) and r.path.startswith("/v1/videos")
        ]


@contextmanager
def _stack(
    tmp_path: Path, *, configured_key: str = UPSTREAM_KEY, **settings: str
) -> Iterator[Stack]:
    with SimulatorServer(app=create_result_host_app()) as results:
        app = create_xai_app(
            api_key=UPSTREAM_KEY,
            seconds_per_step=0.1,
            result_base_url=results.base_url.removesuffix("/v1"),
        )
        with SimulatorServer(app=app) as sim:
            upstreams = tmp_path / "xai.toml"
            upstreams.write_text(
                f'[[upstream]]\nname = "xai"\nbase_url = "{sim.base_url}"\ndialect = "xai"\n'
                f'api_key = "{configured_key}"\n[upstream.models."{MODEL}"]\n'
                'sizes = ["1280x720", "720x1280", "848x480", "1920x1080"]\n'
                'seconds = ["4", "6", "8", "12", "20"]\n'
            )
            proxy = create_app(
                {
                    "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
                    "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
                    "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/xai.sqlite3",
                    "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
                    "SORA_PROXY_FETCH_ALLOW_PRIVATE": "true",
                    "SORA_PROXY_POLL_INTERVAL": "0.2",
                    **settings,
                }
            )
            with served(proxy) as url:
                yield Stack(sim, results, url)


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with _stack(tmp_path, **getattr(request, "param", {})) as built:
        yield built


def test_create_poll_download_list_delete_through_the_sdk(stack: Stack) -> None:
    client = stack.sdk()
    video = client.videos.create_and_poll(
        prompt="A paper boat", model=MODEL, size="1280x720", seconds="8", poll_interval_ms=100
    )
    assert video.status == "completed" and video.progress == 100
    assert video.id.startswith("video_") and video.model == MODEL
    assert video.prompt == "A paper boat" and video.size == "1280x720"
    assert video.seconds == "8"  # from video.duration
    assert video.error is None and video.completed_at and video.expires_at
    assert video.expires_at - video.completed_at == 24 * 3600
    assert client.videos.download_content(video.id).read() == MP4
    assert [item.id for item in client.videos.list()] == [video.id]
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)

    # The wire: one create at /v1/videos/generations, JSON, integer duration, xAI's names.
    (create,) = stack.upstream("POST")
    assert create.path == "/v1/videos/generations"
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "model": MODEL,
        "prompt": "A paper boat",
        "duration": 8,
        "resolution": "720p",
        "aspect_ratio": "16:9",
    }
    assert type(create.json["duration"]) is int
    request_id = stack.sim.state.list_videos()[0]["id"]
    polls = stack.upstream("GET")
    assert polls and {p.path for p in polls} == {f"/v1/videos/{request_id}"}
    assert not stack.upstream("DELETE")  # xAI has no delete: forgotten locally only
    for recorded in stack.upstream():
        assert recorded.header("Authorization") == f"Bearer {UPSTREAM_KEY}"
    # The public result URL served the bytes and never saw a key.
    (fetched,) = stack.results.state.requests
    assert fetched.method == "GET" and fetched.path.endswith(f"/xai-video-{request_id}.mp4")
    assert fetched.header("Authorization") is None
    assert UPSTREAM_KEY not in str(fetched.headers) and ALICE not in str(fetched.headers)


def test_create_with_a_reference_image_sends_image_url_as_a_data_uri(stack: Stack) -> None:
    png = make_image(720, 1280, "PNG")
    video = stack.sdk().videos.create(
        prompt="A cat",
        model=MODEL,
        size="720x1280",
        seconds="4",
        input_reference=("cat.png", io.BytesIO(png), "image/png"),
    )
    assert video.status == "queued" and video.progress == 0 and video.created_at
    assert video.seconds == "4" and video.size == "720x1280"
    (create,) = stack.upstream("POST")
    body = create.json
    assert set(body) == {"model", "prompt", "duration", "resolution", "aspect_ratio", "image"}
    assert body["duration"] == 4 and body["resolution"] == "720p"
    assert body["aspect_ratio"] == "9:16"
    prefix = "data:image/png;base64,"
    assert list(body["image"]) == ["url"] and body["image"]["url"].startswith(prefix)
    assert base64.b64decode(body["image"]["url"][len(prefix) :]) == png
    done = stack.sdk().videos.poll(video.id, poll_interval_ms=100)
    assert done.status == "completed"


def test_a_small_size_is_480p_and_text_fields_are_typed(stack: Stack) -> None:
    answer = requests.post(
        f"{stack.url}/v1/videos",
        files={
            "prompt": (None, "wide"),
            "model": (None, MODEL),
            "size": (None, "848x480"),
            "seconds": (None, "6"),
            "generate_audio": (None, "false"),
        },
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    (create,) = stack.upstream("POST")
    assert create.json["resolution"] == "480p" and create.json["aspect_ratio"] == "16:9"
    assert create.json["duration"] == 6 and create.json["generate_audio"] is False


@pytest.mark.parametrize(
    ("marker", "code"),
    [
        (FAIL_MARKER, "internal_error"),
        (MODERATED_MARKER, "moderation_blocked"),
        (EXPIRE_MARKER, "expired"),
    ],
)
def test_failures_end_failed_with_their_code(stack: Stack, marker: str, code: str) -> None:
    video = stack.sdk().videos.create_and_poll(
        prompt=f"ends {marker}", model=MODEL, seconds="4", poll_interval_ms=100
    )
    assert video.status == "failed"
    assert video.error is not None and video.error.code == code and video.error.message
    with pytest.raises(openai.ConflictError) as not_ready:
        stack.sdk().videos.download_content(video.id)
    assert not_ready.value.body["code"] == "video_not_ready"
    assert stack.results.state.requests == []


def test_a_poll_without_status_is_pending_never_failed(stack: Stack) -> None:
    client = stack.sdk()
    video = client.videos.create(prompt=f"quiet {NO_STATUS_MARKER}", model=MODEL, seconds="4")
    seen = []
    while video.status in ("queued", "in_progress"):
        seen.append(video.status)
        video = client.videos.retrieve(video.id)
    assert video.status == "completed"
    answered = [r for r in stack.sim.state.requests if r.method == "GET"]
    assert len(answered) >= 2  # at least one {"request_id"}-only answer came before "done"
    assert set(seen) == {"queued"}
    assert client.videos.download_content(video.id).read() == MP4


def test_out_of_credits_is_a_429_for_the_caller(stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as refused:
        stack.sdk().videos.create(prompt=f"pricey {NO_CREDITS_MARKER}", model=MODEL)
    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "insufficient_quota"
    assert refused.value.body["message"] == "You ran out of credits."
    assert stack.sdk().videos.list().data == []


# Without the tracker, the caller's retrieve is what polls (with the tracker, see test_tracker).
@pytest.mark.parametrize("stack", [{"SORA_PROXY_TRACKER": "off"}], indirect=True)
def test_a_rate_limited_poll_answers_from_the_store_with_its_retry_after(stack: Stack) -> None:
    video = stack.sdk().videos.create(prompt="busy", model=MODEL, seconds="4")
    stack.sim.state.fail_next.append(
        FailureSpec(
            path_prefix="/v1/videos/", method="GET", status=429, headers={"Retry-After": "3"}
        )
    )
    answer = requests.get(
        f"{stack.url}/v1/videos/{video.id}",
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    assert answer.headers["openai-poll-after-ms"] == "3000"
    assert stack.sim.state.fail_next == []  # the 429 was really answered upstream
    assert stack.sdk().videos.poll(video.id, poll_interval_ms=100).status == "completed"


def test_seconds_outside_one_to_fifteen_are_refused_before_sending(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        stack.sdk().videos.create(prompt="long", model=MODEL, seconds="20")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "seconds"
    unknown = requests.post(
        f"{stack.url}/v1/videos",
        json={"prompt": "x", "model": MODEL, "style": "noir"},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unsupported_by_upstream"
    assert stack.upstream() == []


def test_a_wrong_upstream_key_is_a_502_the_caller_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _stack(tmp_path, configured_key="xai-WRONG-key-77") as stack:
        with caplog.at_level(logging.ERROR, logger="sora_proxy"):
            with pytest.raises(openai.InternalServerError) as refused:
                stack.sdk().videos.create(prompt="A cat", model=MODEL, seconds="4")
        assert refused.value.status_code == 502
        assert refused.value.body["code"] == "upstream_auth_failed"
        assert "Incorrect" not in str(refused.value.body)
        assert "77" not in refused.value.body["message"]
        assert refused.value.response.headers["x-should-retry"] == "false"
        (sent,) = stack.upstream("POST")
        assert sent.header("Authorization") == "Bearer xai-WRONG-key-77"
        assert any("refused the proxy's key" in r.getMessage() for r in caplog.records)
        assert stack.sdk().videos.list().data == []


def test_other_callers_and_unsupported_operations(stack: Stack) -> None:
    alice, bob = stack.sdk(ALICE), stack.sdk(BOB)
    video = alice.videos.create_and_poll(
        prompt="mine", model=MODEL, seconds="4", poll_interval_ms=100
    )
    before = len(stack.sim.state.requests)
    with pytest.raises(openai.NotFoundError):
        bob.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        bob.videos.download_content(video.id)
    assert [item.id for item in bob.videos.list()] == []
    with pytest.raises(openai.BadRequestError) as remix:
        alice.videos.remix(video.id, prompt="again")
    assert remix.value.body["code"] == "unsupported_by_upstream"
    for path, extra in (("edits", {}), ("extensions", {"seconds": "4"})):
        answer = requests.post(
            f"{stack.url}/v1/videos/{path}",
            json={"prompt": "more", "video": {"id": video.id}, **extra},
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=10,
        )
        assert answer.status_code == 400, path
        assert answer.json()["error"]["code"] == "unsupported_by_upstream"
    with pytest.raises(openai.NotFoundError) as thumbnail:
        alice.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.value.body["code"] == "variant_unavailable"
    assert len(stack.sim.state.requests) == before


def test_an_upstream_400_reaches_the_caller_in_openais_envelope(stack: Stack) -> None:
    # 1080p exists only on grok-imagine-video-1.5: xAI refuses it with {code, error}.
    with pytest.raises(openai.BadRequestError) as refused:
        stack.sdk().videos.create(prompt="big", model=MODEL, size="1920x1080", seconds="4")  # type: ignore[arg-type]
    body = refused.value.body
    assert body["code"] == "invalid_request" and body["type"] == "invalid_request_error"
    assert "resolution" in body["message"]
    (create,) = stack.upstream("POST")
    assert create.json["resolution"] == "1080p" and create.json["aspect_ratio"] == "16:9"
    assert stack.sdk().videos.list().data == []


def test_a_rate_limited_create_passes_on_the_upstreams_retry_after(stack: Stack) -> None:
    stack.sim.state.fail_next.append(
        FailureSpec(
            path_prefix="/v1/videos/generations",
            method="POST",
            status=429,
            headers={"Retry-After": "7"},
        )
    )
    answer = requests.post(
        f"{stack.url}/v1/videos",
        json={"prompt": "later", "model": MODEL},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    )
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    assert stack.sdk().videos.list().data == []  # nothing recorded: nothing was accepted
