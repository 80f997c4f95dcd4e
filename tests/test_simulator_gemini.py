"""The Gemini (Veo) simulator, driven by the official ``google-genai`` 2.34.0 client (the last
that calls Veo with an API key) and by raw requests, over real sockets, to show it keeps
``shared/dialects/gemini.md``."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
import requests
from google import genai
from google.genai import errors, types
from images import make_image

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.gemini import (
    FAIL_MARKER,
    MODERATE_MARKER,
    RATE_LIMIT_MARKER,
    RETRY_DELAY_SECONDS,
    create_gemini_app,
)
from sora_proxy.simulator.media import load as load_asset

KEY = "AIza-sim-gemini-key"
STEP = 0.05
MODEL = "veo-3.1-generate-preview"
MP4, _, _ = load_asset("video")


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(app=create_gemini_app(api_key=KEY, seconds_per_step=STEP)) as server:
        yield server


def root(sim: SimulatorServer) -> str:
    return sim.base_url.removesuffix("/v1")


@pytest.fixture
def client(sim: SimulatorServer) -> genai.Client:
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=root(sim)))


def wait(client: genai.Client, operation: types.GenerateVideosOperation):
    deadline = time.monotonic() + 5
    while not operation.done:
        assert time.monotonic() < deadline, "the operation never finished"
        time.sleep(STEP)
        operation = client.operations.get(operation)
    return operation


def post_create(sim: SimulatorServer, body: object, **headers: str) -> requests.Response:
    return requests.post(
        f"{root(sim)}/v1beta/models/{MODEL}:predictLongRunning",
        json=body,
        headers={"x-goog-api-key": KEY, **headers},
        timeout=10,
    )


def test_the_sdk_generates_polls_and_downloads(sim, client):
    png = make_image(1280, 720, "PNG")
    operation = client.models.generate_videos(
        model=MODEL,
        source=types.GenerateVideosSource(
            prompt="a lighthouse at dusk", image=types.Image(image_bytes=png, mime_type="image/png")
        ),
        config=types.GenerateVideosConfig(
            duration_seconds=6, aspect_ratio="16:9", resolution="1080p", negative_prompt="blurry"
        ),
    )
    assert operation.name.startswith(f"models/{MODEL}/operations/")
    assert operation.done is None  # absent while running, not false
    done = wait(client, operation)
    (generated,) = done.response.generated_videos
    assert generated.video.uri.startswith("https://generativelanguage.googleapis.com/v1beta/files/")
    assert client.files.download(file=generated.video) == MP4
    create, *polls, download = sim.state.requests
    assert create.path == f"/v1beta/models/{MODEL}:predictLongRunning"
    assert create.json == {
        "instances": [
            {
                "prompt": "a lighthouse at dusk",
                "image": {
                    "bytesBase64Encoded": base64.b64encode(png).decode(),
                    "mimeType": "image/png",
                },
            }
        ],
        "parameters": {
            "durationSeconds": 6,
            "aspectRatio": "16:9",
            "resolution": "1080p",
            "negativePrompt": "blurry",
        },
    }
    assert polls and {p.path for p in polls} == {f"/v1beta/{operation.name}"}
    assert download.path.endswith(":download") and download.query == {"alt": ["media"]}
    assert all(r.header("x-goog-api-key") == KEY for r in sim.state.requests)
    assert all(r.header("Authorization") is None for r in sim.state.requests)


def test_a_safety_filtered_job_is_done_without_error_or_samples(client):
    done = wait(
        client,
        client.models.generate_videos(
            model=MODEL, source=types.GenerateVideosSource(prompt=f"x {MODERATE_MARKER}")
        ),
    )
    assert done.error is None
    assert not done.response.generated_videos
    assert done.response.rai_media_filtered_count == 1
    assert done.response.rai_media_filtered_reasons


def test_a_failed_job_carries_a_grpc_code(client):
    done = wait(
        client,
        client.models.generate_videos(
            model=MODEL, source=types.GenerateVideosSource(prompt=f"x {FAIL_MARKER}")
        ),
    )
    assert done.error["code"] == 13 and done.error["message"]
    assert done.response is None


def test_quota_is_a_429_resource_exhausted_with_retry_info(sim, client):
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_videos(
            model=MODEL, source=types.GenerateVideosSource(prompt=f"x {RATE_LIMIT_MARKER}")
        )
    assert refused.value.code == 429 and refused.value.status == "RESOURCE_EXHAUSTED"
    (retry,) = refused.value.details["error"]["details"]
    assert retry["retryDelay"] == f"{RETRY_DELAY_SECONDS}s"
    assert retry["@type"].endswith("google.rpc.RetryInfo")


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_videos(model="sora-2", source=types.GenerateVideosSource(prompt="x"))
    assert refused.value.code == 404 and refused.value.status == "NOT_FOUND"


def test_keys_missing_wrong_and_in_the_query(sim):
    missing = requests.post(
        f"{root(sim)}/v1beta/models/{MODEL}:predictLongRunning", json={}, timeout=10
    )
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = post_create(sim, {"instances": [{"prompt": "x"}]}, **{"x-goog-api-key": "nope"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    by_query = requests.post(
        f"{root(sim)}/v1beta/models/{MODEL}:predictLongRunning?key={KEY}",
        json={"instances": [{"prompt": "x"}]},
        timeout=10,
    )
    assert by_query.status_code == 200 and set(by_query.json()) == {"name"}


def test_the_operation_has_no_done_while_running_and_the_file_needs_the_key(sim):
    name = post_create(sim, {"instances": [{"prompt": "x"}]}).json()["name"]
    running = requests.get(f"{root(sim)}/v1beta/{name}", headers={"x-goog-api-key": KEY})
    assert running.json() == {"name": name}
    time.sleep(4 * STEP)
    done = requests.get(f"{root(sim)}/v1beta/{name}?key={KEY}").json()
    assert done["done"] is True
    uri = done["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
    file_id = uri.split("files/")[1].split(":")[0]
    url = f"{root(sim)}/v1beta/files/{file_id}:download?alt=media"
    assert requests.get(url, timeout=10).status_code == 403
    with_key = requests.get(url, headers={"x-goog-api-key": KEY, "Range": "bytes=0-9"}, timeout=10)
    assert with_key.status_code == 206 and with_key.content == MP4[:10]
    assert requests.get(f"{url}&key={KEY}", timeout=10).content == MP4
    missing = requests.get(f"{root(sim)}/v1beta/{name}x", headers={"x-goog-api-key": KEY})
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({"durationSeconds": "8"}, "durationSeconds"),  # a string is not Veo's integer
        ({"durationSeconds": 12}, "durationSeconds"),
        ({"aspectRatio": "1:1"}, "aspectRatio"),
        ({"resolution": "1792p"}, "resolution"),
        ({"seed": 3}, "Unknown name"),
    ],
)
def test_parameters_veo_cannot_take_are_400_invalid_argument(sim, parameters, fragment):
    answer = post_create(sim, {"instances": [{"prompt": "x"}], "parameters": parameters})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert fragment in error["message"]


def test_an_image_must_be_base64_with_a_mime_type(sim):
    inline = {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
    assert post_create(sim, {"instances": [{"prompt": "x", "image": inline}]}).status_code == 400
    good = {"bytesBase64Encoded": "iVBORw0KGgo=", "mimeType": "image/png"}
    assert post_create(sim, {"instances": [{"image": good}]}).status_code == 200
