"""POST /v1/videos: the size sent upstream, inferred from metadata or the reference image."""

from __future__ import annotations

import json

import pytest
from images import data_uri, make_image, parse_multipart, pixel_size

PROMPT = "A lighthouse in a storm"


def sent_parts(upstream):
    (recorded,) = upstream.state.requests
    parts = parse_multipart(recorded.body, recorded.headers["Content-Type"])
    return {part.name: part for part in parts}


def output_config(**values):
    return {"output_config": values}


@pytest.mark.parametrize(
    ("model", "config", "expected"),
    [
        ("sora-2", {"aspect_ratio": "16:9"}, "1280x720"),
        ("sora-2", {"aspect_ratio": "landscape"}, "1280x720"),
        ("sora-2", {"aspect_ratio": "4:3"}, "1280x720"),
        ("sora-2", {"aspect_ratio": "21/9"}, "1280x720"),
        ("sora-2", {"aspect_ratio": "9:16"}, "720x1280"),
        ("sora-2", {"aspect_ratio": "Portrait"}, "720x1280"),
        ("sora-2", {"aspect_ratio": "3:4", "resolution": "720p"}, "720x1280"),
        ("sora-2-pro", {"aspect_ratio": "16:9", "resolution": "1080p"}, "1792x1024"),
        ("sora-2-pro", {"aspect_ratio": "9:16", "resolution": "high"}, "1024x1792"),
        ("sora-2-pro", {"aspect_ratio": "16:9", "resolution": "standard"}, "1280x720"),
        ("sora-2-pro-2025-10-06", {"aspect_ratio": "16:9", "resolution": "1080p"}, "1792x1024"),
        ("sora-2-pro", {"resolution": "1080p"}, "1024x1792"),
        (None, {"aspect_ratio": "16:9", "audio_generation": True}, "1280x720"),
    ],
)
def test_size_from_output_config(client, upstream, model, config, expected):
    body = {"prompt": PROMPT, "metadata": output_config(**config)}
    if model:
        body["model"] = model
    response = client.post("/v1/videos", json=body)
    assert response.status_code == 200, response.get_json()
    parts = sent_parts(upstream)
    assert parts["size"].text == expected
    assert "metadata" not in parts
    assert (parts["model"].text if model else None) == model


def test_metadata_as_json_string_in_multipart(client, upstream):
    response = client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            "metadata": json.dumps(output_config(aspect_ratio="16:9")),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    assert sent_parts(upstream)["size"].text == "1280x720"


def test_metadata_as_json_string_in_json(client, upstream):
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "metadata": json.dumps(output_config(aspect_ratio="9:16")),
        },
    )
    assert response.status_code == 200
    assert sent_parts(upstream)["size"].text == "720x1280"


def test_explicit_size_agreeing_with_aspect_ratio(client, upstream):
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "size": "1280x720",
            "metadata": output_config(aspect_ratio="16:9"),
        },
    )
    assert response.status_code == 200
    assert sent_parts(upstream)["size"].text == "1280x720"


def test_no_size_no_hint_no_image_leaves_size_unset(client, upstream):
    assert client.post("/v1/videos", json={"prompt": PROMPT}).status_code == 200
    assert "size" not in sent_parts(upstream)


@pytest.mark.parametrize(
    ("dimensions", "expected"),
    [
        ((1600, 900), (1280, 720)),
        ((900, 1600), (720, 1280)),
        ((800, 800), (720, 1280)),
    ],
)
def test_size_from_reference_image_orientation(client, upstream, dimensions, expected):
    image = make_image(*dimensions)
    response = client.post(
        "/v1/videos", json={"prompt": PROMPT, "input_reference": data_uri(image)}
    )
    assert response.status_code == 200, response.get_json()
    parts = sent_parts(upstream)
    assert parts["size"].text == "{}x{}".format(*expected)
    assert pixel_size(parts["input_reference"].data) == expected


def test_reference_orientation_with_high_resolution_on_pro(client, upstream):
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "model": "sora-2-pro",
            "metadata": output_config(resolution="1080p"),
            "input_reference": data_uri(make_image(1600, 900)),
        },
    )
    assert response.status_code == 200, response.get_json()
    parts = sent_parts(upstream)
    assert parts["size"].text == "1792x1024"
    assert pixel_size(parts["input_reference"].data) == (1792, 1024)


def test_aspect_ratio_wins_over_image_orientation(client, upstream):
    response = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "metadata": output_config(aspect_ratio="16:9"),
            "input_reference": data_uri(make_image(900, 1600)),
        },
    )
    assert response.status_code == 200
    parts = sent_parts(upstream)
    assert parts["size"].text == "1280x720"
    assert pixel_size(parts["input_reference"].data) == (1280, 720)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (
            {"metadata": output_config(aspect_ratio="1:1")},
            "metadata.output_config.aspect_ratio",
            "square",
        ),
        (
            {"metadata": output_config(aspect_ratio="square")},
            "metadata.output_config.aspect_ratio",
            "square",
        ),
        (
            {"metadata": output_config(aspect_ratio="wide-ish")},
            "metadata.output_config.aspect_ratio",
            "not readable",
        ),
        (
            {"metadata": output_config(aspect_ratio="0:9")},
            "metadata.output_config.aspect_ratio",
            "not readable",
        ),
        (
            {"metadata": output_config(aspect_ratio=16)},
            "metadata.output_config.aspect_ratio",
            "string",
        ),
        (
            {"size": "1280x720", "metadata": output_config(aspect_ratio="9:16")},
            "metadata.output_config.aspect_ratio",
            "landscape",
        ),
        (
            {"metadata": output_config(aspect_ratio="16:9", resolution="1080p")},
            "metadata.output_config.resolution",
            "sora-2-pro",
        ),
        (
            {
                "model": "sora-2-pro",
                "size": "1280x720",
                "metadata": output_config(resolution="1080p"),
            },
            "metadata.output_config.resolution",
            "agree",
        ),
        ({"metadata": output_config(resolution="8k")}, "metadata.output_config.resolution", "8k"),
        ({"size": "1792x1024"}, "size", "sora-2"),
        ({"model": "sora-2-pro", "size": "1000x1000"}, "size", "1000x1000"),
        ({"size": "big"}, "size", "big"),
        ({"metadata": {"output_config": "16:9"}}, "metadata.output_config", "object"),
    ],
)
def test_size_conflicts_are_400_before_upstream(client, upstream, body, param, fragment):
    response = client.post("/v1/videos", json={"prompt": PROMPT, **body})
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]
    assert upstream.state.requests == []
