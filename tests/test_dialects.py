"""The proxy in front of each simulated dialect, driven by the official openai SDK.

new-api, LiteLLM and reseller-style gateways and vLLM-Omni each answer differently from OpenAI;
through the proxy the SDK sees OpenAI's Videos API: create (with and without a reference),
``create_and_poll`` to a real end, byte-exact downloads, list and delete. The simulators'
recordings show what the dialect sent.
"""

from __future__ import annotations

import io
import math
import threading
import time
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
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.simulator.vllm_omni import create_vllm_omni_app

MP4, _, _ = load_asset("video")
UPSTREAM_KEY = "sk-dialect-upstream-0b7e"
ALICE, BOB = "sk-alice-dialects", "sk-bob-dialects"
SERVED = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
STYLES = ["new-api", "litellm", "reseller", "vllm-omni"]


@dataclass
class Stack:
    """A simulated upstream, its result host, and the proxy in front of them."""

    style: str
    sim: SimulatorServer
    results: SimulatorServer
    url: str
    poll_interval: float

    def sdk(self, key: str = ALICE, retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=retries)

    def upstream_requests(self, method: str | None = None, prefix: str = "/v1/videos") -> list:
        return [
            r
            for r in self.sim.state.requests
            if (method is None or r.method == method) and r.path.startswith(prefix)
        ]


def _toml(style: str, base_url: str) -> str:
    if style == "vllm-omni":
        return (
            f'[[upstream]]\nname = "wan"\nbase_url = "{base_url}"\ndialect = "vllm-omni"\n'
            f'api_key = "{UPSTREAM_KEY}"\n'
            f'[upstream.models."wan-2.2"]\ndeployment = "{SERVED}"\n'
            'sizes = ["832x480", "1280x720"]\nseconds = ["4", "8"]\n'
        )
    return (
        f'[[upstream]]\nname = "gw"\nbase_url = "{base_url}"\ndialect = "openai"\n'
        f'gateway = "{style}"\napi_key = "{UPSTREAM_KEY}"\n[upstream.models."sora-2"]\n'
    )


@contextmanager
def _stack(style: str, tmp_path: Path, poll_interval: float = 0.2) -> Iterator[Stack]:
    if style == "vllm-omni":
        result_host = SimulatorServer()  # vLLM-Omni has no result URLs: stays unused
    else:
        from sora_proxy.simulator.gateways.results import create_result_host_app

        result_host = SimulatorServer(app=create_result_host_app())
    with result_host as results:
        if style == "vllm-omni":
            app = create_vllm_omni_app(
                served_model=SERVED, api_key=UPSTREAM_KEY, seconds_per_step=0.1
            )
        else:
            from sora_proxy.simulator.gateways import create_gateway_app

            app = create_gateway_app(
                style,
                api_key=UPSTREAM_KEY,
                seconds_per_step=0.1,
                result_base_url=results.base_url.removesuffix("/v1"),
            )
        with SimulatorServer(app=app) as sim:
            upstreams = tmp_path / f"{style}.toml"
            upstreams.write_text(_toml(style, sim.base_url))
            proxy = create_app(
                {
                    "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
                    "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
                    "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/{style}.sqlite3",
                    "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
                    "SORA_PROXY_FETCH_ALLOW_PRIVATE": "true",
                    "SORA_PROXY_POLL_INTERVAL": str(poll_interval),
                }
            )
            with served(proxy) as url:
                yield Stack(style, sim, results, url, poll_interval)


@pytest.fixture(params=STYLES)
def stack(request, tmp_path) -> Iterator[Stack]:
    with _stack(request.param, tmp_path) as built:
        yield built


def _model(stack: Stack) -> str:
    return "wan-2.2" if stack.style == "vllm-omni" else "sora-2"


def test_create_poll_download_list_delete_through_the_sdk(stack):
    client = stack.sdk()
    video = client.videos.create_and_poll(
        prompt="A paper boat", model=_model(stack), poll_interval_ms=100
    )
    assert video.status == "completed" and video.progress == 100
    assert video.id.startswith("video_") and video.model == _model(stack)
    assert video.prompt == "A paper boat"  # kept from the request where the upstream is silent
    assert client.videos.download_content(video.id).read() == MP4
    assert [item.id for item in client.videos.list()] == [video.id]
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    # Every upstream request carried the upstream's key; none carried the caller's.
    for recorded in stack.upstream_requests():
        assert recorded.header("Authorization") == f"Bearer {UPSTREAM_KEY}"
    # The result host, when the dialect has one, served the bytes and never saw a key.
    if stack.style in ("new-api", "reseller"):
        assert [r.method for r in stack.results.state.requests] == ["GET"]
        assert not [r for r in stack.upstream_requests("GET") if r.path.endswith("/content")]
    for recorded in stack.results.state.requests:
        assert recorded.header("Authorization") is None
        assert UPSTREAM_KEY not in str(recorded.headers)


def test_create_with_a_reference_image_sends_the_dialects_form(stack):
    png = (
        make_image(1280, 720, "PNG") if stack.style != "vllm-omni" else make_image(832, 480, "PNG")
    )
    size = "832x480" if stack.style == "vllm-omni" else "1280x720"
    video = stack.sdk().videos.create(
        prompt="A cat",
        model=_model(stack),
        size=size,
        input_reference=("cat.png", io.BytesIO(png), "image/png"),
    )
    assert video.status in ("queued", "in_progress")
    (create,) = stack.upstream_requests("POST")
    assert create.path == "/v1/videos"
    assert create.files["input_reference"][0].data == png
    model = create.form["model"][0]
    assert model == (SERVED if stack.style == "vllm-omni" else "sora-2")


def test_a_failed_job_ends_failed_with_a_code_never_early(stack):
    from sora_proxy.simulator import FAIL_MARKER

    video = stack.sdk().videos.create_and_poll(
        prompt=f"boom {FAIL_MARKER}", model=_model(stack), poll_interval_ms=100
    )
    assert video.status == "failed"
    assert video.error is not None and video.error.code and video.error.message


def test_twenty_clients_polling_cause_one_upstream_poll_per_interval(tmp_path):
    with _stack("new-api", tmp_path, poll_interval=1.0) as stack:
        video = stack.sdk().videos.create(prompt="slow", model="sora-2")
        stack.sim.state.clear_requests()
        deadline = time.monotonic() + 3.0
        answers: list[int] = []

        def poll() -> None:
            while time.monotonic() < deadline:
                answer = requests.get(
                    f"{stack.url}/v1/videos/{video.id}",
                    headers={"Authorization": f"Bearer {ALICE}"},
                    timeout=10,
                )
                answers.append(answer.status_code)
                assert answer.headers["openai-poll-after-ms"] == "1000"

        threads = [threading.Thread(target=poll) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        polls = len(stack.upstream_requests("GET"))
        assert set(answers) == {200} and len(answers) > 40
        assert polls <= math.ceil(3.0 / 1.0) + 1


def test_other_callers_and_unsupported_operations(stack):
    alice, bob = stack.sdk(ALICE), stack.sdk(BOB)
    video = alice.videos.create_and_poll(prompt="mine", model=_model(stack), poll_interval_ms=100)
    before = len(stack.sim.state.requests)
    with pytest.raises(openai.NotFoundError):
        bob.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        bob.videos.download_content(video.id)
    with pytest.raises(openai.NotFoundError):
        bob.videos.delete(video.id)
    with pytest.raises(openai.NotFoundError):
        bob.videos.remix(video.id, prompt="theirs")
    extend = requests.post(
        f"{stack.url}/v1/videos/extensions",
        json={"prompt": "more", "seconds": "4", "video": {"id": video.id}},
        headers={"Authorization": f"Bearer {BOB}"},
        timeout=10,
    )
    assert extend.status_code == 404
    assert [item.id for item in bob.videos.list()] == []
    assert len(stack.sim.state.requests) == before
    if stack.style == "vllm-omni":
        with pytest.raises(openai.BadRequestError) as refused:
            alice.videos.remix(video.id, prompt="again")
        assert refused.value.body["code"] == "unsupported_by_upstream"
        assert len(stack.sim.state.requests) == before
    if stack.style == "reseller":  # it has thumbnails, through its own /content
        thumbnail = alice.videos.download_content(video.id, variant="thumbnail").read()
        assert thumbnail[:4] == b"RIFF" and thumbnail[8:12] == b"WEBP"
    else:  # the others would answer the MP4: the proxy says there is none
        with pytest.raises(openai.NotFoundError) as refused:
            alice.videos.download_content(video.id, variant="thumbnail")
        assert refused.value.body["code"] == "variant_unavailable"


def test_idempotent_creates_race_to_one_upstream_create(tmp_path):
    with _stack("vllm-omni", tmp_path) as stack:
        answers: list[dict] = []

        def create() -> None:
            answer = requests.post(
                f"{stack.url}/v1/videos",
                json={"prompt": "once", "model": "wan-2.2"},
                headers={"Authorization": f"Bearer {ALICE}", "Idempotency-Key": "race-1"},
                timeout=30,
            )
            answers.append({"status": answer.status_code, "body": answer.json()})

        threads = [threading.Thread(target=create) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(stack.upstream_requests("POST")) == 1
        ids = {a["body"]["id"] for a in answers if a["status"] == 200}
        assert len(ids) == 1
        assert all(a["status"] in (200, 409) for a in answers)


def test_a_range_of_a_result_url_video(tmp_path):
    with _stack("new-api", tmp_path) as stack:
        video = stack.sdk().videos.create_and_poll(
            prompt="range", model="sora-2", poll_interval_ms=100
        )
        partial = requests.get(
            f"{stack.url}/v1/videos/{video.id}/content",
            headers={"Authorization": f"Bearer {ALICE}", "Range": "bytes=0-99"},
            timeout=10,
        )
        assert partial.status_code == 206
        assert partial.content == MP4[:100]
        assert partial.headers["Content-Range"] == f"bytes 0-99/{len(MP4)}"
        (fetched,) = stack.results.state.requests
        assert fetched.header("Range") == "bytes=0-99" and fetched.header("Authorization") is None


@pytest.mark.parametrize(
    ("marker", "code"), [("[sim:cancel]", "cancelled"), ("[sim:expire]", "expired")]
)
def test_a_resellers_cancelled_and_expired_jobs_fail_with_that_code(tmp_path, marker, code):
    with _stack("reseller", tmp_path) as stack:
        video = stack.sdk().videos.create_and_poll(
            prompt=f"ends {marker}", model="sora-2", poll_interval_ms=100
        )
        assert video.status == "failed" and video.error.code == code
        with pytest.raises(openai.ConflictError) as not_ready:
            stack.sdk().videos.download_content(video.id)
        assert not_ready.value.body["code"] == "video_not_ready"


def test_new_api_status_unknown_is_queued_and_polling_goes_on(tmp_path):
    with _stack("new-api", tmp_path) as stack:
        created = stack.sdk().videos.create(prompt="slowly", model="sora-2")
        assert created.status == "queued"  # new-api said "unknown"
        (answer,) = [r for r in stack.upstream_requests("POST")]
        assert answer.path == "/v1/videos"
        done = stack.sdk().videos.poll(created.id, poll_interval_ms=100)
        assert done.status == "completed"


def test_vllm_omni_gets_frames_and_fps_when_configured(tmp_path):
    with SimulatorServer(
        app=create_vllm_omni_app(served_model=SERVED, seconds_per_step=0.1)
    ) as sim:
        upstreams = tmp_path / "wan.toml"
        upstreams.write_text(
            f'[[upstream]]\nname = "wan"\nbase_url = "{sim.base_url}"\ndialect = "vllm-omni"\n'
            f'fps = 16\n[upstream.models."wan-2.2"]\ndeployment = "{SERVED}"\n'
            'sizes = ["832x480"]\nseconds = ["4", "8"]\n'
        )
        client = create_app(
            {
                "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
                "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/s.db",
            }
        ).test_client()
        created = client.post("/v1/videos", json={"prompt": "p", "seconds": "4", "size": "832x480"})
        assert created.status_code == 200, created.get_json()
        (sent,) = sim.state.requests
        assert sent.header("Content-Type").startswith("multipart/form-data")
        assert sent.form["num_frames"] == ["64"] and sent.form["fps"] == ["16"]
        assert sent.form["model"] == [SERVED] and sent.form["seconds"] == ["4"]
        assert sent.header("Authorization") is None  # no key configured, none sent


def test_an_expired_result_url_is_a_502_not_the_callers_fault(tmp_path):
    import dataclasses

    from sora_proxy.store import open_store

    with _stack("new-api", tmp_path) as stack:
        video = stack.sdk().videos.create_and_poll(
            prompt="soon gone", model="sora-2", poll_interval_ms=100
        )
        store = open_store(f"sqlite:///{tmp_path}/new-api.sqlite3")
        record = store.get(video.id)
        gone = stack.results.base_url.removesuffix("/v1") + "/0-expired/video.mp4"
        store.record(dataclasses.replace(record, handle={**record.handle, "result_urls": [gone]}))
        answer = requests.get(
            f"{stack.url}/v1/videos/{video.id}/content",
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=10,
        )
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "upstream_result_unavailable"
        assert UPSTREAM_KEY not in answer.text
