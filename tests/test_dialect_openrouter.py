"""The proxy in front of the OpenRouter simulator, driven by the official openai SDK.

OpenRouter answers a create 202 with ``{id, polling_url, status}`` (a relative polling URL),
says ``pending`` / ``in_progress`` / ``completed`` / ``failed`` / ``cancelled`` / ``expired``,
gives a failure's ``error`` as a string, and puts the video at a signed storage URL (no key)
and at its keyed ``/content?index=0``; through the proxy the SDK sees OpenAI's Videos API.
The simulator's recordings show the wire the dialect spoke (``shared/dialects/openrouter.md``).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests
from images import make_image
from servers import served

from sora_proxy import create_app
from sora_proxy.catalog import Upstream
from sora_proxy.dialects import OpenRouterDialect
from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.gateways.results import create_result_host_app
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.simulator.openrouter import (
    CANCEL_MARKER,
    FAIL_MARKER,
    MODERATED_MARKER,
    NO_CREDITS_MARKER,
    NO_STORED_COPY_MARKER,
    RATE_LIMIT_MARKER,
    RETRY_AFTER_SECONDS,
    create_openrouter_app,
)

MP4, _, _ = load_asset("video")
UPSTREAM_KEY = "sk-or-v1-upstream-key-77ab"
ALICE, BOB = "sk-alice-or", "sk-bob-or"
MODEL = "openai/sora-2-pro"
STEP = 0.1


@dataclass
class Stack:
    """The OpenRouter simulator, its storage host, and the proxy in front of them."""

    sim: SimulatorServer
    storage: SimulatorServer
    url: str

    def sdk(self, key: str = ALICE) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def upstream(self, method: str | None = None) -> list:
        return [
            r
            for r in self.sim.state.requests
            if (method is None or r.method == method) and r.path.startswith("/api/v1/videos")
        ]

    def job(self) -> dict:
        (job,) = self.sim.state.list_videos()
        return job


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    settings = getattr(request, "param", {})  # extra settings, by indirect parametrization
    with SimulatorServer(app=create_result_host_app()) as storage:
        app = create_openrouter_app(
            api_key=UPSTREAM_KEY,
            seconds_per_step=STEP,
            storage_base_url=storage.base_url.removesuffix("/v1"),
        )
        with SimulatorServer(app=app) as sim:
            upstreams = tmp_path / "openrouter.toml"
            api = sim.base_url.removesuffix("/v1") + "/api/v1"
            upstreams.write_text(
                f'[[upstream]]\nname = "openrouter"\nbase_url = "{api}"\n'
                f'dialect = "openrouter"\napi_key = "{UPSTREAM_KEY}"\n'
                f'[upstream.models."{MODEL}"]\ndeployment = "{MODEL}"\n'
                'sizes = ["1280x720", "720x1280", "1792x1024", "1024x1792"]\n'
                # 6 is not a Sora 2 Pro duration at OpenRouter: it lets a test see its 400.
                'seconds = ["4", "6", "8", "12"]\n'
            )
            proxy = create_app(
                {
                    "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
                    "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
                    "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/openrouter.sqlite3",
                    "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
                    "SORA_PROXY_FETCH_ALLOW_PRIVATE": "true",
                    "SORA_PROXY_POLL_INTERVAL": "0.2",
                    **settings,
                }
            )
            with served(proxy) as url:
                yield Stack(sim, storage, url)


def test_create_poll_download_list_delete_through_the_sdk(stack: Stack) -> None:
    client = stack.sdk()
    video = client.videos.create_and_poll(
        prompt="A paper boat", model=MODEL, size="1280x720", seconds="8", poll_interval_ms=100
    )
    assert video.status == "completed" and video.progress == 100
    assert video.id.startswith("video_") and video.model == MODEL
    assert video.prompt == "A paper boat" and video.size == "1280x720" and video.seconds == "8"
    assert video.error is None and video.completed_at and video.expires_at
    job = stack.job()
    assert video.created_at == int(job["id"].split("-")[2])  # from gen-vid-<unix>-...
    extra = video.to_dict()
    assert extra["usage"] == {"cost": pytest.approx(0.30 * 8), "is_byok": False}
    assert extra["generation_id"].startswith("gen-")
    assert client.videos.download_content(video.id).read() == MP4
    assert [item.id for item in client.videos.list()] == [video.id]
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)

    # The wire: one JSON create at /api/v1/videos, integer duration, OpenRouter's names.
    (create,) = stack.upstream("POST")
    assert create.path == "/api/v1/videos"
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "model": MODEL,
        "prompt": "A paper boat",
        "duration": 8,
        "resolution": "720p",
        "aspect_ratio": "16:9",
    }
    assert type(create.json["duration"]) is int
    polls = stack.upstream("GET")
    assert polls and {p.path for p in polls} == {f"/api/v1/videos/{job['id']}"}
    assert not stack.upstream("DELETE")  # OpenRouter has no delete: forgotten locally only
    for recorded in stack.upstream():
        assert recorded.header("Authorization") == f"Bearer {UPSTREAM_KEY}"
    # The signed storage URL served the bytes and never saw a key.
    (fetched,) = stack.storage.state.requests
    assert fetched.method == "GET" and fetched.path.endswith(f"/{job['id']}.mp4")
    assert fetched.header("Authorization") is None
    assert UPSTREAM_KEY not in str(fetched.headers) and ALICE not in str(fetched.headers)


def test_a_reference_image_is_the_first_frame_as_a_data_uri(stack: Stack) -> None:
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
    assert set(body) == {
        "model",
        "prompt",
        "duration",
        "resolution",
        "aspect_ratio",
        "frame_images",
    }
    assert body["duration"] == 4 and body["resolution"] == "720p"
    assert body["aspect_ratio"] == "9:16"
    (frame,) = body["frame_images"]
    assert frame["type"] == "image_url" and frame["frame_type"] == "first_frame"
    prefix = "data:image/png;base64,"
    assert frame["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(frame["image_url"]["url"][len(prefix) :]) == png
    assert stack.sdk().videos.poll(video.id, poll_interval_ms=100).status == "completed"


def test_a_size_without_an_aspect_word_goes_as_size(stack: Stack) -> None:
    video = stack.sdk().videos.create(prompt="wide", model=MODEL, size="1792x1024", seconds="12")
    (create,) = stack.upstream("POST")
    assert create.json["size"] == "1792x1024" and create.json["duration"] == 12
    assert "resolution" not in create.json and "aspect_ratio" not in create.json
    assert video.size == "1792x1024"


def test_without_a_stored_copy_the_content_comes_from_the_keyed_route(stack: Stack) -> None:
    client = stack.sdk()
    video = client.videos.create_and_poll(
        prompt=f"x {NO_STORED_COPY_MARKER}", model=MODEL, seconds="4", poll_interval_ms=100
    )
    assert video.status == "completed"
    assert client.videos.download_content(video.id).read() == MP4
    content = stack.upstream("GET")[-1]
    assert content.path == f"/api/v1/videos/{stack.job()['id']}/content"
    assert content.query == {"index": ["0"]}
    assert content.header("Authorization") == f"Bearer {UPSTREAM_KEY}"
    assert stack.storage.state.requests == []


@pytest.mark.parametrize(
    ("marker", "code", "words"),
    [
        (FAIL_MARKER, "generation_failed", "failed"),
        (MODERATED_MARKER, "moderation_blocked", "moderation"),
        (CANCEL_MARKER, "cancelled", "cancelled"),
    ],
)
def test_failures_end_failed_with_their_code(
    stack: Stack, marker: str, code: str, words: str
) -> None:
    video = stack.sdk().videos.create_and_poll(
        prompt=f"ends {marker}", model=MODEL, seconds="4", poll_interval_ms=100
    )
    assert video.status == "failed"
    assert video.error is not None and video.error.code == code
    assert words in video.error.message.lower()  # OpenRouter's error string, verbatim
    with pytest.raises(openai.ConflictError) as not_ready:
        stack.sdk().videos.download_content(video.id)
    assert not_ready.value.body["code"] == "video_not_ready"
    assert stack.storage.state.requests == []


def test_an_expired_job_is_failed_with_code_expired(stack: Stack) -> None:
    client = stack.sdk()
    video = client.videos.create(prompt="slow to fetch", model=MODEL, seconds="4")
    job = stack.job()
    with stack.sim.state.lock:  # the job completed long ago and its output is gone
        job["_outcome"] = "expired"
        job["_started"] -= 100 * STEP
    done = client.videos.poll(video.id, poll_interval_ms=100)
    assert done.status == "failed" and done.error is not None
    assert done.error.code == "expired" and "expired" in done.error.message


def test_expired_after_completed_makes_the_download_a_410(stack: Stack) -> None:
    client = stack.sdk()
    video = client.videos.create_and_poll(
        prompt=f"x {NO_STORED_COPY_MARKER}", model=MODEL, seconds="4", poll_interval_ms=100
    )
    assert video.status == "completed"
    job = stack.job()
    with stack.sim.state.lock:
        job["_outcome"] = "expired"
        job["_started"] -= 100 * STEP
    with pytest.raises(openai.APIStatusError) as gone:
        client.videos.download_content(video.id)
    assert gone.value.status_code == 410


# Without the tracker, the caller's retrieve is what polls (with the tracker, see test_tracker).
@pytest.mark.parametrize("stack", [{"SORA_PROXY_TRACKER": "off"}], indirect=True)
def test_a_rate_limited_poll_answers_from_the_store_with_its_retry_after(stack: Stack) -> None:
    video = stack.sdk().videos.create(prompt=f"busy {RATE_LIMIT_MARKER}", model=MODEL, seconds="4")
    answer = requests.get(
        f"{stack.url}/v1/videos/{video.id}",
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    assert answer.headers["openai-poll-after-ms"] == str(RETRY_AFTER_SECONDS * 1000)
    (limited,) = stack.upstream("GET")
    assert limited.path == f"/api/v1/videos/{stack.job()['id']}"
    assert stack.job()["_rate_limited"] == 0  # the 429 was really answered upstream
    assert stack.sdk().videos.poll(video.id, poll_interval_ms=100).status == "completed"


def test_no_credits_is_a_429_insufficient_quota(stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as refused:
        stack.sdk().videos.create(prompt=f"pricey {NO_CREDITS_MARKER}", model=MODEL, seconds="4")
    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "insufficient_quota"
    assert "Insufficient credits" in refused.value.body["message"]
    assert stack.sdk().videos.list().data == []


def test_an_unsupported_duration_is_the_upstreams_400_in_openais_envelope(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        stack.sdk().videos.create(prompt="six", model=MODEL, seconds="6")  # type: ignore[arg-type]
    body = refused.value.body
    assert body["type"] == "invalid_request_error" and body["code"] == "invalid_request"
    assert body["param"] == "seconds" and "duration" in body["message"]
    (create,) = stack.upstream("POST")
    assert create.json["duration"] == 6
    assert stack.sdk().videos.list().data == []


def test_other_callers_and_unsupported_operations(stack: Stack) -> None:
    alice, bob = stack.sdk(ALICE), stack.sdk(BOB)
    video = alice.videos.create_and_poll(
        prompt="mine", model=MODEL, seconds="4", poll_interval_ms=100
    )
    before = len(stack.sim.state.requests)
    with pytest.raises(openai.NotFoundError):
        bob.videos.retrieve(video.id)
    assert [item.id for item in bob.videos.list()] == []
    with pytest.raises(openai.BadRequestError) as remix:
        alice.videos.remix(video.id, prompt="again")
    assert remix.value.body["code"] == "unsupported_by_upstream"
    unknown = requests.post(
        f"{stack.url}/v1/videos",
        json={"prompt": "x", "model": MODEL, "style": "noir"},
        headers={"Authorization": f"Bearer {ALICE}"},
        timeout=10,
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unsupported_by_upstream"
    with pytest.raises(openai.NotFoundError) as thumbnail:
        alice.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.value.body["code"] == "variant_unavailable"
    assert len(stack.sim.state.requests) == before


def _upstream(base_url: str = "https://openrouter.ai/api/v1") -> Upstream:
    return Upstream("or", base_url, 5.0, 60.0, dialect=OpenRouterDialect())


def test_polling_urls_relative_or_absolute_stay_under_base_url() -> None:
    dialect, upstream = OpenRouterDialect(), _upstream()
    job_id = "gen-vid-1764633600-abcdefghij0123456789"
    handle = {"id": job_id}
    relative = {**handle, "polling_url": f"/api/v1/videos/{job_id}"}
    absolute = {**handle, "polling_url": f"https://openrouter.ai/api/v1/videos/{job_id}"}
    elsewhere = {**handle, "polling_url": f"https://evil.example/api/v1/videos/{job_id}"}
    assert dialect.poll_path(upstream, relative) == f"/videos/{job_id}"
    assert dialect.poll_path(upstream, absolute) == f"/videos/{job_id}"
    assert dialect.poll_path(upstream, elsewhere) == f"/videos/{job_id}"  # no key elsewhere
    assert dialect.poll_path(upstream, handle) == f"/videos/{job_id}"


def test_a_signed_url_past_expires_at_falls_back_to_the_keyed_route() -> None:
    dialect, upstream = OpenRouterDialect(), _upstream()
    answer = {
        "id": "gen-vid-1764633600-abcdefghij0123456789",
        "polling_url": "/api/v1/videos/gen-vid-1764633600-abcdefghij0123456789",
        "status": "completed",
        "urls": ["https://storage.example/signed.mp4?sig=1"],
        "unsigned_urls": [
            "https://openrouter.ai/api/v1/videos/gen-vid-1764633600-abcdefghij0123456789"
            "/content?index=0"
        ],
        "expires_at": int(time.time()) + 60,
    }
    fresh = dialect.read_job(upstream, 200, json.dumps(answer).encode())
    source = dialect.content_source(upstream, fresh.handle(), "video")
    assert source is not None and source.url == answer["urls"][0] and source.path is None
    answer["expires_at"] = int(time.time()) - 1
    stale = dialect.read_job(upstream, 200, json.dumps(answer).encode())
    source = dialect.content_source(upstream, stale.handle(), "video")
    assert source is not None and source.url is None
    assert source.path == "/videos/gen-vid-1764633600-abcdefghij0123456789/content?index=0"
    assert dialect.content_source(upstream, stale.handle(), "thumbnail") is None
