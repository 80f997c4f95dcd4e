"""The extension as a guest: one registration per app, typed state, dialects chosen per upstream."""

from __future__ import annotations

import pytest
from flask import Flask

from sora_proxy import ConfigError, SoraProxy
from sora_proxy.extension import EXTENSION_KEY, ProxyState


def test_a_second_registration_on_one_app_is_refused_before_touching_anything(upstream):
    app = Flask("host")
    app.config["SORA_PROXY_UPSTREAM_URL"] = upstream.base_url
    SoraProxy(app)
    state = app.extensions[EXTENSION_KEY]
    blueprints = dict(app.blueprints)
    rules = len(list(app.url_map.iter_rules()))
    with pytest.raises(RuntimeError, match="already registered"):
        SoraProxy().init_app(app)
    assert app.extensions[EXTENSION_KEY] is state
    assert app.blueprints == blueprints
    assert len(list(app.url_map.iter_rules())) == rules
    assert app.test_client().post("/v1/videos", json={"prompt": "p"}).status_code == 200


def test_one_extension_object_serves_two_apps_independently(upstream):
    proxy = SoraProxy()
    first, second = Flask("one"), Flask("two")
    first.config["SORA_PROXY_UPSTREAM_URL"] = upstream.base_url
    second.config.update(SORA_PROXY_UPSTREAM_URL=upstream.base_url, SORA_PROXY_URL_PREFIX="/ai")
    proxy.init_app(first)
    proxy.init_app(second)
    assert isinstance(first.extensions[EXTENSION_KEY], ProxyState)
    assert first.extensions[EXTENSION_KEY] is not second.extensions[EXTENSION_KEY]
    assert first.test_client().get("/v1/videos/models").status_code == 200
    assert second.test_client().get("/ai/v1/videos/models").status_code == 200
    assert second.test_client().get("/v1/videos/models").status_code == 404


def _with_file(tmp_path, upstream, body: str) -> Flask:
    path = tmp_path / "upstreams.toml"
    path.write_text(body.format(url=upstream.base_url))
    app = Flask("host")
    app.config.update(
        SORA_PROXY_UPSTREAMS_FILE=str(path),
        SORA_PROXY_STORE_URL=f"sqlite:///{tmp_path}/s.db",
    )
    return app


def test_an_upstream_names_its_dialect(tmp_path, upstream):
    app = _with_file(
        tmp_path,
        upstream,
        '[[upstream]]\nname = "gw"\nbase_url = "{url}"\ndialect = "openai"\nauth = "api-key"\n'
        'api_key = "k-1"\n',
    )
    app.config["SORA_PROXY_ALLOW_ANONYMOUS"] = True
    SoraProxy(app)
    created = app.test_client().post("/v1/videos", json={"prompt": "p"})
    assert created.status_code == 200, created.get_json()
    (sent,) = upstream.state.requests
    assert sent.header("api-key") == "k-1" and sent.header("Authorization") is None


@pytest.mark.parametrize(
    "extra, says",
    [
        (
            'dialect = "veo-9000"',
            "dialect must be one of gemini, openai, openrouter, vllm-omni, xai, not 'veo-9000'",
        ),
        ('auth = "basic"', "auth must be 'bearer' or 'api-key'"),
        ('polling = "fast"', "unknown key(s) polling"),
    ],
)
def test_a_bad_dialect_or_dialect_key_stops_start_up_with_one_line(tmp_path, upstream, extra, says):
    app = _with_file(
        tmp_path, upstream, '[[upstream]]\nname = "gw"\nbase_url = "{url}"\n' + extra + "\n"
    )
    with pytest.raises(ConfigError) as raised:
        SoraProxy(app)
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert EXTENSION_KEY not in app.extensions


_PRO_ONLY = (
    '[[upstream]]\nname = "gw"\nbase_url = "{url}"\n[upstream.models."sora-2-pro"]\n'
    '[upstream.models."wan-2.2"]\nsizes = ["832x480"]\nseconds = ["5"]\n'
)


def test_no_upstream_has_to_offer_sora_2_and_the_first_model_is_the_default(tmp_path, upstream):
    app = _with_file(tmp_path, upstream, _PRO_ONLY)
    SoraProxy(app)
    client = app.test_client()
    listed = [model["id"] for model in client.get("/v1/videos/models").get_json()["data"]]
    assert listed == ["sora-2-pro", "wan-2.2"]
    created = client.post("/v1/videos", json={"prompt": "p"})
    assert created.status_code == 200, created.get_json()
    assert upstream.state.requests[-1].form == {"prompt": ["p"], "model": ["sora-2-pro"]}
    assert created.get_json()["model"] == "sora-2-pro"


def test_the_default_model_is_a_setting(tmp_path, upstream):
    app = _with_file(tmp_path, upstream, _PRO_ONLY)
    app.config["SORA_PROXY_DEFAULT_MODEL"] = "wan-2.2"
    SoraProxy(app)
    refused = app.test_client().post("/v1/videos", json={"prompt": "p", "seconds": "4"})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["param"] == "seconds"  # wan-2.2 offers only 5 s
    assert "Must be one of 5" in refused.get_json()["error"]["message"]


def test_a_default_model_no_upstream_offers_stops_start_up(tmp_path, upstream):
    app = _with_file(tmp_path, upstream, _PRO_ONLY)
    app.config["SORA_PROXY_DEFAULT_MODEL"] = "sora-2"
    with pytest.raises(ConfigError) as raised:
        SoraProxy(app)
    assert str(raised.value).startswith("SORA_PROXY_DEFAULT_MODEL: 'sora-2' is offered by no")


def test_the_standalone_apps_instance_folder_is_a_setting(tmp_path):
    from sora_proxy import create_app

    keyed = {
        "SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
        "SORA_PROXY_UPSTREAM_API_KEY": "sk-upstream",
        "SORA_PROXY_API_KEYS": "alice:sk-alice",
    }
    folder = tmp_path / "chosen"
    app = create_app({**keyed, "SORA_PROXY_INSTANCE_PATH": str(folder)})
    assert app.instance_path == str(folder)
    assert (folder / "sora_proxy.sqlite3").exists()  # the default store lives there
    with pytest.raises(ConfigError) as raised:
        create_app({**keyed, "SORA_PROXY_INSTANCE_PATH": "relative/folder"})
    assert "SORA_PROXY_INSTANCE_PATH" in str(raised.value)
