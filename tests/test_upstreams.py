"""Several upstreams: routing by model, by-id calls back to the owner upstream, dialects,
failover only before a byte was sent, and configuration errors."""

from __future__ import annotations

import base64
import io
import json
import socket
import textwrap

import pytest
from images import make_image

from sora_proxy import ConfigError, create_app
from sora_proxy.simulator import FailureSpec, SimulatorServer
from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")
OPENAI_KEY = "sk-openai-upstream-5150"
AZURE_KEY = "azure-upstream-key-8f8f"
CALLER = {"Authorization": "Bearer sk-caller-multi"}
API_VERSION = "2025-04-01-preview"


@pytest.fixture
def openai_sim():
    with SimulatorServer(seconds_per_step=0.05, api_key=OPENAI_KEY) as sim:
        yield sim


@pytest.fixture
def azure_sim():
    with SimulatorServer(
        seconds_per_step=0.05,
        api_key=AZURE_KEY,
        auth_header="api-key",
        deployments={"my-sora-deploy": "sora-2", "pro-deploy": "sora-2-pro"},
        required_query={"api-version": API_VERSION},
    ) as sim:
        yield sim


def write_config(tmp_path, text):
    path = tmp_path / "upstreams.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def proxy(tmp_path, upstreams_toml, monkeypatch=None, **extra):
    config = {
        "SORA_PROXY_UPSTREAMS_FILE": write_config(tmp_path, upstreams_toml),
        "SORA_PROXY_API_KEYS": "multi:sk-caller-multi",
        "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.db",
        # Every by-id call goes to the upstream here (with the tracker, retrieves and
        # archived content are answered by the proxy: see test_tracker).
        "SORA_PROXY_TRACKER": "off",
        **extra,
    }
    return create_app(config).test_client()


def two_upstreams(openai_sim, azure_sim):
    return f"""
        [[upstream]]
        name = "openai"
        base_url = "{openai_sim.base_url}"
        auth = "bearer"
        api_key = "{OPENAI_KEY}"
        [upstream.models."sora-2"]

        [[upstream]]
        name = "azure"
        base_url = "{azure_sim.base_url}"
        auth = "api-key"
        api_key_env = "TEST_AZURE_KEY"
        query = {{ "api-version" = "{API_VERSION}" }}
        reference_form = "multipart"
        [upstream.models."sora-2-pro"]
        deployment = "pro-deploy"
        sizes = ["1280x720", "1792x1024"]
        seconds = ["4", "8"]
    """


@pytest.fixture
def client(tmp_path, openai_sim, azure_sim, monkeypatch):
    monkeypatch.setenv("TEST_AZURE_KEY", AZURE_KEY)
    return proxy(tmp_path, two_upstreams(openai_sim, azure_sim))


def requests_on(sim, method=None):
    return [r for r in sim.state.requests if method is None or r.method == method]


def test_creates_route_by_model_and_speak_each_dialect(client, openai_sim, azure_sim):
    plain = client.post("/v1/videos", json={"prompt": "p"}, headers=CALLER)
    assert plain.status_code == 200, plain.get_json()
    pro = client.post(
        "/v1/videos",
        json={"prompt": "p", "model": "sora-2-pro", "size": "1792x1024"},
        headers=CALLER,
    )
    assert pro.status_code == 200, pro.get_json()
    assert pro.get_json()["model"] == "sora-2-pro"  # the caller's name, not the deployment
    (on_openai,) = requests_on(openai_sim)
    assert on_openai.header("Authorization") == f"Bearer {OPENAI_KEY}"
    assert on_openai.header("api-key") is None and "api-version" not in on_openai.query
    (on_azure,) = requests_on(azure_sim)
    assert on_azure.header("api-key") == AZURE_KEY and on_azure.header("Authorization") is None
    assert on_azure.query["api-version"] == [API_VERSION]
    assert on_azure.form["model"] == ["pro-deploy"] and on_azure.form["size"] == ["1792x1024"]


def test_every_by_id_call_reaches_the_owning_upstream_with_its_key(client, openai_sim, azure_sim):
    ids = {}
    for name, body in (
        ("openai", {"prompt": "a"}),
        ("azure", {"prompt": "b", "model": "sora-2-pro"}),
    ):
        ids[name] = client.post("/v1/videos", json=body, headers=CALLER).get_json()["id"]
    openai_sim.state.complete(ids["openai"])
    azure_sim.state.complete(ids["azure"])
    for sim in (openai_sim, azure_sim):
        sim.state.clear_requests()
    for name, sim, other in (("openai", openai_sim, azure_sim), ("azure", azure_sim, openai_sim)):
        video_id = ids[name]
        retrieved = client.get(f"/v1/videos/{video_id}", headers=CALLER)
        assert retrieved.status_code == 200
        if name == "azure":
            assert retrieved.get_json()["model"] == "sora-2-pro"
        assert client.get(f"/v1/videos/{video_id}/content", headers=CALLER).get_data() == MP4
        assert (
            client.head(
                f"/v1/videos/{video_id}/content?variant=thumbnail", headers=CALLER
            ).status_code
            == 200
        )
        assert (
            client.post(
                f"/v1/videos/{video_id}/remix", json={"prompt": "r"}, headers=CALLER
            ).status_code
            == 200
        )
        edit = client.post(
            "/v1/videos/edits", json={"prompt": "e", "video": {"id": video_id}}, headers=CALLER
        )
        assert edit.status_code == 200, edit.get_json()
        extend = client.post(
            "/v1/videos/extensions",
            data={"prompt": "x", "seconds": "4", "video[id]": video_id},
            headers=CALLER,
            content_type="multipart/form-data",
        )
        assert extend.status_code == 200, extend.get_json()
        assert client.delete(f"/v1/videos/{video_id}", headers=CALLER).status_code == 200
        seen = requests_on(sim)
        assert len(seen) == 7 and not requests_on(other)
        for recorded in seen:
            if name == "azure":
                assert recorded.header("api-key") == AZURE_KEY and recorded.query[
                    "api-version"
                ] == [API_VERSION]
            else:
                assert recorded.header("Authorization") == f"Bearer {OPENAI_KEY}"
        sim.state.clear_requests()
    listed = client.get("/v1/videos", headers=CALLER).get_json()["data"]
    remixes = [video for video in listed if video.get("remixed_from_video_id") == ids["azure"]]
    assert remixes and remixes[0]["model"] == "sora-2-pro"


def test_per_model_sizes_and_seconds_come_from_the_upstream(client):
    bad_size = client.post(
        "/v1/videos",
        json={"prompt": "p", "model": "sora-2-pro", "size": "1024x1792"},
        headers=CALLER,
    )
    assert bad_size.status_code == 400 and bad_size.get_json()["error"]["param"] == "size"
    bad_seconds = client.post(
        "/v1/videos", json={"prompt": "p", "model": "sora-2-pro", "seconds": "12"}, headers=CALLER
    )
    assert bad_seconds.status_code == 400 and bad_seconds.get_json()["error"]["param"] == "seconds"
    unknown = client.post(
        "/v1/videos", json={"prompt": "p", "model": "sora-2-2025-10-06"}, headers=CALLER
    )
    assert unknown.status_code == 400 and unknown.get_json()["error"]["param"] == "model"


def test_models_route_lists_the_offer(client):
    listing = client.get("/v1/videos/models", headers=CALLER).get_json()
    assert listing["object"] == "list"
    assert listing["data"] == [
        {
            "id": "sora-2",
            "object": "model",
            "sizes": ["720x1280", "1280x720"],
            "seconds": ["4", "8", "12"],
        },
        {
            "id": "sora-2-pro",
            "object": "model",
            "sizes": ["1280x720", "1792x1024"],
            "seconds": ["4", "8"],
        },
    ]


def test_renamed_default_model_is_sent_as_the_deployment(tmp_path, azure_sim, monkeypatch):
    monkeypatch.setenv("AZ", AZURE_KEY)
    client = proxy(
        tmp_path,
        f"""
        [[upstream]]
        name = "azure"
        base_url = "{azure_sim.base_url}"
        auth = "api-key"
        api_key_env = "AZ"
        query = {{ "api-version" = "{API_VERSION}" }}
        reference_form = "json"
        [upstream.models."sora-2"]
        deployment = "my-sora-deploy"
    """,
    )
    png = make_image(720, 1280)
    response = client.post(
        "/v1/videos",
        data={"prompt": "p", "input_reference": (io.BytesIO(png), "r.png")},
        headers=CALLER,
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == "sora-2"
    (recorded,) = requests_on(azure_sim)
    assert recorded.json["model"] == "my-sora-deploy"
    image_url = recorded.json["input_reference"]["image_url"]
    assert image_url.startswith("data:image/png;base64,")
    assert base64.b64decode(image_url.split(",", 1)[1]) == png


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def failover_config(first_url, second_url, read_timeout=30):
    return f"""
        [[upstream]]
        name = "first"
        base_url = "{first_url}"
        api_key = "{OPENAI_KEY}"
        priority = 0
        read_timeout = {read_timeout}
        [[upstream]]
        name = "second"
        base_url = "{second_url}"
        api_key = "{OPENAI_KEY}"
        priority = 1
    """


def test_failover_when_the_first_upstream_refuses_connections(tmp_path, openai_sim):
    client = proxy(
        tmp_path, failover_config(f"http://127.0.0.1:{closed_port()}/v1", openai_sim.base_url)
    )
    response = client.post(
        "/v1/videos", json={"prompt": "p"}, headers={**CALLER, "Idempotency-Key": "fo"}
    )
    assert response.status_code == 200
    assert len(requests_on(openai_sim, "POST")) == 1
    video_id = response.get_json()["id"]
    assert (
        client.get(f"/v1/videos/{video_id}", headers=CALLER).status_code == 200
    )  # routed to second


def test_no_failover_once_the_request_was_sent(tmp_path, openai_sim):
    with SimulatorServer(seconds_per_step=0.05, api_key=OPENAI_KEY) as slow:
        slow.state.fail_next.append(FailureSpec(path_prefix="/v1/videos", method="POST", delay=1.5))
        client = proxy(
            tmp_path, failover_config(slow.base_url, openai_sim.base_url, read_timeout=0.4)
        )
        response = client.post("/v1/videos", json={"prompt": "p"}, headers=CALLER)
        assert response.status_code == 504
        assert response.headers["x-should-retry"] == "false"
        assert len(requests_on(slow, "POST")) == 1
        assert requests_on(openai_sim) == []


def test_single_upstream_settings_are_a_one_entry_catalog(make_app, upstream):
    app = make_app()
    catalog = app.extensions["sora_proxy"].catalog
    assert list(catalog.upstreams) == ["default"]
    assert catalog.upstreams["default"].base_url == upstream.base_url


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        (
            '[[upstream]]\nname="a"\nbase_url="http://127.0.0.1:1/v1"\nauth="basic"\napi_key="k"',
            "auth must be",
        ),
        (
            '[[upstream]]\nname="a"\nbase_url="http://127.0.0.1:1/v1"\napi_key="k"\n'
            '[[upstream]]\nname="a"\nbase_url="http://127.0.0.1:2/v1"\napi_key="k"',
            "used twice",
        ),
        (
            '[[upstream]]\nname="a"\nbase_url="http://127.0.0.1:1/v1"\napi_key_env="SORA_TEST_MISSING_ENV"',
            "SORA_TEST_MISSING_ENV",
        ),
        ('[[upstream]]\nname="a"\nbase_url="ftp://x"\napi_key="k"', "base_url"),
        (
            '[[upstream]]\nname="a"\nbase_url="http://127.0.0.1:1/v1"\napi_key="k"\ncolour="red"',
            "unknown key",
        ),
        (
            '[[upstream]]\nname="a"\nbase_url="http://127.0.0.1:1/v1"\napi_key="k"\n[upstream.models."my-model"]',
            "list its sizes",
        ),
        ("this is not toml = [", "not valid TOML"),
        ("", "at least one"),
    ],
)
def test_config_errors_stop_start_up_with_one_line(tmp_path, toml, fragment):
    with pytest.raises(ConfigError) as info:
        create_app(
            {
                "SORA_PROXY_UPSTREAMS_FILE": write_config(tmp_path, toml),
                "SORA_PROXY_API_KEYS": "x:y",
            }
        )
    message = str(info.value)
    assert message.startswith("SORA_PROXY_UPSTREAMS_FILE:") and fragment in message
    assert "\n" not in message and 'k"' not in message


def test_keys_in_the_file_require_caller_keys(tmp_path):
    path = write_config(
        tmp_path, '[[upstream]]\nname="a"\nbase_url="http://127.0.0.1:1/v1"\napi_key="k"'
    )
    with pytest.raises(ConfigError, match="SORA_PROXY_API_KEYS"):
        create_app({"SORA_PROXY_UPSTREAMS_FILE": path})


def test_upstream_keys_never_leak(client, openai_sim, azure_sim, caplog):
    client.post("/v1/videos", json={"prompt": "p", "model": "sora-2-pro"}, headers=CALLER)
    text = caplog.text + json.dumps(client.get("/v1/videos/models", headers=CALLER).get_json())
    state = client.application.extensions["sora_proxy"]
    text += repr(state.catalog.upstreams)
    assert OPENAI_KEY not in text and AZURE_KEY not in text
