"""Random bodies never make the proxy answer 500."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sora_proxy import create_app

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
KNOWN = [
    "prompt",
    "model",
    "size",
    "seconds",
    "metadata",
    "input_reference",
    "character_url",
    "character_timestamps",
]
FIELD_VALUES = st.one_of(
    JSON,
    st.sampled_from(
        [
            "sora-2",
            "sora-2-pro",
            "1280x720",
            "720x1280",
            "1792x1024",
            "4",
            "8",
            "12",
            "data:image/png;base64,iVBORw0KGgo=",
            "http://127.0.0.1:9/x.png",
            "16:9",
        ]
    ),
    st.fixed_dictionaries(
        {
            "output_config": st.dictionaries(
                st.sampled_from(["aspect_ratio", "resolution", "audio_generation"]), JSON
            )
        }
    ),
    st.fixed_dictionaries({"image_url": JSON}),
    st.fixed_dictionaries({"file_id": JSON}),
)
BODIES = st.dictionaries(st.sampled_from(KNOWN) | st.text(max_size=12), FIELD_VALUES, max_size=6)
PART_NAMES = st.sampled_from(
    KNOWN
    + [
        "input_reference[image_url]",
        "input_reference[file_id]",
        "metadata[output_config][aspect_ratio]",
        "a[]",
        "a[b]",
        "[x]",
        "x[",
        "tags[][z]",
    ]
) | st.text(max_size=10)


def _client(upstream):
    app = create_app({"SORA_PROXY_UPSTREAM_URL": upstream.base_url})
    return app.test_client()


def test_random_json_bodies(upstream):
    client = _client(upstream)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=JSON | BODIES)
    def check(body):
        response = client.post("/v1/videos", json=body)
        assert response.status_code < 500, response.get_data(as_text=True)
        if response.status_code >= 400:
            assert set(response.get_json()["error"]) == {"message", "type", "param", "code"}

    check()


def test_random_multipart_bodies(upstream):
    client = _client(upstream)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        texts=st.lists(st.tuples(PART_NAMES, st.text(max_size=30)), max_size=6),
        files=st.lists(st.tuples(PART_NAMES, st.binary(max_size=200)), max_size=2),
    )
    def check(texts, files):
        data: dict = {}
        for name, value in texts:
            data.setdefault(name, []).append(value)
        for name, blob in files:
            data.setdefault(name, []).append((io.BytesIO(blob), "f.bin"))
        response = client.post("/v1/videos", data=data, content_type="multipart/form-data")
        assert response.status_code < 500, response.get_data(as_text=True)

    check()


def test_random_raw_bytes_with_json_and_multipart_types(upstream):
    client = _client(upstream)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        raw=st.binary(max_size=300),
        kind=st.sampled_from(
            ["application/json", "multipart/form-data; boundary=xyz", "multipart/form-data"]
        ),
    )
    def check(raw, kind):
        response = client.post("/v1/videos", data=raw, headers={"Content-Type": kind})
        assert response.status_code < 500, response.get_data(as_text=True)

    check()
