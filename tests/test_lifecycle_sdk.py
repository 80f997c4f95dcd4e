"""The whole video lifecycle through the proxy under gunicorn, with the official openai SDK."""

from __future__ import annotations

import io

import openai
import pytest
import requests
from conftest import CALLER_KEY, UPSTREAM_KEY
from images import make_image
from servers import Gunicorn

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(seconds_per_step=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(sim, tmp_path_factory):
    server = Gunicorn(
        {
            "SORA_PROXY_UPSTREAM_URL": sim.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": CALLER_KEY,
        },
        tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
    )
    yield server
    log = server.stop()
    assert UPSTREAM_KEY not in log and CALLER_KEY not in log


@pytest.fixture
def client(proxy, sim):
    sim.state.clear_requests()
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=CALLER_KEY, max_retries=0)


def upstream_direct(sim, path, **kwargs):
    return requests.get(
        sim.base_url + path,
        headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
        timeout=10,
        **kwargs,
    )


def completed_video(client, sim, **kwargs):
    video = client.videos.create_and_poll(prompt="A kite over the dunes", **kwargs)
    assert video.status == "completed" and video.progress == 100
    return video


def test_create_without_and_with_reference(client, sim):
    plain = client.videos.create(prompt="A red balloon", seconds="4")
    assert plain.status == "queued" and plain.seconds == "4"
    with_ref = client.videos.create(
        prompt="A red balloon",
        size="720x1280",
        input_reference=("balloon.webp", io.BytesIO(make_image(720, 1280, "WEBP")), "image/webp"),
    )
    assert with_ref.size == "720x1280"
    recorded = sim.state.requests[-1]
    (ref,) = recorded.files["input_reference"]
    assert ref.filename == "reference.webp" and ref.content_type == "image/webp"
    assert recorded.header("Authorization") == f"Bearer {UPSTREAM_KEY}"


def test_create_and_poll_follows_status_to_completed(client, sim):
    video = completed_video(client, sim)
    polls = [
        r for r in sim.state.requests if r.method == "GET" and r.path == f"/v1/videos/{video.id}"
    ]
    # The SDK's polls are answered from the store; the tracker alone asks the upstream, at
    # most once per SORA_PROXY_POLL_INTERVAL (2 s) however often the SDK polls.
    assert polls
    assert all(b.received_at - a.received_at >= 1.9 for a, b in zip(polls, polls[1:]))
    assert client.videos.retrieve(video.id).status == "completed"


def test_list_auto_paginates_over_several_pages(client, sim):
    created = [client.videos.create(prompt=f"clip {n}").id for n in range(5)]
    seen = [video.id for video in client.videos.list(limit=2, order="asc")]
    assert seen[-5:] == created  # this caller's videos, oldest first, across pages
    assert len(seen) == len(set(seen))
    pages = list(client.videos.list(limit=2, order="desc").iter_pages())
    assert len(pages) >= 3 and all(len(page.data) <= 2 for page in pages)
    assert [video.id for page in pages for video in page.data][:5] == created[::-1]


@pytest.mark.parametrize("variant", ["video", "thumbnail", "spritesheet"])
def test_download_each_variant_equals_the_upstream_bytes(client, sim, variant):
    video = completed_video(client, sim)
    kwargs = {} if variant == "video" else {"variant": variant}
    content = client.videos.download_content(video.id, **kwargs)
    upstream = upstream_direct(sim, f"/videos/{video.id}/content", params={"variant": variant})
    assert content.content == upstream.content and len(upstream.content) > 100
    assert content.response.headers["content-type"] == upstream.headers["Content-Type"]
    assert content.response.headers.get("content-disposition") == upstream.headers.get(
        "Content-Disposition"
    )
    if variant == "video":
        assert content.content == MP4


def test_range_download(client, sim):
    video = completed_video(client, sim)
    response = client.videos.with_raw_response.download_content(
        video.id, extra_headers={"Range": "bytes=10-109"}
    )
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 10-109/{len(MP4)}"
    assert response.content == MP4[10:110]


def test_delete_then_404(client, sim):
    video = client.videos.create(prompt="short-lived")
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_remix(client, sim):
    source = completed_video(client, sim)
    remix = client.videos.remix(source.id, prompt="Now at night")
    assert remix.remixed_from_video_id == source.id
    assert sim.state.requests[-1].json == {"prompt": "Now at night"}


def test_edit_with_a_file(client, sim):
    edited = client.videos.edit(
        prompt="Make it snow", video=("clip.mp4", io.BytesIO(MP4), "video/mp4")
    )
    assert edited.id.startswith("video_")
    recorded = sim.state.requests[-1]
    (part,) = recorded.files["video"]
    assert part.data == MP4 and part.filename == "clip.mp4"
    assert recorded.form["prompt"] == ["Make it snow"]


def test_edit_and_extend_by_id(client, sim):
    # openai 3.x refuses video={"id": ...} before sending (it only takes a file there), so
    # callers send the id as extra_body, which arrives as a multipart part video[id].
    source = completed_video(client, sim)
    edited = client.videos.edit(
        prompt="Sepia", video=openai.omit, extra_body={"video": {"id": source.id}}
    )
    assert edited.id != source.id
    assert sim.state.requests[-1].form["video[id]"] == [source.id]
    extended = client.videos.extend(
        prompt="And then", video=openai.omit, seconds="8", extra_body={"video": {"id": source.id}}
    )
    assert extended.id.startswith("video_")
    assert sim.state.requests[-1].form["seconds"] == ["8"]


def test_create_and_get_character(client, sim):
    character = client.videos.create_character(
        name="Captain Kite", video=("c.mp4", io.BytesIO(MP4), "video/mp4")
    )
    assert character.name == "Captain Kite"
    fetched = client.videos.get_character(character.id)
    assert fetched.id == character.id and fetched.name == "Captain Kite"
    (part,) = [r for r in sim.state.requests if r.path == "/v1/videos/characters"][-1].files[
        "video"
    ]
    assert part.data == MP4


def test_sdk_gets_404_envelope_for_unknown_and_malformed_ids(client):
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("video_doesnotexist")
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.retrieve("bad.id")
    assert info.value.body["param"] == "video_id"
