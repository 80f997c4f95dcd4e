"""The proxy under gunicorn, driven by the official openai SDK, against the simulator."""

from __future__ import annotations

import io
import subprocess
import sys

import openai
import pytest
import requests
from conftest import CALLER_KEY, UPSTREAM_KEY
from images import data_uri, make_image, parse_multipart, pixel_size
from servers import REPO, Gunicorn

from sora_proxy.simulator import SimulatorServer


@pytest.fixture(scope="module")
def upstream():
    """One simulator for the module (its tests read only the latest request it recorded)."""
    with SimulatorServer(seconds_per_step=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    """One gunicorn for the module: starting one costs about a second."""
    server = Gunicorn(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": CALLER_KEY,
        },
        tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
    )
    yield server
    log = server.stop()
    assert UPSTREAM_KEY not in log and CALLER_KEY not in log


def sdk(proxy, key=CALLER_KEY):
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def recorded_parts(upstream):
    recorded = upstream.state.requests[-1]
    return {p.name: p for p in parse_multipart(recorded.body, recorded.headers["Content-Type"])}


def test_sdk_create_with_reference_file(proxy, upstream):
    png = make_image(1600, 900)
    video = sdk(proxy).videos.create(
        prompt="A cat surfing",
        model="sora-2",
        seconds="8",
        input_reference=("cat.png", io.BytesIO(png), "image/png"),
    )
    assert video.id.startswith("video_") and video.status == "queued"
    parts = recorded_parts(upstream)
    assert parts["size"].text == "1280x720"
    assert parts["input_reference"].filename == "reference.png"
    assert pixel_size(parts["input_reference"].data) == (1280, 720)
    assert upstream.state.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_sdk_create_with_image_url_via_extra_body(proxy, upstream):
    jpeg = make_image(720, 1280, "JPEG")
    video = sdk(proxy).videos.create(
        prompt="A dog",
        extra_body={
            "input_reference": {"image_url": data_uri(jpeg)},
            "metadata": {"output_config": {"aspect_ratio": "9:16"}},
        },
    )
    assert video.size == "720x1280"
    parts = recorded_parts(upstream)
    assert parts["input_reference"].data == jpeg
    assert parts["input_reference"].content_type == "image/jpeg"


def test_sdk_sees_openai_errors(proxy, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(proxy).videos.create(prompt="x", size="1792x1024")
    assert info.value.body["param"] == "size"
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(proxy, key="sk-wrong").videos.create(prompt="x")
    assert info.value.body["code"] == "invalid_api_key"


def test_raw_curl_style_json_through_gunicorn(proxy, upstream):
    response = requests.post(
        proxy.url + "/v1/videos",
        json={
            "prompt": "hello",
            "metadata": {"output_config": {"aspect_ratio": "16:9"}},
        },
        headers={"Authorization": f"Bearer {CALLER_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["size"] == "1280x720"


def test_bad_setting_stops_gunicorn_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
            "SORA_PROXY_REFERENCE_FIT": "stretch",
            "SORA_PROXY_BIND": "127.0.0.1:0",
        },
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "SORA_PROXY_" in line]
    assert lines == [
        "sora-proxy: configuration error: SORA_PROXY_REFERENCE_FIT: must be one of "
        "cover, contain, reject, pass"
    ]
    assert "Traceback" not in result.stderr


def test_cli_check_reports_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "sora_proxy.cli", "check"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        },
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "SORA_PROXY_API_KEYS" in result.stderr and UPSTREAM_KEY not in result.stderr
