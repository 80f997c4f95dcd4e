"""The vLLM-Omni simulator, driven with the official ``openai`` SDK (and raw HTTP where the SDK
cannot go) over real sockets, to show it behaves as ``shared/dialects/vllm-omni.md`` says."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator

import openai
import pytest
import requests
from PIL import Image

from sora_proxy.simulator import SimulatorServer, media
from sora_proxy.simulator.vllm_omni import (
    DEFAULT_SERVED_MODEL,
    FAIL_MARKER,
    REJECT_MARKER,
    create_vllm_omni_app,
)

STEP = 0.05
KEY = "vllm-secret"
VIDEO_KEYS = [
    "id", "object", "model", "prompt", "status", "size", "progress", "seconds", "quality",
    "created_at", "completed_at", "remixed_from_video_id", "error", "media_type", "expires_at",
    "file_name", "inference_time_s", "fps", "num_frames", "duration_s", "metrics",
    "stage_durations", "peak_memory_mb", "action",
]  # fmt: skip


def png(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(app=create_vllm_omni_app(seconds_per_step=STEP)) as server:
        yield server


@pytest.fixture
def client(sim: SimulatorServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="unused")


def create(sim: SimulatorServer, **fields: str) -> dict:
    response = requests.post(
        f"{sim.base_url}/videos", files={k: (None, v) for k, v in fields.items()}
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(STEP / 5)


def retrieves(sim: SimulatorServer, video_id: str) -> int:
    return sum(
        1 for r in sim.state.requests if r.method == "GET" and r.path == f"/v1/videos/{video_id}"
    )


def error_body(
    status: int, message: str, *, param: str | None = None, kind: str | None = None
) -> dict:
    phrases = {400: "Bad Request", 404: "Not Found", 422: "Unprocessable Entity"}
    return {
        "error": {
            "message": message,
            "type": kind or phrases[status],
            "param": param,
            "code": status,
        }
    }


# --- create ---------------------------------------------------------------------------------


def test_sdk_create_sends_multipart_and_gets_a_queued_video_response(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    raw = client.videos.with_raw_response.create(prompt="a red fox", seconds="4")
    assert raw.status_code == 200
    body = json.loads(raw.content)
    assert list(body) == VIDEO_KEYS
    assert re.fullmatch(r"video_gen_[0-9a-f]{32}", body["id"])
    assert body | {"id": "", "created_at": 0} == {
        "id": "", "object": "video", "model": DEFAULT_SERVED_MODEL, "prompt": "a red fox",
        "status": "queued", "size": None, "progress": 0, "seconds": "4", "quality": "default",
        "created_at": 0, "completed_at": None, "remixed_from_video_id": None, "error": None,
        "media_type": "video/mp4", "expires_at": None, "file_name": None,
        "inference_time_s": None, "fps": 24.0, "num_frames": 96, "duration_s": 4.0,
        "metrics": None, "stage_durations": {}, "peak_memory_mb": 0.0, "action": None,
    }  # fmt: skip
    video = raw.parse()
    assert video.id == body["id"] and video.status == "queued"

    record = sim.state.requests[-1]
    assert (record.method, record.path) == ("POST", "/v1/videos")
    assert record.header("Content-Type").startswith("multipart/form-data; boundary=")
    assert record.form == {"prompt": ["a red fox"], "seconds": ["4"]}


def test_sdk_create_with_a_reference_image_and_extra_form_fields(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    image = png()
    video = client.videos.create(
        prompt="the fox runs",
        input_reference=("ref.png", image, "image/png"),
        size="832x480",
        extra_body={"num_frames": 65, "fps": 16, "negative_prompt": "blur", "seed": 7},
    )
    record = sim.state.requests[-1]
    assert record.files["input_reference"][0].data == image
    assert record.form["num_frames"] == ["65"] and record.form["negative_prompt"] == ["blur"]
    assert (video.size, video.seconds) == ("832x480", "4")  # seconds "4" even for 65 frames
    extra = video.model_extra or {}
    assert (extra["num_frames"], extra["fps"], extra["duration_s"]) == (65, 16.0, 65 / 16)


def test_width_and_height_leave_size_null_and_size_overrides_them(sim: SimulatorServer) -> None:
    assert create(sim, prompt="p", width="1280", height="720")["size"] is None
    assert create(sim, prompt="p", size="1280x720", width="64", height="64")["size"] == "1280x720"
    body = create(sim, prompt="p", seconds="8", fps="12", quality="high", unknown_field="x")
    assert (body["seconds"], body["num_frames"], body["fps"], body["quality"]) == (
        "8",
        96,
        12.0,
        "high",
    )


def test_a_urlencoded_create_works_and_a_json_create_is_a_400_on_body_prompt(
    sim: SimulatorServer,
) -> None:
    response = requests.post(f"{sim.base_url}/videos", data={"prompt": "urlencoded"})
    assert response.status_code == 200 and response.json()["prompt"] == "urlencoded"

    response = requests.post(f"{sim.base_url}/videos", json={"prompt": "json", "seconds": "4"})
    assert response.status_code == 400
    message = (
        "1 validation error:\n"
        "  {'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required', 'input': None}"
    )
    assert response.json() == error_body(400, message, param="body.prompt")
    assert sim.state.requests[-1].json == {"prompt": "json", "seconds": "4"}
    assert len(sim.state.list_videos()) == 1


def test_the_model_must_be_omitted_or_the_served_name(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt="p", model="sora-2")
    message = f"Model mismatch: request specifies 'sora-2' but server is running '{DEFAULT_SERVED_MODEL}'."
    assert caught.value.response.json() == error_body(400, message)
    assert (
        client.videos.create(prompt="p", model=DEFAULT_SERVED_MODEL).model == DEFAULT_SERVED_MODEL
    )

    custom = create_vllm_omni_app(served_model="wan-t2v", seconds_per_step=STEP)
    with SimulatorServer(app=custom) as other:
        assert create(other, prompt="p")["model"] == "wan-t2v"
        assert create(other, prompt="p", model="wan-t2v")["model"] == "wan-t2v"


@pytest.mark.parametrize(
    ("fields", "param", "kind"),
    [
        ({"width": "wide"}, "body.width", "int_parsing"),
        ({"fps": "fast"}, "body.fps", "float_parsing"),
        ({"seconds": "0"}, "body.seconds", "string_pattern_mismatch"),
        ({"seconds": "4.5"}, "body.seconds", "string_pattern_mismatch"),
        ({"size": "1280*720"}, "body.size", "string_pattern_mismatch"),
        ({"generate_sound": "maybe"}, "body.generate_sound", "bool_parsing"),
    ],
)
def test_a_form_value_that_does_not_coerce_is_a_validation_400(
    sim: SimulatorServer, fields: dict[str, str], param: str, kind: str
) -> None:
    response = requests.post(f"{sim.base_url}/videos", data={"prompt": "p", **fields})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("Bad Request", param, 400)
    assert error["message"].startswith("1 validation error:\n  {'type': '" + kind)


def test_the_request_models_own_checks(sim: SimulatorServer) -> None:
    def post(data: dict[str, str], files: dict | None = None) -> requests.Response:
        return requests.post(f"{sim.base_url}/videos", data={"prompt": "p", **data}, files=files)

    response = post({"num_inference_steps": "500"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("BadRequestError", None, 400)
    assert "num_inference_steps\n  Input should be less than or equal to 200" in error["message"]

    reference = json.dumps({"image_url": "https://example.com/cat.png"})
    image = {"input_reference": ("ref.png", png(), "image/png")}
    response = post({"image_reference": reference}, image)
    assert response.json() == error_body(
        400, "Provide either input_reference or image_reference, not both."
    )
    assert post({"image_reference": "{not json"}).json() == error_body(
        400, "Invalid JSON in form field."
    )
    assert post({"extra_params": "[1]"}).json() == error_body(
        400, "Invalid JSON in form field: expected dict, got list."
    )
    bad_image = {"input_reference": ("ref.png", b"not an image", "image/png")}
    assert post({}, bad_image).json() == error_body(400, "Invalid input reference.")
    assert post({"image_reference": reference}).status_code == 200


# --- the job's life -------------------------------------------------------------------------


def test_create_and_poll_goes_queued_in_progress_completed_with_progress_0_then_100(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    video = client.videos.create(prompt="watch me")
    seen: list[tuple[str, int]] = []

    def finished() -> bool:
        body = requests.get(f"{sim.base_url}/videos/{video.id}").json()
        if not seen or seen[-1] != (body["status"], body["progress"]):
            seen.append((body["status"], body["progress"]))
        return body["status"] == "completed"

    wait_until(finished)
    assert seen == [("queued", 0), ("in_progress", 0), ("completed", 100)]

    done = client.videos.create_and_poll(prompt="a cat", seconds="4", poll_interval_ms=20)
    assert (done.status, done.progress, done.error) == ("completed", 100, None)
    extra = done.model_extra or {}
    assert extra["file_name"] == f"{done.id}.mp4"
    assert done.completed_at is not None and done.completed_at >= done.created_at
    # Wan2.2 makes 4k+1 frames: 4 s at 24 fps asks 96 and gets 97.
    assert (extra["num_frames"], extra["fps"], extra["duration_s"]) == (97, 24.0, 97 / 24)
    assert extra["inference_time_s"] == pytest.approx(2 * STEP)


def test_a_failed_job_is_answered_500_and_the_sdk_retries_it_twice(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    video = client.videos.create(prompt=f"burn {FAIL_MARKER}")
    wait_until(lambda: requests.get(f"{sim.base_url}/videos/{video.id}").status_code == 500)

    before = retrieves(sim, video.id)
    with pytest.raises(openai.InternalServerError) as caught:
        client.videos.retrieve(video.id)
    assert retrieves(sim, video.id) - before == 3  # the first try and two retries

    body = caught.value.response.json()
    assert list(body) == VIDEO_KEYS
    assert body["status"] == "failed" and body["progress"] == 0
    assert body["error"]["code"] == 500 and isinstance(body["error"]["code"], int)
    assert body["completed_at"] is not None and body["file_name"] is None

    before = retrieves(sim, video.id)
    with pytest.raises(openai.InternalServerError):
        client.with_options(max_retries=0).videos.retrieve(video.id)
    assert retrieves(sim, video.id) - before == 1

    # create_and_poll never returns the failed video: its poll raises.
    with pytest.raises(openai.InternalServerError):
        client.with_options(max_retries=0).videos.create_and_poll(
            prompt=f"again {FAIL_MARKER}", poll_interval_ms=20
        )


def test_a_model_rejection_fails_the_job_with_400_straight_from_queued(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    video = client.videos.create(prompt=f"odd {REJECT_MARKER}")
    assert requests.get(f"{sim.base_url}/videos/{video.id}").json()["status"] == "queued"
    wait_until(lambda: requests.get(f"{sim.base_url}/videos/{video.id}").status_code != 200)

    before = retrieves(sim, video.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.retrieve(video.id)
    assert retrieves(sim, video.id) - before == 1  # a 400 is not retried
    body = caught.value.response.json()
    assert body["status"] == "failed"
    assert body["error"] == {
        "code": 400,
        "message": "This diffusion model requires 121 frames; got 81.",
    }
    assert body["inference_time_s"] == 0


def test_a_fixed_frame_count_model_rejects_other_num_frames() -> None:
    app = create_vllm_omni_app(seconds_per_step=STEP, required_num_frames=121)
    with SimulatorServer(app=app) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="unused", max_retries=0)
        accepted = client.videos.create(prompt="p", extra_body={"num_frames": 121})
        refused = client.videos.create(prompt="p", extra_body={"num_frames": 81})
        plain = client.videos.create(prompt="p", seconds="8")
        for video in (accepted, refused, plain):
            sim.state.complete(video.id)
        assert client.videos.retrieve(accepted.id).status == "completed"
        assert client.videos.retrieve(plain.id).status == "completed"
        with pytest.raises(openai.BadRequestError) as caught:
            client.videos.retrieve(refused.id)
        message = "This diffusion model requires 121 frames; got 81."
        assert caught.value.response.json()["error"] == {"code": 400, "message": message}


# --- content --------------------------------------------------------------------------------


def test_download_content_gives_the_mp4_whatever_the_variant(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    video = client.videos.create_and_poll(prompt="p", poll_interval_ms=20)
    mp4, _, _ = media.load("video")
    for variant in ("video", "thumbnail", "spritesheet"):
        content = client.videos.download_content(video.id, variant=variant)
        assert content.content == mp4
        assert content.response.headers["content-type"] == "video/mp4"
        disposition = content.response.headers["content-disposition"]
        assert disposition == f'attachment; filename="{video.id}.mp4"'
        assert sim.state.requests[-1].query == {"variant": [variant]}

    response = requests.get(
        f"{sim.base_url}/videos/{video.id}/content", headers={"Range": "bytes=0-9"}
    )
    assert response.status_code == 206 and response.content == mp4[:10]


def test_content_is_404_while_running_422_when_failed_and_404_when_unknown(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    running = create(sim, prompt="slow")
    response = requests.get(f"{sim.base_url}/videos/{running['id']}/content")
    assert response.json() == error_body(404, "Generation is still in-progress")
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(running["id"])

    failed = create(sim, prompt=FAIL_MARKER)
    sim.state.complete(failed["id"])
    response = requests.get(f"{sim.base_url}/videos/{failed['id']}/content")
    message = "Video generation failed. Check job status for error details."
    assert response.json() == error_body(422, message)

    response = requests.get(f"{sim.base_url}/videos/video_gen_{'0' * 32}/content")
    assert response.json() == error_body(404, "Video not found")


# --- list, delete, what is missing ----------------------------------------------------------


def test_list_is_newest_first_without_a_default_limit_and_an_unknown_after_is_empty(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    ids = [create(sim, prompt=f"p{n}")["id"] for n in range(25)]
    for offset, video_id in enumerate(ids):  # distinct created_at, oldest first
        sim.state.get_video(video_id)["created_at"] = 1_700_000_000 + offset

    body = requests.get(f"{sim.base_url}/videos").json()
    assert list(body) == ["object", "data", "first_id", "last_id", "has_more"]
    assert [v["id"] for v in body["data"]] == ids[::-1]  # all 25: no default limit
    assert (body["first_id"], body["last_id"], body["has_more"]) == (ids[-1], ids[0], False)

    page = client.videos.list(order="asc", limit=2)
    assert [v.id for v in page.data] == ids[:2] and page.has_more is True
    assert [v.id for v in client.videos.list(order="asc", after=ids[22]).data] == ids[23:]
    assert [v.id for v in client.videos.list(order="asc", limit=10)] == ids  # auto-paging

    empty = requests.get(f"{sim.base_url}/videos", params={"after": "video_gen_unknown"}).json()
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }

    response = requests.get(f"{sim.base_url}/videos", params={"limit": "101"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "query.limit"


def test_list_desc_keeps_jobs_of_the_same_second_oldest_first(sim: SimulatorServer) -> None:
    ids = [create(sim, prompt=f"p{n}")["id"] for n in range(3)]
    for video_id in ids:
        sim.state.get_video(video_id)["created_at"] = 1_700_000_000
    assert [v["id"] for v in requests.get(f"{sim.base_url}/videos").json()["data"]] == ids


def test_delete_answers_the_deleted_shape_and_forgets_the_job(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    running = create(sim, prompt="cancel me")
    response = requests.delete(f"{sim.base_url}/videos/{running['id']}")
    assert response.status_code == 200
    assert list(response.json()) == ["id", "deleted", "object"]
    assert response.json() == {"id": running["id"], "deleted": True, "object": "video.deleted"}

    done = client.videos.create_and_poll(prompt="p", poll_interval_ms=20)
    deleted = client.videos.delete(done.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (done.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.retrieve(done.id)
    assert caught.value.response.json() == error_body(404, "Video not found")


def test_remix_edits_extensions_and_characters_do_not_exist(
    sim: SimulatorServer, client: openai.OpenAI
) -> None:
    video = create(sim, prompt="p")
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.remix(video["id"], prompt="again")
    assert caught.value.response.json() == {"detail": "Not Found"}
    assert requests.get(f"{sim.base_url}/videos/characters/char_1").json() == {
        "detail": "Not Found"
    }
    # POST /v1/videos/edits lands on /v1/videos/{video_id}, which has GET and DELETE only.
    for path in ("edits", "extensions", "characters"):
        response = requests.post(f"{sim.base_url}/videos/{path}", data={"prompt": "p"})
        assert response.status_code == 405
        assert response.json() == {"detail": "Method Not Allowed"}
        assert response.headers["Allow"] == "GET, DELETE"


# --- sync, health, auth ---------------------------------------------------------------------


def test_sync_create_answers_the_raw_mp4_and_keeps_no_job(sim: SimulatorServer) -> None:
    response = requests.post(f"{sim.base_url}/videos/sync", data={"prompt": "now", "seconds": "4"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.content == media.load("video")[0]
    assert re.fullmatch(r"video_sync-[0-9a-f]{32}", response.headers["X-Request-Id"])
    assert response.headers["X-Model"] == DEFAULT_SERVED_MODEL
    assert float(response.headers["X-Inference-Time-S"]) == pytest.approx(2 * STEP)
    assert response.headers["X-Stage-Durations"] == "{}"
    assert response.headers["X-Peak-Memory-MB"] == "0.000"
    assert sim.state.list_videos() == []

    failed = requests.post(f"{sim.base_url}/videos/sync", data={"prompt": FAIL_MARKER})
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert (error["type"], error["code"], error["error_stage_id"]) == (
        "InternalServerError",
        500,
        0,
    )
    assert error["request_id"].startswith("video_sync-")


def test_health_is_an_empty_200(sim: SimulatorServer) -> None:
    response = requests.get(sim.base_url.removesuffix("/v1") + "/health")
    assert (response.status_code, response.content) == (200, b"")


def test_with_an_api_key_every_v1_path_needs_the_bearer() -> None:
    app = create_vllm_omni_app(api_key=KEY, seconds_per_step=STEP)
    with SimulatorServer(app=app) as sim:
        root = sim.base_url.removesuffix("/v1")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            response = requests.get(f"{sim.base_url}/videos", headers=headers)
            assert (response.status_code, response.json()) == (401, {"error": "Unauthorized"})
        for path in ("/v1/videos/video_gen_x/content", "/v1/nothing/here"):
            assert requests.get(root + path).json() == {"error": "Unauthorized"}
        assert requests.get(f"{root}/health").status_code == 200

        lower = requests.post(
            f"{sim.base_url}/videos",
            data={"prompt": "p"},
            headers={"Authorization": f"bearer {KEY}"},
        )
        assert lower.status_code == 200

        with pytest.raises(openai.AuthenticationError) as caught:
            openai.OpenAI(base_url=sim.base_url, api_key="wrong").videos.list()
        assert caught.value.response.json() == {"error": "Unauthorized"}

        client = openai.OpenAI(base_url=sim.base_url, api_key=KEY)
        video = client.videos.create_and_poll(prompt="p", poll_interval_ms=20)
        assert client.videos.download_content(video.id).content == media.load("video")[0]
        assert sim.state.requests[-1].header("Authorization") == f"Bearer {KEY}"
