"""Two callers sharing one upstream key: neither sees, downloads, changes or learns of the other's
videos. Runs against both stores."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from conftest import UPSTREAM_KEY
from flask import Flask

from sora_proxy import SoraProxy, create_app
from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")
ALICE_KEY = "sk-alice-0b8f2e"
BOB_KEY = "sk-bob-77c1d4"
ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}
BOB = {"Authorization": f"Bearer {BOB_KEY}"}


@pytest.fixture(params=["sqlite", "redis"])
def store_config(request, tmp_path):
    if request.param == "sqlite":
        return {"SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3"}
    redis = request.getfixturevalue("redis_server")
    return {
        "SORA_PROXY_STORE_URL": redis.url,
        "SORA_PROXY_STORE_PREFIX": f"t{uuid.uuid4().hex[:8]}:",
    }


@pytest.fixture
def app(upstream, store_config):
    return create_app(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": f"alice:{ALICE_KEY},bob:{BOB_KEY}",
            **store_config,
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


def create(client, headers, prompt="p", complete=None):
    response = client.post("/v1/videos", json={"prompt": prompt}, headers=headers)
    assert response.status_code == 200, response.get_json()
    video = response.get_json()
    if complete is not None:
        complete.state.complete(video["id"])
    return video["id"]


def assert_not_found(response, resource_id, param="video_id"):
    assert response.status_code == 404, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["param"] == param
    assert resource_id in error["message"]
    return {**error, "message": error["message"].replace(resource_id, "ID")}


def bob_attempts(client, video_id):
    """Every by-id route Bob could use on a video id."""
    edits_form = {"prompt": "x", "video[id]": video_id}
    return {
        "retrieve": client.get(f"/v1/videos/{video_id}", headers=BOB),
        "content": client.get(f"/v1/videos/{video_id}/content", headers=BOB),
        "thumbnail": client.get(f"/v1/videos/{video_id}/content?variant=thumbnail", headers=BOB),
        "spritesheet": client.get(
            f"/v1/videos/{video_id}/content?variant=spritesheet", headers=BOB
        ),
        "head": client.head(f"/v1/videos/{video_id}/content", headers=BOB),
        "delete": client.delete(f"/v1/videos/{video_id}", headers=BOB),
        "remix": client.post(f"/v1/videos/{video_id}/remix", json={"prompt": "x"}, headers=BOB),
        "edit_json": client.post(
            "/v1/videos/edits", json={"prompt": "x", "video": {"id": video_id}}, headers=BOB
        ),
        "edit_form": client.post(
            "/v1/videos/edits", data=edits_form, headers=BOB, content_type="multipart/form-data"
        ),
        "extend_json": client.post(
            "/v1/videos/extensions",
            json={"prompt": "x", "seconds": "4", "video": {"id": video_id}},
            headers=BOB,
        ),
        "extend_form": client.post(
            "/v1/videos/extensions",
            data={**edits_form, "seconds": "4"},
            headers=BOB,
            content_type="multipart/form-data",
        ),
    }


def test_bob_cannot_touch_or_detect_alices_video(client, upstream):
    alice_video = create(client, ALICE, complete=upstream)
    upstream.state.clear_requests()
    on_alices = bob_attempts(client, alice_video)
    on_nothing = bob_attempts(client, "video_doesnotexist000")
    assert upstream.state.requests == []  # not one of Bob's attempts reached the upstream
    for route, response in on_alices.items():
        twin = on_nothing[route]
        assert response.status_code == twin.status_code == 404, route
        assert response.headers.get("Content-Type") == twin.headers.get("Content-Type"), route
        if route != "head":
            param = "video.id" if route.startswith(("edit_json", "extend_json")) else None
            mine = response.get_json()["error"]
            other = twin.get_json()["error"]
            assert {**mine, "message": mine["message"].replace(alice_video, "ID")} == {
                **other,
                "message": other["message"].replace("video_doesnotexist000", "ID"),
            }, route
            assert param is None or mine["param"] in ("video_id", param)
    # Alice's video is untouched and still hers.
    assert client.get(f"/v1/videos/{alice_video}", headers=ALICE).status_code == 200
    content = client.get(f"/v1/videos/{alice_video}/content", headers=ALICE)
    assert content.status_code == 200 and content.get_data() == MP4


def test_lists_show_only_ones_own_videos_with_pagination(client, upstream):
    alice_ids = [create(client, ALICE, f"a{n}") for n in range(5)]
    bob_ids = [create(client, BOB, f"b{n}") for n in range(2)]
    upstream.state.clear_requests()
    for order, expected in (("asc", alice_ids), ("desc", alice_ids[::-1])):
        seen, after = [], None
        while True:
            query = f"limit=2&order={order}" + (f"&after={after}" if after else "")
            page = client.get(f"/v1/videos?{query}", headers=ALICE).get_json()
            assert page["object"] == "list"
            assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
            seen += [video["id"] for video in page["data"]]
            assert page["first_id"] == page["data"][0]["id"]
            assert page["last_id"] == page["data"][-1]["id"]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == expected
    default = client.get("/v1/videos", headers=BOB).get_json()
    assert [video["id"] for video in default["data"]] == bob_ids[::-1]
    assert all(
        video["object"] == "video" and video["prompt"].startswith("b") for video in default["data"]
    )
    # Alice's id as a cursor tells Bob nothing more than an unknown id does.
    mine = client.get(f"/v1/videos?after={alice_ids[0]}", headers=BOB)
    unknown = client.get("/v1/videos?after=video_unknown", headers=BOB)
    assert mine.status_code == unknown.status_code == 400
    assert mine.get_json()["error"]["param"] == "after"
    assert upstream.state.requests == []  # lists are served from the store


def test_list_shows_the_last_known_status(client, upstream):
    video_id = create(client, ALICE)
    upstream.state.complete(video_id)
    # The tracker sees it end within a poll interval (2 s); retrieves answer from the store.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = client.get(f"/v1/videos/{video_id}", headers=ALICE).get_json()["status"]
        if status == "completed":
            break
        time.sleep(0.1)
    assert status == "completed"
    (listed,) = client.get("/v1/videos", headers=ALICE).get_json()["data"]
    assert listed["status"] == "completed" and listed["progress"] == 100


def test_owner_can_do_everything_and_answers_are_byte_for_byte(client, upstream):
    video_id = create(client, ALICE, complete=upstream)
    retrieved = client.get(f"/v1/videos/{video_id}", headers=ALICE)
    direct = upstream.state.requests[-1]
    assert (
        retrieved.status_code == 200 and direct.header("Authorization") == f"Bearer {UPSTREAM_KEY}"
    )
    remix = client.post(f"/v1/videos/{video_id}/remix", json={"prompt": "again"}, headers=ALICE)
    assert remix.status_code == 200
    remix_id = remix.get_json()["id"]
    assert client.get(f"/v1/videos/{remix_id}", headers=ALICE).status_code == 200  # remix is owned
    assert client.get(f"/v1/videos/{remix_id}", headers=BOB).status_code == 404
    edit = client.post(
        "/v1/videos/edits",
        data={"prompt": "x", "video[id]": video_id},
        headers=ALICE,
        content_type="multipart/form-data",
    )
    assert edit.status_code == 200, edit.get_json()
    upload = client.post(
        "/v1/videos/edits",
        headers=ALICE,
        content_type="multipart/form-data",
        data={"prompt": "x", "video": (io.BytesIO(MP4), "v.mp4", "video/mp4")},
    )
    assert upload.status_code == 200
    assert client.get(f"/v1/videos/{upload.get_json()['id']}", headers=ALICE).status_code == 200
    deleted = client.delete(f"/v1/videos/{video_id}", headers=ALICE)
    assert deleted.status_code == 200 and deleted.get_json()["deleted"] is True
    assert_not_found(client.get(f"/v1/videos/{video_id}", headers=ALICE), video_id)


def test_characters_are_owned(client, upstream, file_server):
    made = client.post(
        "/v1/videos/characters",
        headers=ALICE,
        content_type="multipart/form-data",
        data={"name": "Kite", "video": (io.BytesIO(MP4), "k.mp4", "video/mp4")},
    )
    assert made.status_code == 200, made.get_json()
    character_id = made.get_json()["id"]
    assert client.get(f"/v1/videos/characters/{character_id}", headers=ALICE).status_code == 200
    mine = assert_not_found(
        client.get(f"/v1/videos/characters/{character_id}", headers=BOB),
        character_id,
        "character_id",
    )
    other = assert_not_found(
        client.get("/v1/videos/characters/char_nope", headers=BOB), "char_nope", "character_id"
    )
    assert mine == other
    # A character id is not a video id, even for its owner.
    assert client.get(f"/v1/videos/{character_id}", headers=ALICE).status_code == 404


def test_host_app_authenticate_callback_decides_the_caller(upstream, store_config):
    app = Flask("host")
    app.config.update(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            **store_config,
        }
    )
    SoraProxy(app, authenticate=lambda request: request.headers.get("X-User"))
    client = app.test_client()
    assert client.post("/v1/videos", json={"prompt": "p"}).status_code == 401
    video_id = client.post("/v1/videos", json={"prompt": "p"}, headers={"X-User": "u1"}).get_json()[
        "id"
    ]
    assert client.get(f"/v1/videos/{video_id}", headers={"X-User": "u1"}).status_code == 200
    assert client.get(f"/v1/videos/{video_id}", headers={"X-User": "u2"}).status_code == 404
    assert upstream.state.requests[0].header("Authorization") == f"Bearer {UPSTREAM_KEY}"


def test_api_keys_file_names_callers(upstream, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nalice:sk-file-a\n\nbob : sk-file-b\n")
    app = create_app(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS_FILE": str(keys),
            "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/s.db",
        }
    )
    client = app.test_client()
    video_id = create(client, {"Authorization": "Bearer sk-file-a"})
    assert (
        client.get(
            f"/v1/videos/{video_id}", headers={"Authorization": "Bearer sk-file-b"}
        ).status_code
        == 404
    )
    record = app.extensions["sora_proxy"].records.store.get(video_id)
    assert record.owner == "alice"


def test_pass_through_mode_keeps_no_records(make_app, upstream):
    app = make_app()
    assert app.extensions["sora_proxy"].records is None
    client = app.test_client()
    video_id = client.post("/v1/videos", json={"prompt": "p"}).get_json()["id"]
    assert client.get(f"/v1/videos/{video_id}").status_code == 200
    listed = client.get("/v1/videos").get_json()
    assert video_id in [video["id"] for video in listed["data"]]  # the upstream's own list


def test_store_contents_hold_no_keys(app, client, upstream, store_config):
    create(client, ALICE)
    create(client, BOB)
    client.post("/v1/videos", json={"prompt": "idem"}, headers={**ALICE, "Idempotency-Key": "k1"})
    store = app.extensions["sora_proxy"].records.store
    dump = _raw_dump(store, store_config)
    assert dump  # the dump really holds the records
    for secret in (ALICE_KEY, BOB_KEY, UPSTREAM_KEY, "k1"):
        assert secret.encode() not in dump


def _raw_dump(store, store_config) -> bytes:
    url = store_config["SORA_PROXY_STORE_URL"]
    if url.startswith("sqlite"):
        import sqlite3

        path = url.removeprefix("sqlite:///")
        rows = sqlite3.connect(path).iterdump()
        return "\n".join(rows).encode()
    import redis

    client = redis.Redis.from_url(url)
    chunks = []
    for key in client.scan_iter(store_config["SORA_PROXY_STORE_PREFIX"] + "*"):
        chunks.append(key)
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key))
        elif kind == b"zset":
            chunks.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
        else:
            chunks.append(json.dumps(str(client.dump(key))).encode())
    return b"\n".join(chunks)
