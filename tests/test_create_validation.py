"""Invalid create bodies: a 400/413/415 in the OpenAI envelope, never an upstream call."""

from __future__ import annotations

import base64
import io

import pytest
from images import data_uri, make_image

PROMPT = "A fox in the snow"


def assert_error(response, status, param=None, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 32001}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": PROMPT, "model": "sora-3"}, "model"),
        ({"prompt": PROMPT, "model": 2}, "model"),
        ({"prompt": PROMPT, "seconds": 5}, "seconds"),
        ({"prompt": PROMPT, "seconds": "abc"}, "seconds"),
        ({"prompt": PROMPT, "seconds": True}, "seconds"),
        ({"prompt": PROMPT, "seconds": 4.0}, "seconds"),
        ({"prompt": PROMPT, "size": 1280}, "size"),
        ({"prompt": PROMPT, "metadata": [1]}, "metadata"),
        ({"prompt": PROMPT, "metadata": "{not json"}, "metadata"),
        (
            {"prompt": PROMPT, "metadata": {"output_config": {"aspect_ratio": ["16:9"]}}},
            "metadata.output_config.aspect_ratio",
        ),
        ({"prompt": PROMPT, "input_reference": "not base64 at all!"}, "input_reference"),
        (
            {"prompt": PROMPT, "input_reference": base64.b64encode(b"plain text").decode()},
            "input_reference",
        ),
        ({"prompt": PROMPT, "input_reference": 17}, "input_reference"),
        (
            {"prompt": PROMPT, "input_reference": {"image_url": "x", "file_id": "y"}},
            "input_reference",
        ),
        ({"prompt": PROMPT, "input_reference": {}}, "input_reference"),
        ({"prompt": PROMPT, "input_reference": {"file_id": "../etc"}}, "input_reference.file_id"),
        ({"prompt": PROMPT, "input_reference": {"image_url": "@@@"}}, "input_reference.image_url"),
        ({"prompt": PROMPT, "input_reference": "data:image/png,rawbytes"}, "input_reference"),
        ({"prompt": PROMPT, "input_reference": "data:image/png;base64,!!!!"}, "input_reference"),
    ],
)
def test_invalid_json_fields(client, upstream, body, param):
    assert_error(client.post("/v1/videos", json=body), 400, param)
    assert upstream.state.requests == []


def test_prompt_of_exactly_32000_characters_is_accepted(client, upstream):
    assert client.post("/v1/videos", json={"prompt": "y" * 32000}).status_code == 200


def test_integer_seconds_is_sent_as_string(client, upstream):
    assert client.post("/v1/videos", json={"prompt": PROMPT, "seconds": 12}).status_code == 200
    (recorded,) = upstream.state.requests
    assert b'name="seconds"\r\n\r\n12\r\n' in recorded.body


@pytest.mark.parametrize(
    "image",
    [
        make_image(64, 64, "GIF"),
        make_image(64, 64, "BMP"),
        make_image(1280, 720)[:200],  # truncated PNG
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,  # PNG magic, no image
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
)
def test_non_images_are_refused_whatever_the_declared_type(client, upstream, image):
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "input_reference": (io.BytesIO(image), "ref.png", "image/png"),
        },
        content_type="multipart/form-data",
    )
    assert_error(response, 400, "input_reference", code="invalid_image")
    response = client.post(
        "/v1/videos", json={"prompt": PROMPT, "input_reference": data_uri(image)}
    )
    assert_error(response, 400, "input_reference", code="invalid_image")
    assert upstream.state.requests == []


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", "prompt=hi"),
        ("application/x-www-form-urlencoded", "prompt=hi"),
        ("application/xml", "<prompt>hi</prompt>"),
        (None, '{"prompt": "hi"}'),
    ],
)
def test_other_content_types_are_415(client, upstream, content_type, data):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_error(
        client.post("/v1/videos", data=data, headers=headers), 415, code="unsupported_media_type"
    )
    assert upstream.state.requests == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"prompt"', b"", b"\xff\xfe"])
def test_unparseable_or_non_object_json(client, upstream, raw):
    response = client.post("/v1/videos", data=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, code="invalid_json")


def test_repeated_multipart_field(client, upstream):
    response = client.post(
        "/v1/videos", data={"prompt": [PROMPT, "again"]}, content_type="multipart/form-data"
    )
    assert_error(response, 400, "prompt")


def test_reference_both_as_file_and_text(client, upstream):
    png = make_image(720, 1280)
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "input_reference": [(io.BytesIO(png), "a.png"), data_uri(png)],
        },
        content_type="multipart/form-data",
    )
    assert_error(response, 400, "input_reference")


def test_reference_over_the_byte_cap_is_413(make_app, upstream):
    client = make_app(max_reference_bytes=str(50_000)).test_client()
    big = make_image(720, 1280, "BMP")  # ~2.7 MB of raw pixels
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "input_reference": (io.BytesIO(big), "big.png"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "input_reference": base64.b64encode(b"\x89PNG" + b"0" * 60_000).decode(),
        },
    )
    assert_error(response, 413, "input_reference", code="request_too_large")
    assert upstream.state.requests == []


def test_body_over_the_create_limit_is_413(make_app, upstream):
    client = make_app(max_reference_bytes=str(1000)).test_client()
    huge = "z" * (3 * 1024 * 1024)
    assert_error(
        client.post("/v1/videos", json={"prompt": PROMPT, "pad": huge}),
        413,
        code="request_too_large",
    )
    response = client.post(
        "/v1/videos", data={"prompt": PROMPT, "pad": huge}, content_type="multipart/form-data"
    )
    assert_error(response, 413)
    assert upstream.state.requests == []


def test_wrong_method_and_unknown_route_are_enveloped(client):
    response = client.put("/v1/videos", json={})
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
    response = client.post("/v1/videos/nothing/here")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_route"
