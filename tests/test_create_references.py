"""POST /v1/videos: every input_reference form reaches the upstream as one real image file part."""

from __future__ import annotations

import base64
import io
import json

import pytest
from images import data_uri, make_image, parse_multipart, pixel, pixel_size

PROMPT = "A paper boat drifting down a rain gutter"


def upstream_parts(upstream):
    """The single create the simulator recorded, as {name: Part}, checking the envelope."""
    creates = [r for r in upstream.state.requests if r.method == "POST" and r.path == "/v1/videos"]
    assert len(creates) == 1, [r.path for r in upstream.state.requests]
    recorded = creates[0]
    content_type = recorded.headers.get("Content-Type") or recorded.headers.get("content-type")
    assert content_type.startswith("multipart/form-data; boundary=")
    parts = parse_multipart(recorded.body, content_type)
    names = [part.name for part in parts]
    assert len(names) == len(set(names)), names
    return {part.name: part for part in parts}


def assert_reference(parts, *, size, filename="reference.png", content_type="image/png"):
    ref = parts["input_reference"]
    assert ref.filename == filename
    assert ref.content_type == content_type
    assert pixel_size(ref.data) == size
    return ref


def assert_created(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["object"] == "video" and body["id"].startswith("video_")
    return body


# --- JSON bodies -------------------------------------------------------------------------


def test_json_url_reference_is_fetched_and_sent_as_file(client, upstream, file_server):
    png = make_image(1280, 720)
    url = file_server.add("/ref.png", png, **{"Content-Type": "application/octet-stream"})
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "model": "sora-2",
            "size": "1280x720",
            "seconds": "8",
            "input_reference": url,
        },
    )
    assert_created(response)
    parts = upstream_parts(upstream)
    assert [name for name in parts] == ["prompt", "model", "size", "seconds", "input_reference"]
    assert parts["prompt"].text == PROMPT and parts["prompt"].filename is None
    assert parts["prompt"].content_type is None
    assert parts["size"].text == "1280x720" and parts["seconds"].text == "8"
    ref = assert_reference(parts, size=(1280, 720))
    assert ref.data == png  # right size already: sent byte for byte
    assert file_server.hits == ["/ref.png"]


def test_json_raw_base64(client, upstream):
    jpeg = make_image(720, 1280, "JPEG")
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "size": "720x1280",
            "input_reference": base64.b64encode(jpeg).decode(),
        },
    )
    assert_created(response)
    ref = assert_reference(
        upstream_parts(upstream),
        size=(720, 1280),
        filename="reference.jpg",
        content_type="image/jpeg",
    )
    assert ref.data == jpeg


def test_json_data_uri_declared_type_is_ignored(client, upstream):
    webp = make_image(1280, 720, "WEBP")
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "size": "1280x720",
            "input_reference": data_uri(webp, "image/png"),
        },
    )
    assert_created(response)
    ref = assert_reference(
        upstream_parts(upstream),
        size=(1280, 720),
        filename="reference.webp",
        content_type="image/webp",
    )
    assert ref.data == webp


@pytest.mark.parametrize(
    "wrap",
    [
        lambda uri: {"image_url": uri},
        lambda uri: {"image_url": {"url": uri}},
    ],
)
def test_json_image_url_object(client, upstream, wrap):
    png = make_image(720, 1280)
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "size": "720x1280",
            "input_reference": wrap(data_uri(png)),
        },
    )
    assert_created(response)
    assert assert_reference(upstream_parts(upstream), size=(720, 1280)).data == png


def test_json_image_url_object_with_http_url(client, upstream, file_server):
    png = make_image(720, 1280)
    url = file_server.add("/a/b.png", png)
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "input_reference": {"image_url": url},
            "size": "720x1280",
        },
    )
    assert_created(response)
    assert assert_reference(upstream_parts(upstream), size=(720, 1280)).data == png


def test_json_file_id_goes_as_json(client, upstream):
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "model": "sora-2",
            "seconds": 4,
            "input_reference": {"file_id": "file-abc123"},
            "user_tag": {"a": 1},
        },
    )
    assert_created(response)
    (recorded,) = upstream.state.requests
    assert recorded.headers.get("Content-Type") == "application/json"
    assert json.loads(recorded.body) == {
        "prompt": PROMPT,
        "model": "sora-2",
        "seconds": "4",
        "input_reference": {"file_id": "file-abc123"},
        "user_tag": {"a": 1},
    }


# --- multipart bodies --------------------------------------------------------------------


def test_multipart_file_part_with_untrustworthy_name_and_type(client, upstream):
    png = make_image(1280, 720)
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "size": "1280x720",
            "input_reference": (io.BytesIO(png), "upload", "application/octet-stream"),
        },
        content_type="multipart/form-data",
    )
    assert_created(response)
    ref = assert_reference(upstream_parts(upstream), size=(1280, 720))
    assert ref.data == png


def test_multipart_jpeg_labelled_png_is_sent_as_jpeg(client, upstream):
    jpeg = make_image(720, 1280, "JPEG")
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "input_reference": (io.BytesIO(jpeg), "photo.png", "image/png"),
        },
        content_type="multipart/form-data",
    )
    assert_created(response)
    parts = upstream_parts(upstream)
    assert parts["size"].text == "720x1280"  # from the image's orientation
    assert (
        assert_reference(
            parts, size=(720, 1280), filename="reference.jpg", content_type="image/jpeg"
        ).data
        == jpeg
    )


@pytest.mark.parametrize("form", ["url", "data_uri"])
def test_multipart_text_part_reference(client, upstream, file_server, form):
    png = make_image(1280, 720)
    value = file_server.add("/r.png", png) if form == "url" else data_uri(png)
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "size": "1280x720",
            "input_reference": value,
        },
        content_type="multipart/form-data",
    )
    assert_created(response)
    assert assert_reference(upstream_parts(upstream), size=(1280, 720)).data == png


def test_multipart_sdk_bracket_image_url_part(client, upstream):
    png = make_image(1280, 720)
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "size": "1280x720",
            "input_reference[image_url]": data_uri(png),
            "metadata[output_config][aspect_ratio]": "16:9",
        },
        content_type="multipart/form-data",
    )
    assert_created(response)
    parts = upstream_parts(upstream)
    assert "metadata" not in parts and "input_reference[image_url]" not in parts
    assert assert_reference(parts, size=(1280, 720)).data == png


def test_multipart_bracket_file_id_goes_as_json(client, upstream):
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "input_reference[file_id]": "file-xyz",
        },
        content_type="multipart/form-data",
    )
    assert_created(response)
    (recorded,) = upstream.state.requests
    assert json.loads(recorded.body) == {
        "prompt": PROMPT,
        "input_reference": {"file_id": "file-xyz"},
    }


def test_unknown_fields_pass_through_unchanged(client, upstream):
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "quality": "high",
            "n_variants": 2,
            "flags": {"x": True},
            "character_url": "https://example.invalid/c.mp4",
            "character_timestamps": "1,3",
            "metadata": {"output_config": {"audio_generation": True}},
        },
    )
    assert_created(response)
    parts = upstream_parts(upstream)
    assert parts["quality"].text == "high"
    assert parts["n_variants"].text == "2"
    assert json.loads(parts["flags"].text) == {"x": True}
    for consumed in ("character_url", "character_timestamps", "metadata", "size"):
        assert consumed not in parts


def test_metadata_forwarded_when_configured(make_app, upstream):
    client = make_app(forward_metadata="true").test_client()
    metadata = {"output_config": {"aspect_ratio": "16:9", "audio_generation": False}}
    assert_created(client.post("/v1/videos", json={"prompt": PROMPT, "metadata": metadata}))
    parts = upstream_parts(upstream)
    assert json.loads(parts["metadata"].text) == metadata
    assert parts["size"].text == "1280x720"


# --- fitting the reference to the size ---------------------------------------------------


def test_cover_scales_and_centre_crops(client, upstream):
    source = make_image(1000, 1000, split=True)  # left red, right blue
    assert_created(
        client.post(
            "/v1/videos",
            json={
                "prompt": PROMPT,
                "size": "1280x720",
                "input_reference": data_uri(source),
            },
        )
    )
    ref = assert_reference(upstream_parts(upstream), size=(1280, 720))
    assert pixel(ref.data, (5, 360))[0] > 200 and pixel(ref.data, (1275, 360))[2] > 200


def test_contain_letterboxes(make_app, upstream):
    client = make_app(reference_fit="contain").test_client()
    source = make_image(1000, 1000)
    assert_created(
        client.post(
            "/v1/videos",
            json={
                "prompt": PROMPT,
                "size": "1280x720",
                "input_reference": data_uri(source),
            },
        )
    )
    ref = assert_reference(upstream_parts(upstream), size=(1280, 720))
    assert pixel(ref.data, (5, 360)) == (0, 0, 0)  # side bar
    assert pixel(ref.data, (640, 360)) == pixel(source, (500, 500))


def test_reject_refuses_before_upstream(make_app, upstream):
    client = make_app(reference_fit="reject").test_client()
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "size": "1280x720",
            "input_reference": data_uri(make_image(640, 360)),
        },
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "input_reference" and "640x360" in error["message"]
    assert upstream.state.requests == []


def test_pass_sends_as_is(make_app, upstream):
    client = make_app(reference_fit="pass").test_client()
    source = make_image(640, 360)
    client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "size": "1280x720",
            "input_reference": data_uri(source),
        },
    )
    ref = assert_reference(upstream_parts(upstream), size=(640, 360))
    assert ref.data == source


def test_exif_rotated_jpeg_is_made_upright(client, upstream):
    from PIL import Image

    image = Image.new("RGB", (1280, 720), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    assert_created(
        client.post(
            "/v1/videos",
            json={
                "prompt": PROMPT,
                "input_reference": data_uri(out.getvalue()),
            },
        )
    )
    parts = upstream_parts(upstream)
    assert parts["size"].text == "720x1280"
    assert_reference(parts, size=(720, 1280), filename="reference.jpg", content_type="image/jpeg")
