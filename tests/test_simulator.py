"""The simulator against real sockets: strict create rules, the video clock, content, recording,
edits/extensions/characters, large uploads and downloads, and stream bookkeeping."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3
from PIL import Image

from sora_proxy.simulator import (
    FAIL_MARKER,
    FailureSpec,
    RecordedFile,
    SimulatorServer,
    StreamRecord,
    create_simulator_app,
    large_body_chunks,
    large_body_sha256,
    media,
    recording,
)
from sora_proxy.simulator.views import render

STEP = 0.05
REPO = Path(__file__).resolve().parent.parent


def png(width: int = 720, height: int = 1280, fmt: str = "PNG") -> bytes:
    """A real image of the given pixel size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seconds_per_step=STEP) as server:
        yield server


def create(sim: SimulatorServer, **fields: str) -> dict:
    response = requests.post(
        f"{sim.base_url}/videos", files={k: (None, v) for k, v in fields.items()}
    )
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: requests.Response, status: int, message: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] == message
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


# --- create -------------------------------------------------------------------------------


def test_create_multipart_with_reference_image(sim: SimulatorServer) -> None:
    image = png()
    response = requests.post(
        f"{sim.base_url}/videos",
        data={"prompt": "a cat", "model": "sora-2", "seconds": "8"},
        files={"input_reference": ("ref.png", image, "image/png")},
    )
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["id"].startswith("video_") and len(video["id"]) == 6 + 32
    int(video["id"][6:], 16)
    assert video["object"] == "video"
    assert video["status"] == "queued" and video["progress"] == 0
    assert (video["model"], video["size"], video["seconds"]) == ("sora-2", "720x1280", "8")
    assert isinstance(video["created_at"], int) and abs(video["created_at"] - time.time()) < 5
    for key in ("completed_at", "expires_at", "remixed_from_video_id", "error"):
        assert video[key] is None
    assert response.headers["openai-poll-after-ms"] == str(int(STEP * 1000))
    assert response.headers["x-request-id"].startswith("req_")

    record = sim.state.requests[-1]
    assert (record.method, record.path) == ("POST", "/v1/videos")
    assert record.form["prompt"] == ["a cat"]
    assert record.files["input_reference"] == [RecordedFile("ref.png", "image/png", image)]


def test_create_json(sim: SimulatorServer) -> None:
    response = requests.post(f"{sim.base_url}/videos", json={"prompt": "a dog", "extra": 1})
    assert response.status_code == 200, response.text
    video = response.json()
    assert (video["model"], video["size"], video["seconds"]) == ("sora-2", "720x1280", "4")
    assert sim.state.requests[-1].json == {"prompt": "a dog", "extra": 1}


@pytest.mark.parametrize(
    "reference",
    [
        {"image_url": "data:image/png;base64," + base64.b64encode(png(1280, 720)).decode()},
        {
            "image_url": "data:image/webp;base64,"
            + base64.b64encode(png(1280, 720, "WEBP")).decode()
        },
        {"image_url": "https://example.invalid/ref.png"},
        {"file_id": "file_123"},
    ],
)
def test_create_json_reference_objects(sim: SimulatorServer, reference: dict) -> None:
    body = {"prompt": "p", "size": "1280x720", "input_reference": reference}
    response = requests.post(f"{sim.base_url}/videos", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["size"] == "1280x720"


def test_string_reference_rejected_in_multipart(sim: SimulatorServer) -> None:
    files = {"prompt": (None, "p"), "input_reference": (None, "https://example.invalid/a.png")}
    response = requests.post(f"{sim.base_url}/videos", files=files)
    message = "Invalid type for 'input_reference': expected a file, but got a string instead."
    assert_error(response, 400, message, "input_reference")


def test_string_reference_rejected_in_json(sim: SimulatorServer) -> None:
    body = {"prompt": "p", "input_reference": "https://example.invalid/a.png"}
    response = requests.post(f"{sim.base_url}/videos", json=body)
    message = "Invalid type for 'input_reference': expected an object, but got a string instead."
    assert_error(response, 400, message, "input_reference")


def test_reference_of_wrong_size_rejected(sim: SimulatorServer) -> None:
    message = "Inpaint image must match the requested width and height"
    files = {"input_reference": ("ref.png", png(1280, 720), "image/png")}
    response = requests.post(f"{sim.base_url}/videos", data={"prompt": "p"}, files=files)
    assert_error(response, 400, message, "input_reference")

    url = "data:image/png;base64," + base64.b64encode(png(720, 1280)).decode()
    body = {"prompt": "p", "size": "1280x720", "input_reference": {"image_url": url}}
    assert_error(
        requests.post(f"{sim.base_url}/videos", json=body), 400, message, "input_reference"
    )


def test_reference_must_be_an_image(sim: SimulatorServer) -> None:
    files = {"input_reference": ("ref.png", b"not an image", "image/png")}
    response = requests.post(f"{sim.base_url}/videos", data={"prompt": "p"}, files=files)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_reference"


def test_integer_seconds_rejected_in_json(sim: SimulatorServer) -> None:
    response = requests.post(f"{sim.base_url}/videos", json={"prompt": "p", "seconds": 8})
    message = "Invalid type for 'seconds': expected a string, but got an integer instead."
    assert_error(response, 400, message, "seconds")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 32001}, "prompt"),
        ({"prompt": "p", "model": "sora-3"}, "model"),
        ({"prompt": "p", "size": "640x480"}, "size"),
        ({"prompt": "p", "model": "sora-2", "size": "1792x1024"}, "size"),
        ({"prompt": "p", "model": "sora-2-2025-12-08", "size": "1024x1792"}, "size"),
        ({"prompt": "p", "seconds": "5"}, "seconds"),
    ],
)
def test_invalid_fields_rejected(sim: SimulatorServer, fields: dict, param: str) -> None:
    response = requests.post(
        f"{sim.base_url}/videos",
        files={"x": (None, "1"), **{k: (None, v) for k, v in fields.items()}},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_pro_models_take_large_sizes(sim: SimulatorServer) -> None:
    video = create(sim, prompt="p", model="sora-2-pro-2025-10-06", size="1792x1024", seconds="12")
    assert (video["size"], video["seconds"]) == ("1792x1024", "12")


def test_other_content_types_rejected(sim: SimulatorServer) -> None:
    response = requests.post(f"{sim.base_url}/videos", data={"prompt": "p"})
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["message"]


# --- auth ---------------------------------------------------------------------------------


def test_api_key_required_when_set() -> None:
    with SimulatorServer(api_key="sk-sim-secret") as sim:
        url = f"{sim.base_url}/videos"
        missing = requests.get(url)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = requests.get(url, headers={"Authorization": "Bearer sk-wrong-presented"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert "sk-wrong" not in wrong.text
        assert requests.get(url, headers={"api-key": "sk-sim-secret"}).status_code == 401
        good = requests.get(url, headers={"Authorization": "Bearer sk-sim-secret"})
        assert good.status_code == 200
        assert sim.state.requests[-1].header("authorization") == "Bearer sk-sim-secret"


def test_api_key_header_style() -> None:
    with SimulatorServer(api_key="azure-key", auth_header="api-key") as sim:
        url = f"{sim.base_url}/videos"
        assert requests.get(url, headers={"Authorization": "Bearer azure-key"}).status_code == 401
        assert requests.get(url, headers={"api-key": "azure-key"}).status_code == 200


# --- the video clock ----------------------------------------------------------------------


def test_status_clock() -> None:
    started = 1_000_000.0
    video = {"id": "video_x", "created_at": int(started), "_started": started}
    timeline = [render(video, 2.0, started + seconds) for seconds in (0, 1.9, 2.1, 4, 5.9, 6, 60)]
    assert [v["status"] for v in timeline] == [
        "queued",
        "queued",
        "in_progress",
        "in_progress",
        "in_progress",
        "completed",
        "completed",
    ]
    assert [v["progress"] for v in timeline] == [0, 0, 2, 50, 97, 100, 100]
    assert timeline[-1]["completed_at"] == int(started) + 6
    assert timeline[-1]["expires_at"] == int(started) + 3600
    assert "_started" not in timeline[0]


def test_status_progresses_to_completed() -> None:
    step = 0.2  # wide enough that a poll every 20 ms cannot miss the in_progress window
    with SimulatorServer(seconds_per_step=step) as sim:
        video = create(sim, prompt="p")
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = requests.get(f"{sim.base_url}/videos/{video['id']}")
            assert response.headers["openai-poll-after-ms"] == "200"
            current = response.json()
            seen.append((current["status"], current["progress"]))
            if current["status"] == "completed":
                break
            time.sleep(0.02)
    statuses = [status for status, _ in seen]
    assert statuses[-1] == "completed"
    assert "in_progress" in statuses
    assert statuses == sorted(statuses, key=["queued", "in_progress", "completed"].index)
    progress = [value for _, value in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(0 < value < 100 for status, value in seen if status == "in_progress")
    assert current["completed_at"] >= current["created_at"]
    assert current["expires_at"] == current["created_at"] + 3600


def test_failed_video(sim: SimulatorServer) -> None:
    video = create(sim, prompt=f"p {FAIL_MARKER}")
    time.sleep(STEP * 2.5)
    current = requests.get(f"{sim.base_url}/videos/{video['id']}").json()
    assert current["status"] == "failed"
    assert set(current["error"]) == {"code", "message"}
    assert requests.get(f"{sim.base_url}/videos/{video['id']}/content").status_code == 400


def test_unknown_video_is_404(sim: SimulatorServer) -> None:
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/content")):
        response = requests.request(method, f"{sim.base_url}/videos/video_nope{suffix}")
        message = "Video with id 'video_nope' not found."
        assert_error(response, 404, message, "video_id")


def test_delete_then_404(sim: SimulatorServer) -> None:
    video = create(sim, prompt="p")
    response = requests.delete(f"{sim.base_url}/videos/{video['id']}")
    assert response.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert requests.get(f"{sim.base_url}/videos/{video['id']}").status_code == 404
    assert requests.delete(f"{sim.base_url}/videos/{video['id']}").status_code == 404


def test_list(sim: SimulatorServer) -> None:
    ids = [create(sim, prompt=f"p{n}")["id"] for n in range(3)]
    page = requests.get(f"{sim.base_url}/videos").json()
    assert page["object"] == "list"
    assert [v["id"] for v in page["data"]] == ids[::-1]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[2], ids[0], False)
    page = requests.get(f"{sim.base_url}/videos", params={"order": "asc", "limit": 2}).json()
    assert [v["id"] for v in page["data"]] == ids[:2] and page["has_more"] is True
    page = requests.get(f"{sim.base_url}/videos", params={"order": "asc", "after": ids[1]}).json()
    assert [v["id"] for v in page["data"]] == ids[2:]
    assert requests.get(f"{sim.base_url}/videos", params={"limit": 101}).status_code == 400
    assert requests.get(f"{sim.base_url}/videos", params={"order": "up"}).status_code == 400


def test_remix(sim: SimulatorServer) -> None:
    video = create(sim, prompt="p", size="1280x720")
    url = f"{sim.base_url}/videos/{video['id']}/remix"
    assert requests.post(url, json={"prompt": "again"}).status_code == 400
    sim.state.complete(video["id"])
    remix = requests.post(url, json={"prompt": "again"}).json()
    assert remix["remixed_from_video_id"] == video["id"]
    assert (remix["prompt"], remix["size"], remix["status"]) == ("again", "1280x720", "queued")


# --- content ------------------------------------------------------------------------------


def test_content_variants(sim: SimulatorServer) -> None:
    video = create(sim, prompt="p")
    url = f"{sim.base_url}/videos/{video['id']}/content"
    not_ready = requests.get(url)
    assert not_ready.status_code == 400
    assert not_ready.json()["error"]["message"].startswith("Video is not ready yet")
    sim.state.complete(video["id"])

    mp4 = requests.get(url)
    assert mp4.status_code == 200
    assert mp4.headers["Content-Type"] == "video/mp4"
    assert mp4.headers["Content-Length"] == str(len(mp4.content))
    assert mp4.headers["Accept-Ranges"] == "bytes"
    assert mp4.content[4:8] == b"ftyp" and b"avc1" in mp4.content
    for variant in ("thumbnail", "spritesheet"):
        webp = requests.get(url, params={"variant": variant})
        assert webp.headers["Content-Type"] == "image/webp"
        assert webp.content[:4] == b"RIFF" and webp.content[8:12] == b"WEBP"
        assert Image.open(io.BytesIO(webp.content)).format == "WEBP"
    assert requests.get(url, params={"variant": "gif"}).json()["error"]["param"] == "variant"
    assert sim.state.requests[-2].query == {"variant": ["spritesheet"]}


def test_content_ranges(sim: SimulatorServer) -> None:
    video = create(sim, prompt="p")
    sim.state.complete(video["id"])
    url = f"{sim.base_url}/videos/{video['id']}/content"
    full = requests.get(url)
    size = len(full.content)
    for header, start, end in (
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, size - 1),
        ("bytes=-50", size - 50, size - 1),
    ):
        part = requests.get(url, headers={"Range": header})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert part.content == full.content[start : end + 1]
        assert part.headers["Content-Length"] == str(end + 1 - start)
    unsatisfiable = requests.get(url, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{size}"
    cached = requests.get(url, headers={"If-None-Match": full.headers["ETag"]})
    assert cached.status_code == 304


# --- recording ----------------------------------------------------------------------------


def test_record_holds_the_exact_bytes_sent(sim: SimulatorServer) -> None:
    image = png()
    boundary = "sim-test-boundary-7f3a"
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="prompt"\r\n\r\n',
            "une for\u00eat \u2014 calme\r\n".encode(),
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="unknown_extra"\r\n\r\nkept\r\n',
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="input_reference"; filename="upload"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            image,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = requests.post(f"{sim.base_url}/videos", data=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["prompt"] == "une for\u00eat \u2014 calme"

    record = sim.state.requests[-1]
    assert record.body == body
    assert record.body_length == len(body) and not record.body_truncated
    assert record.body_sha256 == hashlib.sha256(body).hexdigest()
    assert record.headers["Content-Type"] == headers["Content-Type"]
    assert record.form == {"prompt": ["une for\u00eat \u2014 calme"], "unknown_extra": ["kept"]}
    assert record.files == {
        "input_reference": [RecordedFile("upload", "application/octet-stream", image)]
    }
    sim.state.clear_requests()
    assert sim.state.requests == []


def test_record_chunked_body(sim: SimulatorServer) -> None:
    payload = json.dumps({"prompt": "chunked"}).encode()
    chunks = iter([payload[:5], payload[5:]])
    headers = {"Content-Type": "application/json"}
    response = requests.post(f"{sim.base_url}/videos", data=chunks, headers=headers)
    assert response.status_code == 200, response.text
    record = sim.state.requests[-1]
    assert record.header("transfer-encoding") == "chunked"
    assert record.body == payload and record.json == {"prompt": "chunked"}


def test_record_truncates_huge_bodies(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recording, "MAX_RECORDED_BODY", 1000)
    body = json.dumps({"prompt": "x" * 5000}).encode()
    response = requests.post(
        f"{sim.base_url}/videos", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    record = sim.state.requests[-1]
    assert record.body == body[:1000] and record.body_truncated
    assert record.body_length == len(body)
    assert record.body_sha256 == hashlib.sha256(body).hexdigest()


# --- failure injection --------------------------------------------------------------------


def test_fail_with_status_once(sim: SimulatorServer) -> None:
    sim.state.fail_next.append(FailureSpec(method="POST", status=503, headers={"retry-after": "1"}))
    response = requests.post(f"{sim.base_url}/videos", json={"prompt": "p"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "simulated_failure"
    assert sim.state.requests[-1].json == {"prompt": "p"}
    assert sim.state.videos == {}
    assert requests.post(f"{sim.base_url}/videos", json={"prompt": "p"}).status_code == 200


def test_fail_matches_method_and_path(sim: SimulatorServer) -> None:
    sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos/", method="GET", status=500))
    assert requests.get(f"{sim.base_url}/videos").status_code == 200
    assert requests.post(f"{sim.base_url}/videos", json={"prompt": "p"}).status_code == 200
    assert requests.get(f"{sim.base_url}/videos/video_x").status_code == 500
    assert sim.state.fail_next == []


def test_fail_with_reset(sim: SimulatorServer) -> None:
    sim.state.fail_next.append(FailureSpec(method="POST", reset=True))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{sim.base_url}/videos", json={"prompt": "p"})
    assert sim.state.requests[-1].json == {"prompt": "p"}
    assert requests.get(f"{sim.base_url}/videos").status_code == 200


def test_fail_with_delay(sim: SimulatorServer) -> None:
    sim.state.fail_next.append(FailureSpec(delay=0.5))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sim.base_url}/videos", timeout=(1, 0.1))
    started = time.monotonic()
    sim.state.fail_next.append(FailureSpec(delay=0.2))
    assert requests.get(f"{sim.base_url}/videos").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fail_truncated_body(sim: SimulatorServer) -> None:
    video = create(sim, prompt="p")
    sim.state.complete(video["id"])
    sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos/", truncate_after=1000))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{sim.base_url}/videos/{video['id']}/content")
    # On a raw socket: the full headers went out, then exactly 1000 body bytes, then EOF.
    sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos/", truncate_after=1000))
    port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        request = f"GET /v1/videos/{video['id']}/content HTTP/1.1\r\nHost: sim\r\n\r\n"
        conn.sendall(request.encode())
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert len(lengths) == 1 and int(lengths[0].split(b":")[1]) > 1000
    assert len(body) == 1000 and body[4:8] == b"ftyp"


# --- edits, extensions, characters --------------------------------------------------------

MP4 = media.load("video")[0]
WEBM = b"\x1a\x45\xdf\xa3" + b"\x00" * 60


def port_of(sim: SimulatorServer) -> int:
    return int(sim.base_url.rsplit(":", 1)[1].split("/")[0])


def wait_ended(record: StreamRecord) -> None:
    """The serving thread finishes its books just after the client has the last byte."""
    deadline = time.monotonic() + 5
    while not record.ended and time.monotonic() < deadline:
        time.sleep(0.01)


def completed(sim: SimulatorServer, **fields: str) -> dict:
    video = create(sim, **{"prompt": "source", **fields})
    sim.state.complete(video["id"])
    return video


def test_edit_by_id_multipart(sim: SimulatorServer) -> None:
    source = create(sim, prompt="p", model="sora-2-pro", size="1792x1024", seconds="8")
    url = f"{sim.base_url}/videos/edits"
    files = {"prompt": (None, "make it night"), "video[id]": (None, source["id"])}
    not_done = requests.post(url, files=files)
    assert not_done.status_code == 400 and not_done.json()["error"]["param"] == "video[id]"
    sim.state.complete(source["id"])
    response = requests.post(url, files=files)
    assert response.status_code == 200, response.text
    assert response.headers["openai-poll-after-ms"] == str(int(STEP * 1000))
    edited = response.json()
    assert edited["id"] != source["id"] and edited["status"] == "queued"
    assert edited["object"] == "video" and edited["prompt"] == "make it night"
    assert (edited["model"], edited["size"], edited["seconds"]) == ("sora-2-pro", "1792x1024", "8")
    assert edited["remixed_from_video_id"] is None
    assert sim.state.requests[-1].form["video[id]"] == [source["id"]]
    unknown = requests.post(url, files={**files, "video[id]": (None, "video_nope")})
    assert_error(unknown, 404, "Video with id 'video_nope' not found.", "video[id]")


def test_edit_by_id_json(sim: SimulatorServer) -> None:
    source = completed(sim)
    url = f"{sim.base_url}/videos/edits"
    response = requests.post(url, json={"video": {"id": source["id"]}, "prompt": "p2"})
    assert response.status_code == 200, response.text
    assert (response.json()["model"], response.json()["prompt"]) == ("sora-2", "p2")
    unknown = requests.post(url, json={"video": {"id": "video_nope"}, "prompt": "p"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "video_not_found"
    for body, param in (
        ({"video": source["id"], "prompt": "p"}, "video"),
        ({"prompt": "p"}, "video"),
        ({"video": {}, "prompt": "p"}, "video.id"),
        ({"video": {"id": source["id"]}}, "prompt"),
        ({"video": {"id": source["id"]}, "prompt": ""}, "prompt"),
    ):
        bad = requests.post(url, json=body)
        assert bad.status_code == 400, body
        assert bad.json()["error"]["param"] == param, body
    string = requests.post(url, json={"video": "video_1", "prompt": "p"})
    message = "Invalid type for 'video': expected an object, but got a string instead."
    assert_error(string, 400, message, "video")


def test_edit_with_file(sim: SimulatorServer) -> None:
    url = f"{sim.base_url}/videos/edits"
    for name, data in (("clip.mp4", MP4), ("clip.webm", WEBM)):
        response = requests.post(
            url, data={"prompt": "edit"}, files={"video": (name, data, "application/octet-stream")}
        )
        assert response.status_code == 200, response.text
        assert (response.json()["model"], response.json()["size"]) == ("sora-2", "720x1280")
        assert sim.state.requests[-1].files["video"] == [
            RecordedFile(name, "application/octet-stream", data)
        ]
    not_video = requests.post(
        url, data={"prompt": "edit"}, files={"video": ("clip.mp4", png(), "video/mp4")}
    )
    assert not_video.status_code == 400
    assert not_video.json()["error"]["param"] == "video"
    as_string = requests.post(url, files={"prompt": (None, "p"), "video": (None, "video_1")})
    assert as_string.status_code == 400 and as_string.json()["error"]["param"] == "video"
    missing = requests.post(url, files={"prompt": (None, "p")})
    assert_error(missing, 400, "Missing required parameter: 'video'.", "video")
    wrong_type = requests.post(url, data={"prompt": "p"})
    assert wrong_type.status_code == 400


def test_extensions(sim: SimulatorServer) -> None:
    url = f"{sim.base_url}/videos/extensions"
    source = completed(sim, seconds="8", size="1280x720")
    by_id = requests.post(
        url,
        files={"video[id]": (None, source["id"]), "prompt": (None, "on"), "seconds": (None, "4")},
    )
    assert by_id.status_code == 200, by_id.text
    assert "openai-poll-after-ms" in by_id.headers
    assert (by_id.json()["seconds"], by_id.json()["size"]) == ("12", "1280x720")
    by_json = requests.post(
        url, json={"video": {"id": source["id"]}, "prompt": "on", "seconds": "12"}
    )
    assert by_json.status_code == 200 and by_json.json()["seconds"] == "20"
    by_file = requests.post(
        url,
        data={"prompt": "on", "seconds": "8"},
        files={"video": ("a.mov", MP4, "video/quicktime")},
    )
    assert by_file.status_code == 200 and by_file.json()["seconds"] == "8"

    integer = requests.post(url, json={"video": {"id": source["id"]}, "prompt": "p", "seconds": 8})
    message = "Invalid type for 'seconds': expected a string, but got an integer instead."
    assert_error(integer, 400, message, "seconds")
    for fields in ({"prompt": "p"}, {"prompt": "p", "seconds": "5"}, {"seconds": "4"}):
        body = {"video": {"id": source["id"]}, **fields}
        bad = requests.post(url, json=body)
        assert bad.status_code == 400, fields
        assert bad.json()["error"]["param"] == ("prompt" if "prompt" not in fields else "seconds")
    unknown = requests.post(url, json={"video": {"id": "video_x"}, "prompt": "p", "seconds": "4"})
    assert unknown.status_code == 404
    not_video = requests.post(
        url, data={"prompt": "p", "seconds": "4"}, files={"video": ("a.mp4", b"x" * 64)}
    )
    assert not_video.status_code == 400 and not_video.json()["error"]["param"] == "video"


def test_characters(sim: SimulatorServer) -> None:
    url = f"{sim.base_url}/videos/characters"
    response = requests.post(
        url,
        data={"name": "Ada", "character_timestamps": "[1.0, 2.5]"},
        files={"video": ("ada.mp4", MP4, "video/mp4")},
    )
    assert response.status_code == 200, response.text
    character = response.json()
    assert set(character) == {"id", "name", "created_at"}
    assert character["id"].startswith("char_") and len(character["id"]) == 5 + 32
    int(character["id"][5:], 16)
    assert character["name"] == "Ada" and abs(character["created_at"] - time.time()) < 5
    record = sim.state.requests[-1]
    assert record.form == {"name": ["Ada"], "character_timestamps": ["[1.0, 2.5]"]}
    assert record.files["video"][0].data == MP4

    fetched = requests.get(f"{url}/{character['id']}")
    assert fetched.status_code == 200 and fetched.json() == character
    missing = requests.get(f"{url}/char_nope")
    assert_error(missing, 404, "Character with id 'char_nope' not found.", "character_id")


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({}, {"video": ("a.mp4", MP4)}, "name"),
        ({"name": ""}, {"video": ("a.mp4", MP4)}, "name"),
        ({"name": "x" * 81}, {"video": ("a.mp4", MP4)}, "name"),
        ({"name": "Ada"}, {"x": ("x.txt", b"x")}, "video"),
        ({"name": "Ada", "video": "video_1"}, {"x": ("x.txt", b"x")}, "video"),
        ({"name": "Ada"}, {"video": ("a.png", png())}, "video"),
    ],
)
def test_character_errors(sim: SimulatorServer, data: dict, files: dict, param: str) -> None:
    response = requests.post(f"{sim.base_url}/videos/characters", data=data, files=files)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_character_needs_multipart(sim: SimulatorServer) -> None:
    response = requests.post(f"{sim.base_url}/videos/characters", json={"name": "Ada"})
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["message"]
    assert requests.post(
        f"{sim.base_url}/videos/characters", data={"name": "x" * 80}, files={"video": ("v", WEBM)}
    ).ok


# --- content: conditional requests, ranges, HEAD ------------------------------------------


def test_content_headers_and_head(sim: SimulatorServer) -> None:
    video = completed(sim)
    url = f"{sim.base_url}/videos/{video['id']}/content"
    got = requests.get(url)
    assert got.headers["Content-Disposition"] == f'attachment; filename="{video["id"]}.mp4"'
    assert got.headers["ETag"].startswith('"') and got.headers["Last-Modified"].endswith("GMT")
    head = requests.head(url)
    assert head.status_code == 200 and head.content == b""
    for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges"):
        assert head.headers[name] == got.headers[name], name
    assert head.headers["Content-Disposition"] == got.headers["Content-Disposition"]
    assert len(sim.state.content_streams) == 1  # HEAD streams nothing
    thumb = requests.head(url, params={"variant": "thumbnail"})
    assert thumb.headers["Content-Disposition"].endswith('.webp"')
    assert thumb.headers["Content-Type"] == "image/webp"
    ranged = requests.head(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.headers["Content-Length"] == "10"
    bad = requests.head(url, params={"variant": "gif"})
    assert bad.status_code == 400
    assert requests.get(url, params={"variant": "gif"}).json()["error"]["param"] == "variant"


def test_content_conditional_requests(sim: SimulatorServer) -> None:
    video = completed(sim)
    url = f"{sim.base_url}/videos/{video['id']}/content"
    full = requests.get(url)
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
    size = len(full.content)

    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"x", {etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
    ):
        cached = requests.get(url, headers=headers)
        assert cached.status_code == 304, headers
        assert cached.content == b"" and cached.headers["ETag"] == etag
        assert cached.headers["x-request-id"].startswith("req_")
    assert requests.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert requests.get(url, headers={"If-Modified-Since": old}).status_code == 200
    # If-None-Match wins over If-Modified-Since.
    both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert requests.get(url, headers=both).status_code == 200

    ranged = {"Range": "bytes=0-9"}
    for if_range, status in (
        (etag, 206),
        (modified, 206),
        ('"stale"', 200),
        (old, 200),
        ("W/" + etag, 200),
    ):
        response = requests.get(url, headers={**ranged, "If-Range": if_range})
        assert response.status_code == status, if_range
        assert len(response.content) == (10 if status == 206 else size)
    several = requests.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and len(several.content) == size
    unsatisfiable = requests.get(url, headers={"Range": "bytes=-0"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{size}"
    assert unsatisfiable.json()["error"]["code"] == "range_not_satisfiable"


# --- large bodies -------------------------------------------------------------------------


def test_large_body_chunks_are_consistent() -> None:
    size = (3 << 20) + 17
    whole = b"".join(large_body_chunks(size, seed=5))
    assert len(whole) == size and whole[4:8] == b"ftyp"
    assert hashlib.sha256(whole).hexdigest() == large_body_sha256(size, seed=5)
    assert whole != b"".join(large_body_chunks(size, seed=6))
    for start, end in (
        (0, 1),
        (1, 1 << 20),
        ((1 << 20) - 3, (2 << 20) + 5),
        (size - 4, size),
        (5, None),
        (size, size),
        (10, size + 100),
    ):
        assert b"".join(large_body_chunks(size, 5, start, end)) == whole[start:end]
    assert max(len(chunk) for chunk in large_body_chunks(size, 5)) == 1 << 20


def test_large_download_streams_exact_bytes(sim: SimulatorServer) -> None:
    size = 300 * 1000 * 1000 + 123
    video_id = sim.state.add_large_video(size, seed=3)
    assert requests.get(f"{sim.base_url}/videos/{video_id}").json()["status"] == "completed"
    digest = hashlib.sha256()
    received = 0
    started = time.monotonic()
    with requests.get(f"{sim.base_url}/videos/{video_id}/content", stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(size)
        assert response.headers["Content-Type"] == "video/mp4"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Content-Disposition"] == f'attachment; filename="{video_id}.mp4"'
        assert response.headers["ETag"] and response.headers["Last-Modified"]
        for chunk in response.raw.stream(1 << 20, decode_content=False):
            digest.update(chunk)
            received += len(chunk)
    elapsed = time.monotonic() - started
    assert received == size
    assert digest.hexdigest() == large_body_sha256(size, seed=3)
    record = sim.state.content_streams[-1]
    assert (record.video_id, record.variant, record.start, record.length) == (
        video_id,
        "video",
        0,
        size,
    )
    wait_ended(record)
    assert record.finished and not record.closed_early and record.bytes_sent == size
    print(f"300 MB download in {elapsed:.2f} s ({size / elapsed / 1e6:.0f} MB/s)")


def test_large_ranges(sim: SimulatorServer) -> None:
    size = 300 << 20
    video_id = sim.state.add_large_video(size, seed=9)
    url = f"{sim.base_url}/videos/{video_id}/content"
    first, last = 123_456_789, 123_456_789 + (5 << 20)
    middle = requests.get(url, headers={"Range": f"bytes={first}-{last}"})
    assert middle.status_code == 206
    assert middle.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert middle.content == b"".join(large_body_chunks(size, 9, first, last + 1))
    record = sim.state.content_streams[-1]
    assert (record.start, record.length, record.total) == (first, last + 1 - first, size)
    tail = requests.get(url, headers={"Range": "bytes=-1000"})
    assert tail.headers["Content-Range"] == f"bytes {size - 1000}-{size - 1}/{size}"
    assert tail.content == b"".join(large_body_chunks(size, 9, size - 1000))
    from_end = requests.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert from_end.status_code == 206 and len(from_end.content) == 10
    beyond = requests.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    head = requests.head(url)
    assert head.headers["Content-Length"] == str(size) and head.content == b""
    cached = requests.get(url, headers={"If-None-Match": head.headers["ETag"]})
    assert cached.status_code == 304


def test_large_video_other_variant(sim: SimulatorServer) -> None:
    video_id = sim.state.add_large_video(2 << 20, seed=1, variant="spritesheet")
    url = f"{sim.base_url}/videos/{video_id}/content"
    sheet = requests.get(url, params={"variant": "spritesheet"})
    assert sheet.headers["Content-Type"] == "image/webp"
    assert sheet.headers["Content-Disposition"] == f'attachment; filename="{video_id}.webp"'
    assert sheet.content == b"".join(large_body_chunks(2 << 20, 1))
    assert requests.get(url).content == MP4
    with pytest.raises(ValueError):
        sim.state.add_large_video(10, variant="gif")


# --- stream bookkeeping and slow or cut streams -------------------------------------------


def test_closed_early_when_the_client_goes_away(sim: SimulatorServer) -> None:
    video_id = sim.state.add_large_video(200 << 20)
    with socket.create_connection(("127.0.0.1", port_of(sim)), timeout=5) as conn:
        conn.sendall(f"GET /v1/videos/{video_id}/content HTTP/1.1\r\nHost: sim\r\n\r\n".encode())
        received = 0
        while received < 3 << 20:
            chunk = conn.recv(1 << 20)
            assert chunk
            received += len(chunk)
        record = sim.state.content_streams[-1]
        assert not record.ended
    wait_ended(record)
    assert record.closed_early and not record.finished
    assert 0 < record.bytes_sent < 200 << 20


def test_chunk_delay_slows_a_stream(sim: SimulatorServer) -> None:
    video_id = sim.state.add_large_video(6 << 20)
    url = f"{sim.base_url}/videos/{video_id}/content"
    sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos/", chunk_delay=0.1))
    started = time.monotonic()
    slow = requests.get(url, stream=True)
    first_byte = time.monotonic() - started
    body = slow.raw.read()
    elapsed = time.monotonic() - started
    assert first_byte < 0.3 and elapsed >= 0.5  # headers at once, then 5 gaps of 0.1 s
    assert body == b"".join(large_body_chunks(6 << 20))
    record = sim.state.content_streams[-1]
    wait_ended(record)
    assert record.finished
    started = time.monotonic()
    assert len(requests.get(url).content) == 6 << 20
    assert time.monotonic() - started < 0.5


def test_slow_stream_read_timeout(sim: SimulatorServer) -> None:
    video_id = sim.state.add_large_video(4 << 20)
    sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos/", chunk_delay=0.5))
    response = requests.get(f"{sim.base_url}/videos/{video_id}/content", stream=True, timeout=0.2)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        for _ in response.raw.stream(1 << 20, decode_content=False):
            pass
    response.close()
    # The upstream side notices at its next write, after the current delay.
    record = sim.state.content_streams[-1]
    wait_ended(record)
    assert record.closed_early


def test_truncated_large_stream_is_closed_early(sim: SimulatorServer) -> None:
    video_id = sim.state.add_large_video(20 << 20)
    sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos/", truncate_after=3 << 20))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{sim.base_url}/videos/{video_id}/content").content  # noqa: B018
    record = sim.state.content_streams[-1]
    wait_ended(record)
    assert record.closed_early and record.bytes_sent <= 3 << 20


# --- large uploads ------------------------------------------------------------------------


def test_150mb_upload_recorded_by_digest(sim: SimulatorServer) -> None:
    size = 150 * 1000 * 1000
    boundary = "large-upload-boundary"
    file_digest, body_digest = hashlib.sha256(), hashlib.sha256()
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nBig\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        for piece in (head, *large_body_chunks(size, seed=11), f"\r\n--{boundary}--\r\n".encode()):
            if piece is not head and sent < size and not piece.startswith(b"\r\n--"):
                file_digest.update(piece)
            body_digest.update(piece)
            sent += len(piece)
            yield piece

    started = time.monotonic()
    response = requests.post(
        f"{sim.base_url}/videos/characters",
        data=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    record = sim.state.requests[-1]
    assert record.body_length == sent and record.body_sha256 == body_digest.hexdigest()
    assert record.body_truncated and len(record.body) == recording.MAX_RECORDED_BODY
    upload = record.files["video"][0]
    assert (upload.filename, upload.content_type, upload.size) == ("big.mp4", "video/mp4", size)
    assert upload.sha256 == file_digest.hexdigest() == large_body_sha256(size, seed=11)
    assert upload.truncated and len(upload.data) == recording.MAX_RECORDED_BODY
    head_digest = hashlib.sha256()
    for chunk in large_body_chunks(size, 11, 0, len(upload.data)):
        head_digest.update(chunk)
    assert hashlib.sha256(upload.data).hexdigest() == head_digest.hexdigest()
    assert record.form == {"name": ["Big"]}
    print(f"150 MB multipart upload in {elapsed:.2f} s")


def test_small_file_record_fields(sim: SimulatorServer) -> None:
    requests.post(
        f"{sim.base_url}/videos/characters", data={"name": "a"}, files={"video": ("v", MP4)}
    )
    upload = sim.state.requests[-1].files["video"][0]
    assert (upload.size, upload.truncated) == (len(MP4), False)
    assert upload.sha256 == hashlib.sha256(MP4).hexdigest()


# --- the rest of the surface --------------------------------------------------------------


def test_list_pagination(sim: SimulatorServer) -> None:
    ids = [create(sim, prompt=f"p{n}")["id"] for n in range(5)]
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = requests.get(f"{sim.base_url}/videos", params=params).json()
        seen += [video["id"] for video in page["data"]]
        assert page["first_id"] == page["data"][0]["id"]
        assert page["last_id"] == page["data"][-1]["id"]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert seen == ids[::-1]
    asc = requests.get(f"{sim.base_url}/videos", params={"order": "asc", "after": ids[2]}).json()
    assert [v["id"] for v in asc["data"]] == ids[3:] and asc["has_more"] is False
    empty = requests.get(f"{sim.base_url}/videos", params={"limit": 0}).json()
    assert empty["data"] == [] and empty["first_id"] is None and empty["has_more"] is True


def test_remix_poll_header_and_source(sim: SimulatorServer) -> None:
    source = completed(sim)
    response = requests.post(f"{sim.base_url}/videos/{source['id']}/remix", json={"prompt": "r"})
    assert response.headers["openai-poll-after-ms"] == str(int(STEP * 1000))
    assert response.json()["remixed_from_video_id"] == source["id"]
    missing = requests.post(f"{sim.base_url}/videos/video_nope/remix", json={"prompt": "r"})
    assert missing.status_code == 404


def test_remix_of_an_extended_video(sim: SimulatorServer) -> None:
    # An extension's seconds is the stitched total ("16"), which no create may ask for; the
    # remix caller sends only a prompt, so nothing about seconds may be refused.
    source = completed(sim, seconds="8", size="1280x720")
    extended = requests.post(
        f"{sim.base_url}/videos/extensions",
        json={"video": {"id": source["id"]}, "prompt": "and on", "seconds": "8"},
    ).json()
    assert extended["seconds"] == "16"
    sim.state.complete(extended["id"])
    for send in ({"json": {"prompt": "at night"}}, {"files": {"prompt": (None, "at night")}}):
        response = requests.post(f"{sim.base_url}/videos/{extended['id']}/remix", **send)
        assert response.status_code == 200, response.text
        remix = response.json()
        assert (remix["seconds"], remix["size"], remix["model"]) == ("16", "1280x720", "sora-2")
        assert remix["remixed_from_video_id"] == extended["id"]
    missing = requests.post(f"{sim.base_url}/videos/{extended['id']}/remix", json={})
    assert_error(missing, 400, "Missing required parameter: 'prompt'.", "prompt")


def test_request_id_on_every_response(sim: SimulatorServer) -> None:
    video = completed(sim)
    content = f"{sim.base_url}/videos/{video['id']}/content"
    sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos/nope", status=502))
    responses = [
        requests.get(f"{sim.base_url}/videos"),
        requests.get(f"{sim.base_url}/videos/nope"),
        requests.get(f"{sim.base_url}/nothing-here"),
        requests.put(f"{sim.base_url}/videos"),
        requests.get(content),
        requests.head(content),
        requests.get(content, headers={"Range": "bytes=99999999-"}),
        requests.get(content, headers={"If-None-Match": "*"}),
        requests.get(f"{sim.base_url}/videos/characters/char_x"),
        requests.post(f"{sim.base_url}/videos/edits", json={}),
        requests.delete(f"{sim.base_url}/videos/{video['id']}"),
    ]
    assert [r.status_code for r in responses] == [
        200,
        502,
        404,
        405,
        200,
        200,
        416,
        304,
        404,
        400,
        200,
    ]
    for response in responses:
        assert response.headers["x-request-id"].startswith("req_"), response.url


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_openai_sdk_edits_extensions_characters(sim: SimulatorServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sk-any", base_url=sim.base_url, max_retries=0)
    source = completed(sim)
    # openai 3.x raises before sending video={"id": ...} (it wants a file there); extra_body
    # gets the same multipart text part, video[id], onto the wire.
    edited = client.videos.edit(
        video=openai.omit, prompt="edit", extra_body={"video": {"id": source["id"]}}
    )
    assert edited.status == "queued"
    assert sim.state.requests[-1].form["video[id]"] == [source["id"]]
    extended = client.videos.extend(
        video=("clip.mp4", MP4, "video/mp4"), prompt="more", seconds="4"
    )
    assert extended.seconds == "4"
    assert sim.state.requests[-1].files["video"][0].data == MP4
    character = client.videos.create_character(name="Ada", video=("ada.mp4", MP4, "video/mp4"))
    assert client.videos.get_character(character.id).name == "Ada"
    with pytest.raises(openai.NotFoundError):
        client.videos.get_character("char_nope")


# --- clients and entry points -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_openai_sdk_round_trip(sim: SimulatorServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sk-any", base_url=sim.base_url, max_retries=0)
    image = png(1280, 720)
    video = client.videos.create(
        prompt="sdk", size="1280x720", input_reference=("ref.png", image, "image/png")
    )
    assert video.status == "queued" and video.size == "1280x720"
    assert sim.state.requests[-1].files["input_reference"][0].data == image
    sim.state.complete(video.id)
    assert client.videos.retrieve(video.id).status == "completed"
    content = client.videos.download_content(video.id)
    assert content.read()[4:8] == b"ftyp"
    with pytest.raises(openai.BadRequestError):
        client.videos.create(
            prompt="sdk", size="1280x720", input_reference=("r.png", png(), "image/png")
        )


def test_app_without_server() -> None:
    app = create_simulator_app(seconds_per_step=STEP)
    response = app.test_client().post("/v1/videos", json={"prompt": "p"})
    assert response.status_code == 200
    assert app.extensions["sora_simulator"].requests[-1].body == b'{"prompt": "p"}'
    with pytest.raises(ValueError):
        create_simulator_app(auth_header="x-key")


def test_base_url_needs_a_running_server() -> None:
    server = SimulatorServer()
    with pytest.raises(RuntimeError):
        server.base_url  # noqa: B018
    server.stop()


def test_command_line_entry_point() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sora_proxy.simulator",
            "--port",
            str(port),
            "--seconds-per-step",
            "0.01",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        base_url = f"http://127.0.0.1:{port}/v1"
        assert line.endswith(base_url)
        assert (
            requests.post(f"{base_url}/videos", json={"prompt": "p"}, timeout=5).status_code == 200
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
