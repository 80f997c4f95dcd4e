"""The gateway simulators (new-api, LiteLLM proxy, 202 reseller) against their wire contract,
``shared/dialects/openai-gateways.md``: driven with the official ``openai`` SDK as §5 says it
behaves against them, plus raw ``requests`` checks of the exact wire (§1-§4). Real sockets on
127.0.0.1, nothing mocked."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator

import openai
import pytest
import requests

from sora_proxy.simulator import FAIL_MARKER, SimulatorServer, media
from sora_proxy.simulator.gateways import (
    CANCEL_MARKER,
    EXPIRE_MARKER,
    GONE_MARKER,
    create_gateway_app,
    create_result_host_app,
)

KEY = "sk-gateway-KEY-must-not-leak-93ab"
#: A fast clock, for tests that wait for jobs to finish (SDK polling).
STEP = 0.05
#: A slow clock, for tests that check a state: they move jobs on with `age`, never with sleeps.
SLOW = 2.0
#: Polling a reseller slower than its 5 a second per key, so polls are never rate limited.
POLL_MS = 250
AUTH = {"Authorization": f"Bearer {KEY}"}
MP4 = media.load("video")[0]


@pytest.fixture
def host() -> Iterator[SimulatorServer]:
    """The result host the gateways' signed URLs point at."""
    with SimulatorServer(app=create_result_host_app()) as server:
        yield server


def root(server: SimulatorServer) -> str:
    return server.base_url.removesuffix("/v1")


def start(style: str, host: SimulatorServer | None = None, step: float = SLOW) -> SimulatorServer:
    base = root(host) if host is not None else None
    app = create_gateway_app(style, api_key=KEY, seconds_per_step=step, result_base_url=base)
    return SimulatorServer(app=app).start()


@pytest.fixture
def newapi(host: SimulatorServer) -> Iterator[SimulatorServer]:
    server = start("new-api", host)
    yield server
    server.stop()


@pytest.fixture
def litellm() -> Iterator[SimulatorServer]:
    server = start("litellm")
    yield server
    server.stop()


@pytest.fixture
def reseller(host: SimulatorServer) -> Iterator[SimulatorServer]:
    server = start("reseller", host, step=STEP)
    yield server
    server.stop()


def age(server: SimulatorServer, video_id: str, steps: float) -> None:
    """Move a job's clock back so it is ``steps`` steps old now."""
    job = server.state.get_video(video_id)
    assert job is not None
    job["_started"] = time.time() - steps * server.state.seconds_per_step


def sdk(server: SimulatorServer, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=server.base_url, **kwargs)  # type: ignore[arg-type]


def assert_key_never_reached(host: SimulatorServer) -> None:
    assert host.state.requests, "the result host was never asked"
    for record in host.state.requests:
        assert record.header("Authorization") is None
        assert record.header("x-litellm-api-key") is None
        assert all(KEY not in value for value in record.headers.values())
        assert KEY.encode() not in record.body


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="new-api, litellm, reseller"):
        create_gateway_app("openai")


# --- new-api -----------------------------------------------------------------------------------


def test_newapi_sdk_create_is_multipart_and_answers_a_task(newapi: SimulatorServer) -> None:
    raw = sdk(newapi).videos.with_raw_response.create(
        prompt="a fox", model="sora-2", seconds="8", size="720x1280"
    )
    video = raw.parse()
    assert raw.status_code == 200
    assert raw.headers["X-New-Api-Other-Ratios"] == '{"seconds":8,"size":1}'
    assert re.fullmatch(r"task_[A-Za-z0-9]{32}", video.id)
    extra = video.to_dict()
    assert extra["task_id"] == video.id
    assert video.status == "unknown"  # type: ignore[comparison-overlap]
    assert isinstance(video.progress, int) and video.progress == 0
    assert video.created_at > 10**11  # milliseconds, as new-api's docs show
    # Only non-empty fields: no completed_at/error/metadata yet.
    assert set(json.loads(raw.content)) == {
        "id",
        "task_id",
        "object",
        "model",
        "status",
        "progress",
        "created_at",
        "seconds",
        "size",
    }
    record = newapi.state.requests[-1]
    assert record.header("Content-Type").startswith("multipart/form-data")
    assert record.form["seconds"] == ["8"]


def test_newapi_sdk_poll_returns_at_once_on_unknown(host: SimulatorServer) -> None:
    server = start("new-api", host, step=2.0)
    try:
        client = sdk(server)
        began = time.monotonic()
        video = client.videos.create_and_poll(prompt="a fox", model="sora-2")
        assert time.monotonic() - began < 1.0
        assert video.status == "unknown"  # type: ignore[comparison-overlap]
        assert [(r.method, r.path) for r in server.state.requests] == [
            ("POST", "/v1/videos"),
            ("GET", f"/v1/videos/{video.id}"),
        ]
        # poll() too: one GET, and back with a video that is not done.
        assert client.videos.poll(video.id).status == "unknown"  # type: ignore[comparison-overlap]
        assert len(server.state.requests) == 3
    finally:
        server.stop()


def test_newapi_completed_result_at_metadata_url_without_key(
    newapi: SimulatorServer, host: SimulatorServer
) -> None:
    client = sdk(newapi)
    video = client.videos.create(prompt="a fox", model="veo-3", seconds="4")
    age(newapi, video.id, 1.5)
    running = client.videos.retrieve(video.id)
    assert running.status == "in_progress" and isinstance(running.progress, int)
    newapi.state.complete(video.id)
    done = client.videos.retrieve(video.id)
    assert done.status == "completed" and done.progress == 100
    assert done.completed_at is not None and done.completed_at < 10**11  # seconds
    url = done.to_dict()["metadata"]["url"]
    assert url.startswith(root(host) + "/") and url.endswith(f"/{video.id}.mp4")

    assert requests.get(url).content == MP4
    ranged = requests.get(url, headers={"Range": "bytes=4-11"})
    assert ranged.status_code == 206 and ranged.content == b"ftypisom"
    assert ranged.headers["Content-Range"] == f"bytes 4-11/{len(MP4)}"
    assert client.videos.download_content(video.id).read() == MP4
    assert_key_never_reached(host)


def test_newapi_errors_reach_the_sdk_as_codes(newapi: SimulatorServer) -> None:
    client = sdk(newapi, max_retries=0)
    # A JSON client sending an int `seconds` (the SDK's generic post sends JSON).
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(
            "/videos", cast_to=object, body={"prompt": "a", "model": "sora-2", "seconds": 8}
        )
    assert caught.value.code == "invalid_json"
    assert caught.value.body == {
        "code": "invalid_json",
        "message": "json: cannot unmarshal number into Go struct field "
        "TaskSubmitReq.seconds of type string",
        "data": None,
    }
    # An unknown id is a 400, not a 404.
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.retrieve("task_" + "x" * 32)
    assert caught.value.code == "task_not_exist"
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt="a fox")  # no model
    assert caught.value.code == "missing_model"
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt="a fox", model="sora-2", size="1792x1024")
    assert caught.value.code == "invalid_size"
    assert caught.value.message.endswith("sora-2 size is invalid")
    # Sizes are checked for the exact names sora-2 and sora-2-pro only; seconds never.
    assert client.videos.create(prompt="a", model="sora-2-pro", size="1792x1024").id
    other = client.videos.create(prompt="a", model="kling", size="1x1", seconds="7")  # type: ignore[arg-type]
    assert other.size == "1x1" and other.seconds == "7"


def test_newapi_json_create_wire(newapi: SimulatorServer) -> None:
    url = f"{newapi.base_url}/videos"
    base = {"prompt": "a fox", "model": "sora-2"}
    for field, value in (("seconds", 8), ("input_reference", {"image_url": "https://x/y.png"})):
        answer = requests.post(url, headers=AUTH, json={**base, field: value})
        assert answer.status_code == 400
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        body = answer.json()
        assert list(body) == ["code", "message", "data"]
        assert body["code"] == "invalid_json" and body["data"] is None
        assert f"TaskSubmitReq.{field} of type string" in body["message"]
    ok = requests.post(
        url, headers=AUTH, json={**base, "seconds": "8", "input_reference": "https://x/y.png"}
    )
    assert ok.status_code == 200 and ok.json()["seconds"] == "8"
    assert requests.post(url, headers=AUTH, json={**base, "duration": 5}).status_code == 200
    assert requests.post(url, headers=AUTH, json={"model": "sora-2"}).json() == {
        "code": "invalid_request",
        "message": "prompt is required",
        "data": None,
    }
    bad = requests.post(url, headers={**AUTH, "Content-Type": "application/json"}, data=b"{oops")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_json"
    assert requests.post(url, json=base).status_code == 401
    wrong = requests.post(url, json=base, headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "new_api_error"


def test_newapi_missing_routes_are_gin_404_text(newapi: SimulatorServer) -> None:
    video_id = requests.post(
        f"{newapi.base_url}/videos", headers=AUTH, data={"prompt": "a", "model": "sora-2"}
    ).json()["id"]
    v1 = newapi.base_url
    for method, url in (
        ("DELETE", f"{v1}/videos/{video_id}"),
        ("GET", f"{v1}/videos"),
        ("POST", f"{v1}/videos/edits"),
        ("POST", f"{v1}/videos/extensions"),
        ("POST", f"{v1}/videos/characters"),
        ("GET", f"{v1}/videos/characters/char_1"),
    ):
        for headers in (AUTH, {}):  # gin answers before any key check
            answer = requests.request(method, url, headers=headers)
            assert (answer.status_code, answer.text) == (404, "404 page not found"), url
            assert answer.headers["Content-Type"] == "text/plain"
    # gin has no HEAD route for its GET ones.
    head = requests.head(f"{v1}/videos/{video_id}/content", headers=AUTH)
    assert head.status_code == 404


def test_newapi_content_wire(newapi: SimulatorServer) -> None:
    v1 = newapi.base_url
    create = {"model": "sora-2"}
    video_id = requests.post(f"{v1}/videos", headers=AUTH, data={**create, "prompt": "a"}).json()[
        "id"
    ]
    early = requests.get(f"{v1}/videos/{video_id}/content", headers=AUTH)
    assert early.status_code == 400
    assert early.json() == {
        "error": {
            "message": "Task is not completed yet, current status: unknown",
            "type": "invalid_request_error",
        }
    }
    missing = requests.get(f"{v1}/videos/task_{'0' * 32}/content", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Task not found"
    assert requests.get(f"{v1}/videos/task_{'0' * 32}", headers=AUTH).json() == {
        "code": "task_not_exist",
        "message": "task_not_exist",
        "data": None,
    }

    newapi.state.complete(video_id)
    answer = requests.get(
        f"{v1}/videos/{video_id}/content?variant=thumbnail",
        headers={**AUTH, "Range": "bytes=0-9"},
    )
    assert answer.status_code == 200 and answer.content == MP4  # no variant, no Range
    assert answer.headers["Content-Type"] == "video/mp4"
    assert answer.headers["Cache-Control"] == "public, max-age=86400"
    assert "Accept-Ranges" not in answer.headers and "Content-Length" not in answer.headers

    remix = requests.post(f"{v1}/videos/{video_id}/remix", headers=AUTH, json={"prompt": "b"})
    assert remix.status_code == 200 and remix.json()["id"] != video_id
    assert remix.json()["model"] == "sora-2"

    failing = requests.post(
        f"{v1}/videos", headers=AUTH, data={**create, "prompt": f"x {FAIL_MARKER}"}
    ).json()["id"]
    gone = requests.post(
        f"{v1}/videos", headers=AUTH, data={**create, "prompt": f"x {GONE_MARKER}"}
    ).json()["id"]
    age(newapi, failing, 2.5)
    failed = requests.get(f"{v1}/videos/{failing}", headers=AUTH).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "generation_failed"
    assert "metadata" not in failed
    newapi.state.complete(gone)
    upstream_gone = requests.get(f"{v1}/videos/{gone}/content", headers=AUTH)
    assert upstream_gone.status_code == 502
    assert upstream_gone.json() == {
        "error": {"message": "Upstream service returned status 404", "type": "server_error"}
    }


def test_newapi_without_result_host_gives_no_metadata() -> None:
    server = start("new-api")
    try:
        client = sdk(server)
        video = client.videos.create(prompt="a", model="sora-2")
        server.state.complete(video.id)
        done = client.videos.retrieve(video.id)
        assert done.status == "completed" and "metadata" not in done.to_dict()
    finally:
        server.stop()


# --- LiteLLM -----------------------------------------------------------------------------------


def test_litellm_sdk_ids_usage_and_content(litellm: SimulatorServer) -> None:
    client = sdk(litellm, max_retries=0)
    video = client.videos.create(prompt="a fox", model="sora-2", seconds="8")
    assert video.id.startswith("video_")
    managed = base64.b64decode(video.id.removeprefix("video_")).decode()
    assert re.fullmatch(
        r"litellm:custom_llm_provider:openai;model_id:[0-9a-f-]{36};video_id:video_[0-9a-f]{32}",
        managed,
    )
    assert video.to_dict()["usage"] == {"duration_seconds": 8.0}

    # Not ready: a 200 "video" whose bytes are the upstream's error JSON.
    early = client.videos.download_content(video.id)
    assert early.response.status_code == 200
    assert early.response.headers["Content-Type"] == "video/mp4"
    assert early.read().startswith(b"{")
    assert json.loads(early.read())["error"]["code"] == "video_not_ready"

    litellm.state.complete(video.id)
    assert client.videos.retrieve(video.id).status == "completed"
    assert client.videos.download_content(video.id).read() == MP4
    thumbnail = client.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.read() == MP4 and thumbnail.read()[4:8] == b"ftyp"
    assert thumbnail.response.headers["Content-Type"] == "video/mp4"

    with pytest.raises(openai.APIStatusError) as caught:
        client.videos.delete(video.id)
    assert caught.value.status_code == 405
    assert caught.value.body == {"detail": "Method Not Allowed"}
    assert [v.id for v in client.videos.list()] == [video.id]


def test_litellm_sdk_create_and_poll_completes() -> None:
    server = start("litellm", step=STEP)
    try:
        video = sdk(server).videos.create_and_poll(prompt="b", model="sora-2")
        assert video.status == "completed" and video.progress == 100
        assert video.to_dict()["usage"] == {"duration_seconds": 4.0}
    finally:
        server.stop()


def test_litellm_wire(litellm: SimulatorServer) -> None:
    v1 = litellm.base_url
    bare = root(litellm)
    created = requests.post(
        f"{bare}/videos", headers={"x-litellm-api-key": KEY}, json={"prompt": "a", "model": "m"}
    )
    assert created.status_code == 200
    video_id = created.json()["id"]
    assert litellm.state.requests[-1].header("Authorization") is None
    unpadded = video_id.rstrip("=")
    assert unpadded != video_id  # this id has padding to lose
    assert requests.get(f"{v1}/videos/{unpadded}", headers=AUTH).json()["id"] == video_id

    for headers, message in (
        ({}, "Authentication Error, No api key passed in."),
        (
            {"x-litellm-api-key": "sk-wrong"},
            "Authentication Error, Invalid proxy server token passed.",
        ),
    ):
        denied = requests.get(f"{v1}/videos/{video_id}", headers=headers)
        assert denied.status_code == 401
        assert denied.json() == {
            "error": {"message": message, "type": "auth_error", "param": "None", "code": "401"}
        }
    missing = requests.get(f"{v1}/videos/video_bm9wZQ", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "404"
    invalid = requests.post(f"{v1}/videos", headers=AUTH, json={"model": "m"})
    assert invalid.status_code == 400
    assert set(invalid.json()["error"]) == {"message", "type", "param", "code"}
    assert invalid.json()["error"]["code"] == "400"

    deleted = requests.delete(f"{v1}/videos/{video_id}", headers=AUTH)
    assert (deleted.status_code, deleted.text) == (405, '{"detail":"Method Not Allowed"}')
    assert requests.delete(f"{v1}/videos/{video_id}").status_code == 405  # before auth
    nowhere = requests.get(f"{v1}/nowhere", headers=AUTH)
    assert (nowhere.status_code, nowhere.json()) == (404, {"detail": "Not Found"})

    litellm.state.complete(video_id)
    content = requests.get(
        f"{v1}/videos/{video_id}/content?variant=spritesheet",
        headers={**AUTH, "Range": "bytes=0-9"},
    )
    assert content.status_code == 200 and content.content == MP4
    assert content.headers["Content-Type"] == "video/mp4"
    assert content.headers["Content-Length"] == str(len(MP4))  # buffered
    assert content.headers["Content-Disposition"] == f"attachment; filename=video_{video_id}.mp4"
    assert "Accept-Ranges" not in content.headers

    failing = requests.post(
        f"{v1}/videos", headers=AUTH, data={"prompt": FAIL_MARKER, "model": "m"}
    ).json()["id"]
    age(litellm, failing, 2.5)
    assert requests.get(f"{v1}/videos/{failing}", headers=AUTH).json()["status"] == "failed"
    failed = requests.get(f"{v1}/videos/{failing}/content", headers=AUTH)
    assert failed.status_code == 200 and failed.json()["error"]["code"] == "video_failed"


# --- 202 reseller ------------------------------------------------------------------------------


def test_reseller_sdk_takes_202_and_keeps_extra_fields(
    reseller: SimulatorServer, host: SimulatorServer
) -> None:
    client = sdk(reseller)
    raw = client.videos.with_raw_response.create(prompt="a fox", model="sora-2", seconds="4")
    assert raw.status_code == 202
    video = raw.parse()
    assert video.status == "queued"
    assert video.to_dict()["polling_url"] == f"{reseller.base_url}/videos/{video.id}"
    assert "unsigned_urls" not in video.to_dict()
    assert reseller.state.requests[-1].header("Content-Type").startswith("multipart/form-data")

    done = client.videos.poll(video.id, poll_interval_ms=POLL_MS)
    assert done.status == "completed"
    extra = done.to_dict()
    (url,) = extra["unsigned_urls"]
    assert url.startswith(root(host) + "/") and url.endswith(f"/{video.id}.mp4")
    expires = int(url.removeprefix(root(host) + "/").split("-")[0])
    assert expires == extra["expires_at"] and expires - done.completed_at == 24 * 3600
    assert requests.get(url).content == MP4
    assert client.videos.download_content(video.id).read() == MP4
    assert_key_never_reached(host)

    assert client.videos.delete(video.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


@pytest.mark.parametrize(
    ("marker", "status", "steps"), [(CANCEL_MARKER, "cancelled", 2), (EXPIRE_MARKER, "expired", 3)]
)
def test_reseller_cancelled_and_expired_end_sdk_polling(
    reseller: SimulatorServer, marker: str, status: str, steps: int
) -> None:
    client = sdk(reseller)
    video = client.videos.create(prompt=f"a fox {marker}", model="sora-2")
    began = time.monotonic()
    ended = client.videos.poll(video.id, poll_interval_ms=POLL_MS)
    assert time.monotonic() - began >= STEP * (steps - 1)
    assert ended.status == status  # outside Video.status's Literal
    assert ended.error is not None and ended.error.code == status
    assert "unsigned_urls" not in ended.to_dict()
    content = requests.get(f"{reseller.base_url}/videos/{video.id}/content", headers=AUTH)
    assert content.status_code == 400 and content.json()["error"]["code"] == f"video_{status}"


def test_reseller_poll_rate_limit_is_absorbed_by_sdk_retries(reseller: SimulatorServer) -> None:
    video_id = requests.post(
        f"{reseller.base_url}/videos", headers=AUTH, data={"prompt": "a", "model": "sora-2"}
    ).json()["id"]
    url = f"{reseller.base_url}/videos/{video_id}"
    assert [requests.get(url, headers=AUTH).status_code for _ in range(5)] == [200] * 5
    limited = requests.get(url, headers=AUTH)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"

    reseller.state.clear_requests()
    for _ in range(5):
        requests.get(url, headers=AUTH)
    began = time.monotonic()
    video = sdk(reseller, max_retries=2).videos.retrieve(video_id)
    assert video.id == video_id
    sdk_polls = [r for r in reseller.state.requests if r.header("x-stainless-retry-count")]
    assert [r.header("x-stainless-retry-count") for r in sdk_polls] == ["0", "1"]
    assert time.monotonic() - began >= 0.9  # it waited the Retry-After second


@pytest.fixture
def slow_reseller(host: SimulatorServer) -> Iterator[SimulatorServer]:
    server = start("reseller", host)
    yield server
    server.stop()


def test_reseller_wire(slow_reseller: SimulatorServer) -> None:
    reseller = slow_reseller
    v1 = reseller.base_url
    created = requests.post(f"{v1}/videos", headers=AUTH, json={"prompt": "a", "seconds": "8"})
    assert created.status_code == 202
    video_id = created.json()["id"]
    assert re.fullmatch(r"video_[0-9a-f]{32}", video_id)

    int_seconds = requests.post(f"{v1}/videos", headers=AUTH, json={"prompt": "a", "seconds": 8})
    assert int_seconds.status_code == 400 and int_seconds.json()["error"]["param"] == "seconds"
    mixed = requests.post(
        f"{v1}/videos", headers=AUTH, json={"prompt": "a", "size": "720x1280", "resolution": "720p"}
    )
    assert mixed.status_code == 400 and mixed.json()["error"]["param"] == "size"
    assert requests.post(f"{v1}/videos", json={"prompt": "a"}).status_code == 401

    early = requests.get(f"{v1}/videos/{video_id}/content", headers=AUTH)
    assert early.status_code == 400 and early.json()["error"]["code"] == "video_not_ready"
    missing = requests.get(f"{v1}/videos/video_{'0' * 32}", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "video_not_found"

    listed = requests.get(f"{v1}/videos", headers=AUTH).json()
    assert listed["object"] == "list" and [v["id"] for v in listed["data"]] == [video_id]

    reseller.state.complete(video_id)
    ranged = requests.get(f"{v1}/videos/{video_id}/content", headers={**AUTH, "Range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.content == MP4[:8]
    thumb = requests.get(f"{v1}/videos/{video_id}/content?variant=thumbnail", headers=AUTH)
    assert thumb.headers["Content-Type"] == "image/webp"

    deleted = requests.delete(f"{v1}/videos/{video_id}", headers=AUTH)
    assert deleted.json() == {"id": video_id, "object": "video.deleted", "deleted": True}
    assert requests.get(f"{v1}/videos/{video_id}", headers=AUTH).status_code == 404


def test_reseller_without_result_host_serves_its_own_urls() -> None:
    server = start("reseller")
    try:
        video_id = requests.post(
            f"{server.base_url}/videos", headers=AUTH, data={"prompt": "a"}
        ).json()["id"]
        server.state.complete(video_id)
        (url,) = requests.get(f"{server.base_url}/videos/{video_id}", headers=AUTH).json()[
            "unsigned_urls"
        ]
        assert url.startswith(f"{root(server)}/_results/")
        assert requests.get(url).content == MP4  # no key needed
    finally:
        server.stop()


# --- result host -------------------------------------------------------------------------------


def test_result_host_checks_tokens_and_serves_ranges(host: SimulatorServer) -> None:
    base = root(host)
    fresh = f"{base}/{int(time.time()) + 60}-{'a' * 32}/task_x.mp4"
    head = requests.head(fresh)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(MP4))
    assert requests.get(fresh, headers={"Range": "bytes=-4"}).content == MP4[-4:]
    unsatisfiable = requests.get(fresh, headers={"Range": f"bytes={len(MP4)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(MP4)}"
    expired = requests.get(f"{base}/{int(time.time()) - 1}-{'a' * 32}/task_x.mp4")
    assert expired.status_code == 403
    assert requests.get(f"{base}/forged/task_x.mp4").status_code == 403
    assert requests.get(f"{base}/only-one-part").status_code == 404
    recorded = host.state.requests[-1]
    assert recorded.path == "/only-one-part" and recorded.method == "GET"
