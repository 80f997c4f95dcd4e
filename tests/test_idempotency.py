"""Idempotency-Key: a repeated POST replays the first answer and never reaches the upstream twice."""

from __future__ import annotations

import io
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import UPSTREAM_KEY
from images import make_image
from servers import Gunicorn

from sora_proxy import create_app
from sora_proxy.simulator import FailureSpec, SimulatorServer
from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")
KEY_A = "sk-idem-alice"
KEY_B = "sk-idem-bob"


@pytest.fixture(params=["sqlite", "redis"])
def client(request, upstream, tmp_path):
    if request.param == "sqlite":
        store = {"SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/s.db"}
    else:
        store = {
            "SORA_PROXY_STORE_URL": request.getfixturevalue("redis_server").url,
            "SORA_PROXY_STORE_PREFIX": f"i{uuid.uuid4().hex[:8]}:",
        }
    app = create_app(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": f"alice:{KEY_A},bob:{KEY_B}",
            "SORA_PROXY_READ_TIMEOUT": "0.5",
            **store,
        }
    )
    return app.test_client()


def headers(key="k-1", caller=KEY_A):
    return {"Authorization": f"Bearer {caller}", "Idempotency-Key": key}


def creates(upstream):
    return [r for r in upstream.state.requests if r.method == "POST" and r.path == "/v1/videos"]


def test_same_key_same_body_replays_without_a_second_create(client, upstream):
    first = client.post("/v1/videos", json={"prompt": "p", "seconds": 8}, headers=headers())
    again = client.post("/v1/videos", json={"seconds": "8", "prompt": "p"}, headers=headers())
    assert first.status_code == again.status_code == 200
    assert again.get_data() == first.get_data()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert len(creates(upstream)) == 1
    # The upstream sees a key scoped to the caller, never the caller's own.
    assert creates(upstream)[0].header("Idempotency-Key") not in (None, "k-1")


def test_multipart_retry_with_a_new_boundary_is_the_same_request(client, upstream):
    data = make_image(720, 1280)
    for boundary in ("boundary-one", "boundary-two"):
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhello\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="input_reference"; filename="r.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response = client.post(
            "/v1/videos",
            data=body,
            headers={**headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 200, response.get_json()
    assert response.headers["idempotent-replayed"] == "true"
    assert len(creates(upstream)) == 1


def test_same_key_other_body_is_409(client, upstream):
    assert client.post("/v1/videos", json={"prompt": "p"}, headers=headers()).status_code == 200
    response = client.post("/v1/videos", json={"prompt": "q"}, headers=headers())
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["param"] == "Idempotency-Key"
    assert len(creates(upstream)) == 1


def test_keys_are_per_caller(client, upstream):
    a = client.post("/v1/videos", json={"prompt": "p"}, headers=headers(caller=KEY_A))
    b = client.post("/v1/videos", json={"prompt": "p"}, headers=headers(caller=KEY_B))
    assert a.get_json()["id"] != b.get_json()["id"]
    assert "idempotent-replayed" not in b.headers
    assert len(creates(upstream)) == 2


def test_duplicate_in_flight_is_409(client, upstream):
    upstream.state.fail_next.append(FailureSpec(path_prefix="/v1/videos", method="POST", delay=0.3))
    results = {}

    def first():
        results["first"] = client.post("/v1/videos", json={"prompt": "p"}, headers=headers())

    thread = threading.Thread(target=first)
    thread.start()
    deadline = threading.Event()
    while not creates(upstream) and not deadline.wait(0.01):
        pass
    duplicate = client.post("/v1/videos", json={"prompt": "p"}, headers=headers())
    thread.join()
    assert duplicate.status_code == 409
    assert duplicate.get_json()["error"]["code"] == "idempotency_key_in_flight"
    assert results["first"].status_code == 200
    assert len(creates(upstream)) == 1


def test_a_request_refused_before_the_upstream_frees_its_key(client, upstream):
    bad = client.post("/v1/videos", json={"prompt": "p", "size": "1x1"}, headers=headers())
    assert bad.status_code == 400
    good = client.post("/v1/videos", json={"prompt": "p"}, headers=headers())
    assert good.status_code == 200 and "idempotent-replayed" not in good.headers


def test_upstream_timeout_is_kept_as_the_answer(client, upstream):
    upstream.state.fail_next.append(FailureSpec(path_prefix="/v1/videos", method="POST", delay=1.0))
    first = client.post("/v1/videos", json={"prompt": "slow"}, headers=headers("k-slow"))
    assert first.status_code == 504 and first.headers["x-should-retry"] == "false"
    again = client.post("/v1/videos", json={"prompt": "slow"}, headers=headers("k-slow"))
    assert again.status_code == 504 and again.headers["idempotent-replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert len(creates(upstream)) == 1


def test_idempotent_edit_upload_and_remix(client, upstream):
    form = {"prompt": "x", "video": (io.BytesIO(MP4), "v.mp4", "video/mp4")}
    first = client.post(
        "/v1/videos/edits",
        data=dict(form),
        headers=headers("k-edit"),
        content_type="multipart/form-data",
    )
    form["video"] = (io.BytesIO(MP4), "v.mp4", "video/mp4")
    again = client.post(
        "/v1/videos/edits", data=form, headers=headers("k-edit"), content_type="multipart/form-data"
    )
    assert first.status_code == 200 and again.get_data() == first.get_data()
    assert again.headers["idempotent-replayed"] == "true"
    edits = [r for r in upstream.state.requests if r.path == "/v1/videos/edits"]
    assert len(edits) == 1
    source = client.post(
        "/v1/videos", json={"prompt": "src"}, headers={"Authorization": f"Bearer {KEY_A}"}
    ).get_json()["id"]
    upstream.state.complete(source)
    for _ in range(2):
        remix = client.post(
            f"/v1/videos/{source}/remix", json={"prompt": "r"}, headers=headers("k-remix")
        )
        assert remix.status_code == 200
    assert len([r for r in upstream.state.requests if r.path.endswith("/remix")]) == 1


def test_same_key_other_video_of_the_same_size_is_409(client, upstream):
    other = bytearray(MP4)
    other[-1] ^= 0xFF  # same name, type, length and first bytes; different content
    for video, expected in ((MP4, 200), (bytes(other), 409)):
        response = client.post(
            "/v1/videos/edits",
            headers=headers("k-same-size"),
            content_type="multipart/form-data",
            data={"prompt": "x", "video": (io.BytesIO(video), "v.mp4", "video/mp4")},
        )
        assert response.status_code == expected, response.get_json()
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert len([r for r in upstream.state.requests if r.path == "/v1/videos/edits"]) == 1


def test_invalid_key_is_400(client):
    response = client.post("/v1/videos", json={"prompt": "p"}, headers=headers("x" * 256))
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "Idempotency-Key"


def test_twenty_concurrent_creates_through_gunicorn_make_one(tmp_path, redis_server):
    with SimulatorServer(seconds_per_step=0.05) as sim:
        sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos", method="POST", delay=0.5))
        proxy = Gunicorn(
            {
                "SORA_PROXY_UPSTREAM_URL": sim.base_url,
                "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
                "SORA_PROXY_API_KEYS": f"alice:{KEY_A}",
                "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.db",
            },
            tmp_path / "gunicorn.log",
            workers=2,
        )
        try:

            def post(_):
                return requests.post(
                    f"{proxy.url}/v1/videos",
                    json={"prompt": "once"},
                    headers=headers("k-twenty"),
                    timeout=30,
                )

            with ThreadPoolExecutor(20) as pool:
                responses = list(pool.map(post, range(20)))
            statuses = sorted(response.status_code for response in responses)
            assert set(statuses) <= {200, 409}
            originals = [
                r
                for r in responses
                if r.status_code == 200 and "idempotent-replayed" not in r.headers
            ]
            assert len(originals) == 1
            assert len(creates(sim)) == 1
            replay = post(0)
            assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
            assert replay.json()["id"] == originals[0].json()["id"]
            assert len(creates(sim)) == 1
        finally:
            proxy.stop()
