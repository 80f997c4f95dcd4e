"""The xAI simulator against requests shaped exactly like xAI's REST documentation
(``shared/dialects/xai.md``), over real sockets: ``xai-sdk`` speaks gRPC only, so raw
``requests`` calls stand in for it."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator

import pytest
import requests

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.gateways.results import create_result_host_app
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.simulator.xai import (
    EXPIRE_MARKER,
    FAIL_MARKER,
    MODERATED_MARKER,
    NO_CREDITS_MARKER,
    NO_STATUS_MARKER,
    create_xai_app,
)

STEP = 0.05
KEY = "xai-secret-key-4242"
MP4, _, _ = load_asset("video")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INVALID_ARGUMENT = "Client specified an invalid argument"
PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a8e3"
        "0e0000000049454e44ae426082"
    )
).decode()


@pytest.fixture
def results() -> Iterator[SimulatorServer]:
    with SimulatorServer(app=create_result_host_app()) as host:
        yield host


@pytest.fixture
def sim(results: SimulatorServer) -> Iterator[SimulatorServer]:
    app = create_xai_app(
        api_key=KEY, seconds_per_step=STEP, result_base_url=results.base_url.removesuffix("/v1")
    )
    with SimulatorServer(app=app) as server:
        yield server


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def generate(sim: SimulatorServer, **body: object) -> requests.Response:
    """DOC-VIDEO's example: ``requests.post(".../v1/videos/generations", json=...)``."""
    payload = {"model": "grok-imagine-video", "prompt": "A cat", **body}
    return requests.post(
        f"{sim.base_url}/videos/generations", json=payload, headers=auth(), timeout=10
    )


def poll(sim: SimulatorServer, request_id: str) -> requests.Response:
    return requests.get(f"{sim.base_url}/videos/{request_id}", headers=auth(), timeout=10)


def poll_until_ended(sim: SimulatorServer, request_id: str) -> tuple[list[dict], dict]:
    seen: list[dict] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answer = poll(sim, request_id)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if body.get("status") not in (None, "pending"):
            return seen, body
        seen.append(body)
        time.sleep(STEP / 3)
    raise AssertionError("the job never ended")


def test_create_answers_only_a_request_id(sim: SimulatorServer) -> None:
    answer = generate(sim, duration=8, aspect_ratio="16:9", resolution="720p")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert list(body) == ["request_id"] and UUID.fullmatch(body["request_id"])
    (recorded,) = sim.state.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/videos/generations")
    assert recorded.header("Authorization") == f"Bearer {KEY}"
    assert recorded.json == {
        "model": "grok-imagine-video",
        "prompt": "A cat",
        "duration": 8,
        "aspect_ratio": "16:9",
        "resolution": "720p",
    }


def test_pending_then_done_with_a_public_url_on_the_result_host(
    sim: SimulatorServer, results: SimulatorServer
) -> None:
    request_id = generate(sim, duration=6).json()["request_id"]
    pending, done = poll_until_ended(sim, request_id)
    assert pending and pending[0] == {
        "status": "pending",
        "model": "grok-imagine-video",
        "progress": 0,
    }
    assert all(set(p) == {"status", "model", "progress"} for p in pending)
    assert any(0 < p["progress"] < 100 for p in pending)
    assert list(done) == ["status", "video", "model", "usage", "progress"]
    assert done["status"] == "done" and done["model"] == "grok-imagine-video"
    assert done["progress"] == 100
    assert done["usage"] == {"cost_in_usd_ticks": 6 * 500_000_000}
    video = done["video"]
    assert list(video) == ["url", "duration", "respect_moderation"]
    assert video["duration"] == 6 and video["respect_moderation"] is True
    host = results.base_url.removesuffix("/v1")
    assert re.fullmatch(
        rf"{re.escape(host)}/\d+-[0-9a-f]{{32}}/xai-video-{request_id}\.mp4", video["url"]
    )
    fetched = requests.get(video["url"], timeout=10)  # no key: the URL is public
    assert fetched.status_code == 200 and fetched.content == MP4
    assert fetched.headers["Content-Type"] == "video/mp4"
    (served,) = results.state.requests
    assert served.header("Authorization") is None


def test_default_duration_is_eight_and_results_fall_back_to_its_own_bucket() -> None:
    with SimulatorServer(app=create_xai_app(seconds_per_step=STEP)) as sim:
        request_id = generate(sim).json()["request_id"]
        _, done = poll_until_ended(sim, request_id)
        assert done["video"]["duration"] == 8
        url = done["video"]["url"]
        assert url.startswith(sim.base_url.removesuffix("/v1") + "/xai-vidgen-bucket/")
        assert requests.get(url, timeout=10).content == MP4
        assert sim.state.requests[0].header("Authorization") == f"Bearer {KEY}"


def test_image_to_video_takes_image_url_as_a_data_uri_or_https(sim: SimulatorServer) -> None:
    data_uri = f"data:image/png;base64,{PNG_1PX}"
    assert generate(sim, image={"url": data_uri}).status_code == 200
    assert generate(sim, image={"url": "https://example.com/cat.jpg"}).status_code == 200
    assert sim.state.requests[0].json["image"] == {"url": data_uri}
    bare = generate(sim, image="https://example.com/cat.jpg")
    assert bare.status_code == 422
    not_base64 = generate(sim, image={"url": "data:image/png,abc"})
    assert not_base64.status_code == 400 and not_base64.json()["code"] == INVALID_ARGUMENT
    both = generate(sim, image={"url": data_uri}, reference_images=[{"url": data_uri}])
    assert both.status_code == 400


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("duration", "8", 422),  # a string does not deserialize
        ("duration", 8.5, 422),
        ("duration", True, 422),
        ("duration", 0, 400),
        ("duration", 16, 400),
        ("aspect_ratio", "21:9", 400),
        ("resolution", "1080p", 400),  # 1080p only on grok-imagine-video-1.5
        ("generate_audio", "yes", 422),
    ],
)
def test_bad_fields_are_refused_in_xais_envelope(
    sim: SimulatorServer, field: str, value: object, status: int
) -> None:
    answer = generate(sim, **{field: value})
    assert answer.status_code == status
    body = answer.json()
    assert list(body) == ["code", "error"]
    assert body["code"] == INVALID_ARGUMENT and field in body["error"]


def test_edge_durations_and_1080p_on_the_newer_model(sim: SimulatorServer) -> None:
    assert generate(sim, duration=1).status_code == 200
    assert generate(sim, duration=15).status_code == 200
    newer = generate(sim, model="grok-imagine-video-1.5", resolution="1080p")
    assert newer.status_code == 200
    unknown = generate(sim, model="grok-9")
    assert unknown.status_code == 404 and list(unknown.json()) == ["code", "error"]
    assert generate(sim, prompt="").status_code == 400


def test_a_wrong_or_missing_key_is_a_400_not_a_401(sim: SimulatorServer) -> None:
    wrong = requests.post(
        f"{sim.base_url}/videos/generations",
        json={"model": "grok-imagine-video", "prompt": "A cat"},
        headers=auth("xai-wrongkeyyz"),
        timeout=10,
    )
    assert wrong.status_code == 400
    assert wrong.json() == {
        "code": INVALID_ARGUMENT,
        "error": "Incorrect API key provided: xa***yz. "
        "You can obtain an API key from https://console.x.ai.",
    }
    missing = requests.get(f"{sim.base_url}/videos/abc", timeout=10)
    assert missing.status_code == 400 and missing.json()["code"] == INVALID_ARGUMENT
    assert sim.state.list_videos() == []


def test_failed_is_a_200_with_xais_failed_body(sim: SimulatorServer) -> None:
    request_id = generate(sim, prompt=f"boom {FAIL_MARKER}").json()["request_id"]
    _, failed = poll_until_ended(sim, request_id)
    assert failed == {
        "status": "failed",
        "video": {"duration": 0, "respect_moderation": True},
        "model": "",
        "error": {"code": "internal_error", "message": "Video generation failed."},
    }


def test_moderated_is_done_without_a_url(sim: SimulatorServer) -> None:
    request_id = generate(sim, prompt=f"no {MODERATED_MARKER}", duration=4).json()["request_id"]
    _, done = poll_until_ended(sim, request_id)
    assert done["status"] == "done"
    assert done["video"] == {"duration": 4, "respect_moderation": False}
    assert "url" not in done["video"]
    assert done["usage"]["cost_in_usd_ticks"] > 0  # a moderated request is still charged


def test_expired_says_only_expired(sim: SimulatorServer) -> None:
    request_id = generate(sim, prompt=f"late {EXPIRE_MARKER}").json()["request_id"]
    _, expired = poll_until_ended(sim, request_id)
    assert expired == {"status": "expired"}


def test_a_resellers_view_has_no_status_while_pending(sim: SimulatorServer) -> None:
    request_id = generate(sim, prompt=f"quiet {NO_STATUS_MARKER}").json()["request_id"]
    pending, done = poll_until_ended(sim, request_id)
    assert pending and all(p == {"request_id": request_id} for p in pending)
    assert done["status"] == "done" and done["video"]["url"]


def test_out_of_credits_is_a_429_with_a_numeric_code(sim: SimulatorServer) -> None:
    answer = generate(sim, prompt=f"pricey {NO_CREDITS_MARKER}")
    assert answer.status_code == 429
    assert answer.json() == {"code": 429, "error": "You ran out of credits."}
    assert sim.state.list_videos() == []


def test_unknown_request_id_and_no_list_delete_or_content(sim: SimulatorServer) -> None:
    unknown = poll(sim, "00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404 and list(unknown.json()) == ["code", "error"]
    request_id = generate(sim).json()["request_id"]
    for method, path in [
        ("GET", "/videos"),
        ("DELETE", f"/videos/{request_id}"),
        ("GET", f"/videos/{request_id}/content"),
        ("POST", f"/videos/{request_id}/cancel"),
    ]:
        answer = requests.request(method, f"{sim.base_url}{path}", headers=auth(), timeout=10)
        assert answer.status_code in (404, 405), (method, path)
    assert poll(sim, request_id).status_code == 200


def test_a_json_body_is_required(sim: SimulatorServer) -> None:
    form = requests.post(
        f"{sim.base_url}/videos/generations",
        data={"model": "grok-imagine-video", "prompt": "A cat"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert form.status_code == 415
    assert sim.state.list_videos() == []
