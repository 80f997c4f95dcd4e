"""Validation and relaying of the lifecycle routes (Flask test client, simulator upstream)."""

from __future__ import annotations

import io
import json

import pytest
from test_create_validation import assert_error
from videos import mp4_head, webm

from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")
WEBM = webm()


def completed(client, upstream):
    video = client.post("/v1/videos", json={"prompt": "p"}).get_json()
    upstream.state.complete(video["id"])
    return video["id"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("order=up", "order"),
        ("after=../x", "after"),
        ("after=a%2Fb", "after"),
    ],
)
def test_list_query_is_validated(client, upstream, query, param):
    assert_error(client.get(f"/v1/videos?{query}"), 400, param)
    assert upstream.state.requests == []


def test_list_passes_valid_query(client, upstream):
    response = client.get("/v1/videos?limit=100&order=asc&after=video_abc")
    assert response.status_code in (200, 404)
    (recorded,) = upstream.state.requests
    assert recorded.query == {"limit": ["100"], "order": ["asc"], "after": ["video_abc"]}


@pytest.mark.parametrize("bad_id", ["a.b", "..", "x" * 129, "a b", "é"])
@pytest.mark.parametrize("route", ["/v1/videos/{}", "/v1/videos/{}/content"])
def test_ids_are_checked_before_any_upstream_call(client, upstream, bad_id, route):
    assert_error(client.get(route.format(bad_id)), 400, "video_id")
    assert upstream.state.requests == []


def test_bad_variant(client, upstream):
    assert_error(client.get("/v1/videos/video_1/content?variant=poster"), 400, "variant")


def test_head_content_is_a_head_upstream(client, upstream):
    video_id = completed(client, upstream)
    response = client.head(f"/v1/videos/{video_id}/content")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(MP4))
    assert response.get_data() == b""
    assert upstream.state.requests[-1].method == "HEAD"


def test_conditional_and_range_statuses_come_back_exactly(client, upstream):
    video_id = completed(client, upstream)
    full = client.get(f"/v1/videos/{video_id}/content")
    etag = full.headers["ETag"]
    assert full.headers["Accept-Ranges"] == "bytes"
    not_modified = client.get(f"/v1/videos/{video_id}/content", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.get_data() == b""
    partial = client.get(f"/v1/videos/{video_id}/content", headers={"Range": "bytes=-10"})
    assert partial.status_code == 206 and partial.get_data() == MP4[-10:]
    assert partial.headers["Content-Range"] == f"bytes {len(MP4) - 10}-{len(MP4) - 1}/{len(MP4)}"
    unsatisfiable = client.get(
        f"/v1/videos/{video_id}/content", headers={"Range": f"bytes={len(MP4) + 5}-"}
    )
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(MP4)}"
    stale = client.get(
        f"/v1/videos/{video_id}/content", headers={"Range": "bytes=0-9", "If-Range": '"other-etag"'}
    )
    assert stale.status_code == 200 and stale.get_data() == MP4


def test_remix_accepts_multipart_and_sends_json(client, upstream):
    video_id = completed(client, upstream)
    response = client.post(
        f"/v1/videos/{video_id}/remix", data={"prompt": "again"}, content_type="multipart/form-data"
    )
    assert response.status_code == 200
    recorded = upstream.state.requests[-1]
    assert recorded.headers["Content-Type"] == "application/json"
    assert json.loads(recorded.body) == {"prompt": "again"}
    assert_error(client.post(f"/v1/videos/{video_id}/remix", json={}), 400, "prompt")


def edit(client, route="/v1/videos/edits", **data):
    return client.post(route, data=data, content_type="multipart/form-data")


def test_edit_file_is_forwarded_byte_for_byte(client, upstream):
    response = edit(client, prompt="snow", video=(io.BytesIO(MP4), "clip.mp4", "video/mp4"))
    assert response.status_code == 200, response.get_json()
    recorded = upstream.state.requests[-1]
    assert recorded.files["video"][0].data == MP4


def test_edit_with_prompt_after_the_file_is_checked_at_the_end(client, upstream):
    # Field order: werkzeug's test client sends files after text; build the body by hand.
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + MP4
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/v1/videos/edits",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 400, "prompt")
    videos_before = len(upstream.state.videos)
    assert not any(
        r.path == "/v1/videos/edits" and r.body_length == len(body) for r in upstream.state.requests
    )
    assert len(upstream.state.videos) == videos_before


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (
            {
                "prompt": "x",
                "video": (io.BytesIO(b"not a video at all, just text"), "v.mp4", "video/mp4"),
            },
            "video",
        ),
        ({"prompt": "x", "video[id]": "video_1", "video": (io.BytesIO(MP4), "v.mp4")}, "video"),
        ({"prompt": "x"}, "video"),
        ({"prompt": "", "video[id]": "video_1"}, "prompt"),
        ({"prompt": "x", "video[id]": "../../etc"}, "video.id"),
        ({"prompt": "x", "other": (io.BytesIO(MP4), "v.mp4")}, "other"),
    ],
)
def test_invalid_edits_never_reach_the_upstream(client, upstream, data, param):
    assert_error(edit(client, **data), 400, param)
    assert upstream.state.requests == []


def test_webm_edit_is_accepted(client, upstream):
    response = edit(client, prompt="x", video=(io.BytesIO(WEBM), "v.webm", "video/webm"))
    assert upstream.state.requests[-1].files["video"][0].data == WEBM
    assert response.status_code in (200, 400)


def test_edit_by_id_json(client, upstream):
    video_id = completed(client, upstream)
    response = client.post("/v1/videos/edits", json={"prompt": "x", "video": {"id": video_id}})
    assert response.status_code == 200, response.get_json()
    assert upstream.state.requests[-1].json == {"prompt": "x", "video": {"id": video_id}}
    assert_error(client.post("/v1/videos/edits", json={"prompt": "x"}), 400, "video")


def test_extension_needs_seconds(client, upstream):
    video_id = completed(client, upstream)
    assert_error(
        edit(client, "/v1/videos/extensions", prompt="x", **{"video[id]": video_id}), 400, "seconds"
    )
    response = edit(
        client, "/v1/videos/extensions", prompt="x", seconds="8", **{"video[id]": video_id}
    )
    assert response.status_code == 200, response.get_json()


def test_upload_over_the_video_cap_is_413(make_app, upstream):
    client = make_app(max_video_bytes=str(4096)).test_client()
    response = edit(client, prompt="x", video=(io.BytesIO(MP4 * 2), "v.mp4", "video/mp4"))
    assert_error(response, 413)


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"video": (io.BytesIO(MP4), "c.mp4")}, "name"),
        ({"name": "n" * 81, "video": (io.BytesIO(MP4), "c.mp4")}, "name"),
        ({"name": "Bob"}, "video"),
    ],
)
def test_invalid_characters(client, upstream, data, param):
    assert_error(edit(client, "/v1/videos/characters", **data), 400, param)


def test_characters_need_multipart(client):
    assert_error(client.post("/v1/videos/characters", json={"name": "x"}), 415)


def test_sora_character_from_url(make_app, upstream, file_server):
    url = file_server.add("/char.mp4", MP4, **{"Content-Type": "application/octet-stream"})
    client = make_app(fetch_allow_private="true").test_client()
    response = client.post(
        "/sora/v1/characters",
        json={"character_url": url, "character_timestamps": "1,3", "name": "Kite Girl"},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["name"] == "Kite Girl"
    recorded = upstream.state.requests[-1]
    assert recorded.path == "/v1/videos/characters"
    (video,) = recorded.files["video"]
    assert (
        video.data == MP4
        and video.content_type == "video/mp4"
        and video.filename == "character.mp4"
    )
    assert recorded.form["name"] == ["Kite Girl"]
    assert recorded.form["character_timestamps"] == ["1,3"]
    assert recorded.headers.get("Content-Length") == str(recorded.body_length)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"character_timestamps": "3,1", "name": "n"}, "character_timestamps"),
        ({"character_timestamps": "a,b", "name": "n"}, "character_timestamps"),
        ({"character_timestamps": "1", "name": "n"}, "character_timestamps"),
        ({"character_timestamps": "-1,2", "name": "n"}, "character_timestamps"),
        ({"character_timestamps": "1,3"}, "name"),
        ({"name": "n"}, "character_timestamps"),
    ],
)
def test_sora_character_validation(client, upstream, file_server, body, param):
    body.setdefault("character_url", file_server.add("/c.mp4", MP4))
    assert_error(client.post("/sora/v1/characters", json=body), 400, param)
    assert upstream.state.requests == [] and file_server.hits == []


def test_sora_character_url_must_be_a_video_and_public(make_app, upstream, file_server):
    url = file_server.add("/not-video", b"<html>hello</html>")
    private = make_app(fetch_allow_private="true").test_client()
    body = {"character_url": url, "character_timestamps": "0,2", "name": "n"}
    assert_error(private.post("/sora/v1/characters", json=body), 400, "character_url")
    public_only = make_app().test_client()
    error = assert_error(public_only.post("/sora/v1/characters", json=body), 400, "character_url")
    assert "loopback" in error["message"]
    assert upstream.state.requests == []


def test_unknown_methods_get_405_with_allow(client):
    response = client.put("/v1/videos/video_1")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "DELETE"}
    assert client.get("/sora/v1/characters").status_code == 405


@pytest.mark.parametrize("size", [3 * 1024 * 1024 + 17, 8 * 1024 * 1024, 20 * 1024 * 1024 - 1])
@pytest.mark.parametrize("seed", range(3))
def test_random_video_bytes_of_any_length_stream_through(client, upstream, size, seed):
    # Random bytes put CR/LF at arbitrary places, including at read boundaries, where the
    # multipart decoder holds bytes back; every such upload must still pass untouched.
    import random

    head = mp4_head(size)  # a whole MP4 whose media data is the random bytes
    video = head + random.Random(seed).randbytes(size - len(head))
    response = edit(
        client,
        prompt="x",
        model="sora-2",
        seconds="4",
        video=(io.BytesIO(video), "v.mp4", "video/mp4"),
    )
    assert response.status_code == 200, response.get_json()
    (part,) = upstream.state.requests[-1].files["video"]
    assert part.size == size and part.data == video
