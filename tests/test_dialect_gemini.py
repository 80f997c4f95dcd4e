"""The proxy in front of the Gemini (Veo) simulator, driven by the official ``openai`` SDK.

Through the proxy the caller sees OpenAI's Videos API; the simulator's recordings show the
Gemini wire: the model in the path, the key in ``x-goog-api-key`` (never ``?key=``), an integer
``durationSeconds``, ``instances``/``parameters``, the operation name polled as given.
"""

from __future__ import annotations

import base64
import io
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
from sora_proxy.simulator.gemini import (
    FAIL_MARKER,
    MODERATE_MARKER,
    RATE_LIMIT_MARKER,
    RETRY_DELAY_SECONDS,
    create_gemini_app,
)
from sora_proxy.simulator.gemini.operations import FILTERED_REASON
from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")
KEY = "AIza-upstream-gemini-0c1d"
ALICE = "sk-alice-gemini"
DEPLOYMENT = "veo-3.1-generate-preview"
LISTED = 'sizes = ["1280x720", "720x1280", "1920x1080", "1080x1920"]\nseconds = ["4", "6", "8"]\n'


@dataclass
class Stack:
    sim: SimulatorServer
    url: str

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=ALICE, max_retries=0)

    def sent(self, method: str | None = None) -> list:
        return [r for r in self.sim.state.requests if method is None or r.method == method]


@contextmanager
def _stack(tmp_path: Path, *, listed: str = LISTED, key: str = KEY) -> Iterator[Stack]:
    with SimulatorServer(app=create_gemini_app(api_key=KEY, seconds_per_step=0.1)) as sim:
        base = sim.base_url.removesuffix("/v1") + "/v1beta"
        upstreams = tmp_path / "gemini.toml"
        upstreams.write_text(
            f'[[upstream]]\nname = "veo"\nbase_url = "{base}"\ndialect = "gemini"\n'
            f'api_key = "{key}"\n[upstream.models."veo-3.1"]\ndeployment = "{DEPLOYMENT}"\n'
            + listed
        )
        proxy = create_app(
            {
                "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
                "SORA_PROXY_API_KEYS": f"alice:{ALICE}",
                "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/gemini.sqlite3",
                "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
                "SORA_PROXY_POLL_INTERVAL": "0.2",
            }
        )
        with served(proxy) as url:
            yield Stack(sim, url)


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    with _stack(tmp_path) as built:
        yield built


def test_create_poll_download_list_delete_on_the_gemini_wire(stack):
    client = stack.sdk()
    video = client.videos.create_and_poll(
        prompt="A paper boat", model="veo-3.1", size="1280x720", seconds="6", poll_interval_ms=100
    )
    assert video.status == "completed" and video.progress == 100 and video.error is None
    assert video.id.startswith("video_") and video.model == "veo-3.1"
    assert (video.prompt, video.size, video.seconds) == ("A paper boat", "1280x720", "6")
    assert client.videos.download_content(video.id).read() == MP4
    assert [item.id for item in client.videos.list()] == [video.id]
    assert client.videos.delete(video.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)

    create, *polls, download = stack.sent()
    assert (create.method, create.path) == (
        "POST",
        f"/v1beta/models/{DEPLOYMENT}:predictLongRunning",
    )
    assert create.json == {
        "instances": [{"prompt": "A paper boat"}],
        "parameters": {"aspectRatio": "16:9", "resolution": "720p", "durationSeconds": 6},
    }
    assert type(create.json["parameters"]["durationSeconds"]) is int
    assert create.header("Content-Type") == "application/json"
    name = stack.sim.state.list_videos()[0]["name"]
    assert polls and all((p.method, p.path) == ("GET", f"/v1beta/{name}") for p in polls)
    assert download.method == "GET" and download.path.endswith(":download")
    assert download.path.startswith("/v1beta/files/") and download.query == {"alt": ["media"]}
    for recorded in stack.sent():  # the key in its header; never the query, never the caller's
        assert recorded.header("x-goog-api-key") == KEY
        assert "key" not in recorded.query
        assert recorded.header("Authorization") is None and ALICE not in str(recorded.headers)
    assert not stack.sent("DELETE")  # list and delete are the proxy's own


def test_a_reference_image_becomes_instances_image(stack):
    png = make_image(720, 1280, "PNG")
    video = stack.sdk().videos.create(
        prompt="A cat",
        model="veo-3.1",
        size="720x1280",
        seconds="8",
        input_reference=("cat.png", io.BytesIO(png), "image/png"),
    )
    assert video.status == "queued" and video.progress == 0
    (create,) = stack.sent("POST")
    (instance,) = create.json["instances"]
    assert instance["prompt"] == "A cat"
    assert instance["image"]["mimeType"] == "image/png"
    assert base64.b64decode(instance["image"]["bytesBase64Encoded"]) == png
    assert create.json["parameters"] == {
        "aspectRatio": "9:16",
        "resolution": "720p",
        "durationSeconds": 8,
    }
    done = stack.sdk().videos.poll(video.id, poll_interval_ms=100)
    assert done.status == "completed"


@pytest.mark.parametrize("listed", [LISTED, 'sizes = ["1280x720"]\n'])
def test_seconds_the_model_cannot_make_are_a_400_before_anything_is_sent(tmp_path, listed):
    with _stack(tmp_path, listed=listed) as stack:
        with pytest.raises(openai.BadRequestError) as refused:
            stack.sdk().videos.create(prompt="long", model="veo-3.1", seconds="12")
        error = refused.value.body
        assert error["param"] == "seconds" and "4, 6, 8" in error["message"]
        assert stack.sent() == []


def test_a_size_veo_cannot_make_is_a_400_before_anything_is_sent(tmp_path):
    listed = 'sizes = ["1280x720", "1792x1024"]\nseconds = ["4", "6", "8"]\n'
    with _stack(tmp_path, listed=listed) as stack:
        with pytest.raises(openai.BadRequestError) as refused:
            stack.sdk().videos.create(prompt="wide", model="veo-3.1", size="1792x1024")
        assert refused.value.body["param"] == "size"
        assert stack.sent() == []


def test_a_safety_filtered_job_fails_as_moderation_blocked(stack):
    client = stack.sdk()
    video = client.videos.create_and_poll(
        prompt=f"x {MODERATE_MARKER}", model="veo-3.1", poll_interval_ms=100
    )
    assert video.status == "failed"
    assert video.error.code == "moderation_blocked" and video.error.message == FILTERED_REASON
    with pytest.raises(openai.ConflictError):
        client.videos.download_content(video.id)
    assert not [r for r in stack.sent() if ":download" in r.path]


def test_a_failed_operation_fails_with_the_grpc_code_mapped(stack):
    video = stack.sdk().videos.create_and_poll(
        prompt=f"x {FAIL_MARKER}", model="veo-3.1", poll_interval_ms=100
    )
    assert video.status == "failed"
    assert video.error.code == "internal_error" and "internal error" in video.error.message


def test_resource_exhausted_is_a_429_with_retry_after(stack):
    client = stack.sdk()
    with pytest.raises(openai.RateLimitError) as refused:
        client.videos.create(prompt=f"x {RATE_LIMIT_MARKER}", model="veo-3.1")
    assert refused.value.response.headers["retry-after"] == str(RETRY_DELAY_SECONDS)
    assert refused.value.body["code"] == "rate_limit_exceeded"
    assert [item.id for item in client.videos.list()] == []


def test_a_refused_upstream_key_is_the_operators_problem(tmp_path):
    with _stack(tmp_path, key="AIza-wrong") as stack:
        answer = requests.post(
            f"{stack.url}/v1/videos",
            json={"prompt": "x", "model": "veo-3.1"},
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=10,
        )
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "upstream_auth_failed"
        assert "AIza-wrong" not in answer.text


def test_unsupported_operations_are_refused_before_sending(stack):
    client = stack.sdk()
    video = client.videos.create_and_poll(prompt="mine", model="veo-3.1", poll_interval_ms=100)
    before = len(stack.sent())
    with pytest.raises(openai.BadRequestError) as refused:
        client.videos.remix(video.id, prompt="again")
    assert refused.value.body["code"] == "unsupported_by_upstream"
    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.download_content(video.id, variant="thumbnail")
    assert missing.value.body["code"] == "variant_unavailable"
    assert len(stack.sent()) == before


def test_an_operation_google_no_longer_knows_ends_expired(stack):
    video = stack.sdk().videos.create(prompt="slow", model="veo-3.1")
    (operation,) = stack.sim.state.list_videos()
    stack.sim.state.delete_video(operation["id"])
    done = stack.sdk().videos.poll(video.id, poll_interval_ms=100)
    assert done.status == "failed" and done.error.code == "expired"


def test_the_video_uri_is_asked_under_base_url_with_no_key_in_the_query(tmp_path):
    from sora_proxy.catalog import Upstream
    from sora_proxy.dialects.gemini import GeminiDialect

    dialect = GeminiDialect()
    base = "https://generativelanguage.googleapis.com/v1beta"
    upstream = Upstream("veo", base, 5.0, 60.0, dialect=dialect, api_key=KEY)

    def source(uri: str) -> str | None:
        found = dialect.content_source(upstream, {"id": "n", "result_urls": [uri]}, "video")
        return found.path if found else None

    assert source(f"{base}/files/abc123:download?alt=media&key=leak") == (
        "/files/abc123:download?alt=media"
    )
    # Another host never gets the key: only the file id is taken, asked on base_url.
    assert source("https://cdn.example/v1beta/files/zz9:download?alt=media") == (
        "/files/zz9:download?alt=media"
    )
    assert source("https://cdn.example/video.mp4") is None
    assert dialect.content_source(upstream, {"id": "n", "result_urls": []}, "video") is None
    sent = dialect.request(upstream, "GET", "/files/abc:download", headers={}, params={"key": "x"})
    assert sent.headers["x-goog-api-key"] == KEY and "key" not in sent.params
    nothing = dialect.read_job(upstream, 200, b'{"name": "models/m/operations/o", "done": true}')
    assert nothing.video["status"] == "failed" and nothing.video["error"]["code"] == "no_output"
