"""The OpenRouter simulator driven by the official ``openrouter`` SDK (1.3.84) over real
sockets: ``video_generation.generate``, ``get_generation``, ``get_video_content`` and
``list_videos_models``, plus raw requests for the wire details the SDK hides
(``shared/dialects/openrouter.md``)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator

import pytest
import requests
from openrouter import OpenRouter, components, errors

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.gateways.results import create_result_host_app
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.simulator.openrouter import (
    CANCEL_MARKER,
    EXPIRE_MARKER,
    FAIL_MARKER,
    MODERATED_MARKER,
    NO_CREDITS_MARKER,
    NO_STORED_COPY_MARKER,
    RATE_LIMIT_MARKER,
    RETRY_AFTER_SECONDS,
    create_openrouter_app,
)

STEP = 0.25
KEY = "sk-or-v1-simulated-key-5150"
SORA, VEO = "openai/sora-2-pro", "google/veo-3.1"
MP4, _, _ = load_asset("video")
JOB_ID = re.compile(r"gen-vid-\d{10}-[A-Za-z0-9]{20}")
PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a8e3"
        "0e0000000049454e44ae426082"
    )
).decode()
FIRST_FRAME = {
    "type": "image_url",
    "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"},
    "frame_type": "first_frame",
}


@pytest.fixture
def storage() -> Iterator[SimulatorServer]:
    with SimulatorServer(app=create_result_host_app()) as host:
        yield host


@pytest.fixture
def sim(storage: SimulatorServer) -> Iterator[SimulatorServer]:
    app = create_openrouter_app(
        api_key=KEY, seconds_per_step=STEP, storage_base_url=storage.base_url.removesuffix("/v1")
    )
    with SimulatorServer(app=app) as server:
        yield server


def api(sim: SimulatorServer) -> str:
    return sim.base_url.removesuffix("/v1") + "/api/v1"


def sdk(sim: SimulatorServer, key: str | None = KEY) -> OpenRouter:
    return OpenRouter(api_key=key, server_url=api(sim), retry_config=None)


def raw_create(sim: SimulatorServer, key: str = KEY, **body: object) -> requests.Response:
    payload = {"model": SORA, "prompt": "A cat", **body}
    headers = {"Authorization": f"Bearer {key}"}
    return requests.post(f"{api(sim)}/videos", json=payload, headers=headers, timeout=10)


def poll_until_ended(
    client: OpenRouter, job_id: str
) -> tuple[list[str], components.VideoGenerationResponse]:
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        job = client.video_generation.get_generation(job_id=job_id)
        if job.status not in ("pending", "in_progress"):
            return seen, job
        seen.append(str(job.status))
        time.sleep(0.21)  # under five polls a second
    raise AssertionError("the job never ended")


def test_generate_answers_202_with_a_relative_polling_url(sim: SimulatorServer) -> None:
    client = sdk(sim)
    job = client.video_generation.generate(
        model=SORA, prompt="A cat", duration=8, resolution="720p", aspect_ratio="16:9"
    )
    assert JOB_ID.fullmatch(job.id) and job.status == "pending"
    assert job.polling_url == f"/api/v1/videos/{job.id}"
    (recorded,) = sim.state.requests
    assert (recorded.method, recorded.path) == ("POST", "/api/v1/videos")
    assert recorded.header("Authorization") == f"Bearer {KEY}"
    assert recorded.header("Content-Type") == "application/json"
    assert recorded.json == {
        "aspect_ratio": "16:9",
        "duration": 8,
        "model": SORA,
        "prompt": "A cat",
        "resolution": "720p",
    }
    raw = raw_create(sim, duration=4)
    assert raw.status_code == 202
    assert list(raw.json()) == ["id", "polling_url", "status"]


def test_a_job_runs_to_completed_with_both_kinds_of_url(
    sim: SimulatorServer, storage: SimulatorServer
) -> None:
    client = sdk(sim)
    job = client.video_generation.generate(model=VEO, prompt="A cat", duration=6)
    seen, done = poll_until_ended(client, job.id)
    assert seen[0] == "pending" and "in_progress" in seen
    assert done.status == "completed" and done.error is None
    assert done.generation_id and done.generation_id.startswith("gen-")
    assert done.usage is not None and done.usage.cost == pytest.approx(0.40 * 6)
    assert done.usage.is_byok is False
    assert done.unsigned_urls == [f"{api(sim)}/videos/{job.id}/content?index=0"]
    assert done.urls and done.expires_at and done.expires_at > time.time() + 3600
    host = storage.base_url.removesuffix("/v1")
    assert re.fullmatch(rf"{re.escape(host)}/\d+-[0-9a-f]{{32}}/{job.id}\.mp4", done.urls[0])
    raw = requests.get(f"{api(sim)}/videos/{job.id}", headers={"Authorization": f"Bearer {KEY}"})
    assert "progress" not in raw.json() and "created_at" not in raw.json()

    # The signed URL needs no key; the unsigned one does (401 without it).
    signed = requests.get(done.urls[0], timeout=10)
    assert signed.status_code == 200 and signed.content == MP4
    (served,) = storage.state.requests
    assert served.header("Authorization") is None
    unkeyed = requests.get(done.unsigned_urls[0], timeout=10)
    assert unkeyed.status_code == 401 and unkeyed.json()["error"]["code"] == 401

    content = client.video_generation.get_video_content(job_id=job.id)
    assert content.status_code == 200 and content.headers["Content-Type"] == "video/mp4"
    assert content.read() == MP4
    fetched = sim.state.requests[-1]
    assert fetched.path == f"/api/v1/videos/{job.id}/content"
    assert fetched.query == {"index": ["0"]}
    assert fetched.header("Accept") == "video/mp4"
    assert fetched.header("Authorization") == f"Bearer {KEY}"


def test_list_videos_models_describes_what_each_model_accepts(sim: SimulatorServer) -> None:
    listed = sdk(sim).video_generation.list_videos_models()
    models = {model.id: model for model in listed.data}
    assert set(models) == {SORA, VEO}
    assert models[SORA].supported_durations == [4, 8, 12]
    assert models[SORA].supported_sizes and "1792x1024" in models[SORA].supported_sizes
    assert models[VEO].supported_sizes is None
    assert models[VEO].supported_frame_images == ["first_frame", "last_frame"]
    no_key = requests.get(f"{api(sim)}/videos/models", timeout=10)
    assert no_key.status_code == 200 and len(no_key.json()["data"]) == 2


def test_frame_images_and_interchangeable_sizes(sim: SimulatorServer) -> None:
    client = sdk(sim)
    job = client.video_generation.generate(
        model=SORA, prompt="A cat", size="1792x1024", frame_images=[FIRST_FRAME]
    )
    assert job.status == "pending"
    assert sim.state.requests[-1].json["frame_images"] == [FIRST_FRAME]
    # Veo lists no sizes: a size it can make as resolution + aspect_ratio is accepted.
    assert raw_create(sim, model=VEO, size="1280x720").status_code == 202
    assert raw_create(sim, model=VEO, size="1792x1024").status_code == 400
    last = {**FIRST_FRAME, "frame_type": "last_frame"}
    assert raw_create(sim, frame_images=[last]).status_code == 400  # Sora: first frame only
    http_image = {**FIRST_FRAME, "image_url": {"url": "http://example.com/a.png"}}
    assert raw_create(sim, frame_images=[http_image]).status_code == 400


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("duration", "8"),  # a string is not an integer
        ("duration", 5),  # not among Sora 2 Pro's durations
        ("resolution", "1080p"),
        ("aspect_ratio", "1:1"),
        ("size", "1920x1080"),
        ("callback_url", "http://example.com/hook"),
    ],
)
def test_bad_fields_are_400_with_an_integer_code(
    sim: SimulatorServer, field: str, value: object
) -> None:
    answer = raw_create(sim, **{field: value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 400 and type(error["code"]) is int
    assert field.split("_")[0] in error["message"].lower()
    assert sim.state.list_videos() == []


def test_sdk_errors_401_402_404(sim: SimulatorServer) -> None:
    with pytest.raises(errors.UnauthorizedResponseError) as wrong_key:
        sdk(sim, "sk-or-wrong").video_generation.generate(model=SORA, prompt="A cat")
    assert wrong_key.value.data.error.code == 401
    with pytest.raises(errors.PaymentRequiredResponseError) as no_credits:
        sdk(sim).video_generation.generate(model=SORA, prompt=f"x {NO_CREDITS_MARKER}")
    assert no_credits.value.data.error.code == 402
    with pytest.raises(errors.NotFoundResponseError):
        sdk(sim).video_generation.generate(model="openai/sora-9", prompt="A cat")
    with pytest.raises(errors.NotFoundResponseError):
        sdk(sim).video_generation.get_generation(job_id="gen-vid-1700000000-AAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(errors.BadRequestResponseError) as bad:
        sdk(sim).video_generation.generate(model=SORA, prompt="A cat", duration=6)
    assert "duration" in bad.value.data.error.message


@pytest.mark.parametrize(
    ("marker", "status", "words"),
    [
        (FAIL_MARKER, "failed", "failed"),
        (MODERATED_MARKER, "failed", "moderation"),
        (CANCEL_MARKER, "cancelled", "cancelled"),
    ],
)
def test_failures_carry_an_error_string(
    sim: SimulatorServer, marker: str, status: str, words: str
) -> None:
    client = sdk(sim)
    job = client.video_generation.generate(model=SORA, prompt=f"x {marker}")
    _, ended = poll_until_ended(client, job.id)
    assert ended.status == status
    assert isinstance(ended.error, str) and words in ended.error.lower()
    assert ended.urls is None and ended.unsigned_urls is None
    with pytest.raises(errors.ConflictResponseError):
        client.video_generation.get_video_content(job_id=job.id)


def test_expired_follows_completed_and_its_content_is_gone(sim: SimulatorServer) -> None:
    client = sdk(sim)
    job = client.video_generation.generate(model=SORA, prompt=f"x {EXPIRE_MARKER}")
    _, first = poll_until_ended(client, job.id)
    assert first.status == "completed" and first.urls  # completed is read first ...
    time.sleep(STEP * 1.5)
    later = client.video_generation.get_generation(job_id=job.id)
    assert later.status == "expired"  # ... then the output expires
    assert isinstance(later.error, str) and later.urls is None
    with pytest.raises(errors.GoneResponseError):
        client.video_generation.get_video_content(job_id=job.id)


def test_no_stored_copy_means_unsigned_urls_only(sim: SimulatorServer) -> None:
    client = sdk(sim)
    job = client.video_generation.generate(model=SORA, prompt=f"x {NO_STORED_COPY_MARKER}")
    _, done = poll_until_ended(client, job.id)
    assert done.status == "completed" and done.unsigned_urls
    assert done.urls is None and done.expires_at is None


def test_fast_polls_are_429_with_retry_after(sim: SimulatorServer) -> None:
    job_id = raw_create(sim).json()["id"]
    headers = {"Authorization": f"Bearer {KEY}"}
    answers = [
        requests.get(f"{api(sim)}/videos/{job_id}", headers=headers, timeout=10) for _ in range(6)
    ]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    assert answers[5].status_code == 429 and answers[5].headers["Retry-After"] == "1"
    assert answers[5].json()["error"]["code"] == 429
    time.sleep(1.05)
    marked = raw_create(sim, prompt=f"x {RATE_LIMIT_MARKER}").json()["id"]
    with pytest.raises(errors.OpenRouterDefaultError) as limited:
        sdk(sim).video_generation.get_generation(job_id=marked)
    assert limited.value.status_code == 429
    assert limited.value.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert sdk(sim).video_generation.get_generation(job_id=marked).status == "pending"


def test_previous_job_id_needs_a_completed_job_on_the_same_model(sim: SimulatorServer) -> None:
    client = sdk(sim)
    job = client.video_generation.generate(model=SORA, prompt="A cat")
    with pytest.raises(errors.OpenRouterDefaultError) as early:
        client.video_generation.generate(model=SORA, prompt="more", previous_job_id=job.id)
    assert early.value.status_code == 409
    sim.state.complete(job.id)
    other = raw_create(sim, model=VEO, previous_job_id=job.id)
    assert other.status_code == 400
    follow = client.video_generation.generate(model=SORA, prompt="more", previous_job_id=job.id)
    assert follow.status == "pending" and follow.id != job.id


def test_a_body_over_50_mib_is_413(sim: SimulatorServer) -> None:
    answer = raw_create(sim, prompt="x" * (50 * 1024 * 1024 + 1))
    assert answer.status_code == 413 and answer.json()["error"]["code"] == 413
    assert sim.state.list_videos() == []


def test_signed_urls_fall_back_to_the_apps_own_storage() -> None:
    with SimulatorServer(app=create_openrouter_app(seconds_per_step=STEP)) as sim:
        client = sdk(sim, None)
        job = client.video_generation.generate(model=SORA, prompt="A cat")
        _, done = poll_until_ended(client, job.id)
        assert done.urls and done.urls[0].startswith(
            sim.base_url.removesuffix("/v1") + "/_storage/"
        )
        assert requests.get(done.urls[0], timeout=10).content == MP4
        assert sim.state.requests[0].header("Authorization") is None
