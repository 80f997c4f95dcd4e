"""Caller keys, pass-through auth, start-up refusals, and keys never leaking."""

from __future__ import annotations

import logging

import pytest
from conftest import CALLER_KEY, UPSTREAM_KEY

from sora_proxy import ConfigError, create_app


def keyed_client(make_app):
    return make_app(upstream_api_key=UPSTREAM_KEY, api_keys=f"other-key,{CALLER_KEY}").test_client()


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", "Bearer ", CALLER_KEY])
def test_missing_or_wrong_key_is_401_without_echo(make_app, upstream, header):
    client = keyed_client(make_app)
    headers = {"Authorization": header} if header is not None else {}
    response = client.post("/v1/videos", json={"prompt": "p"}, headers=headers)
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    text = response.get_data(as_text=True)
    assert "wrong-key" not in text and CALLER_KEY not in text and UPSTREAM_KEY not in text
    assert upstream.state.requests == []


def test_valid_key_sends_the_upstream_key_not_the_callers(make_app, upstream):
    client = keyed_client(make_app)
    response = client.post(
        "/v1/videos", json={"prompt": "p"}, headers={"Authorization": f"Bearer {CALLER_KEY}"}
    )
    assert response.status_code == 200, response.get_json()
    (recorded,) = upstream.state.requests
    assert recorded.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CALLER_KEY.encode() not in recorded.body
    assert all(CALLER_KEY not in value for value in recorded.headers.values())


def test_pass_through_forwards_the_callers_authorization(make_app, upstream):
    client = make_app().test_client()
    client.post("/v1/videos", json={"prompt": "p"}, headers={"Authorization": "Bearer sk-theirs"})
    assert upstream.state.requests[0].headers["Authorization"] == "Bearer sk-theirs"


def test_upstream_key_without_caller_keys_refuses_to_start(upstream):
    with pytest.raises(ConfigError) as info:
        create_app(
            {
                "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
                "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            }
        )
    assert "SORA_PROXY_API_KEYS" in str(info.value)
    assert UPSTREAM_KEY not in str(info.value)
    create_app(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_ALLOW_ANONYMOUS": "true",
        }
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("UPSTREAM_URL", "ftp://example.invalid"),
        ("UPSTREAM_URL", "not a url"),
        ("UPSTREAM_URL", None),
        ("REFERENCE_FIT", "stretch"),
        ("MAX_REFERENCE_BYTES", "twenty"),
        ("MAX_REFERENCE_BYTES", "-1"),
        ("CONNECT_TIMEOUT", "0"),
        ("READ_TIMEOUT", "soon"),
        ("FETCH_ALLOW_PRIVATE", "maybe"),
        ("ALLOW_ANONYMOUS", "sure"),
        ("URL_PREFIX", "/a b"),
    ],
)
def test_bad_settings_name_their_key(upstream, key, value):
    config = {"SORA_PROXY_UPSTREAM_URL": upstream.base_url, f"SORA_PROXY_{key}": value}
    with pytest.raises(ConfigError) as info:
        create_app(config)
    message = str(info.value)
    assert message.startswith(f"SORA_PROXY_{key}:")
    assert "\n" not in message


def test_url_prefix_mounts_routes(make_app, upstream):
    client = make_app(url_prefix="/ai/").test_client()
    assert client.post("/ai/v1/videos", json={"prompt": "p"}).status_code == 200
    assert client.post("/v1/videos", json={"prompt": "p"}).status_code == 404


def test_keys_never_appear_in_responses_or_logs(make_app, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    client = keyed_client(make_app)
    auth = {"Authorization": f"Bearer {CALLER_KEY}"}
    bodies = []
    from sora_proxy.simulator import FailureSpec

    upstream.state.fail_next.append(
        FailureSpec(path_prefix="/v1/videos", method="POST", status=500)
    )
    for body in ({"prompt": "p"}, {"prompt": "p"}, {"prompt": ""}, {"prompt": "p", "size": "9x9"}):
        response = client.post("/v1/videos", json=body, headers=auth)
        bodies.append(response.get_data(as_text=True) + str(response.headers))
    bodies.append(
        client.post(
            "/v1/videos", json={"prompt": "p"}, headers={"Authorization": "Bearer nope"}
        ).get_data(as_text=True)
    )
    broken = make_app(
        upstream_api_key=UPSTREAM_KEY, api_keys=CALLER_KEY, upstream_url="http://127.0.0.1:9/v1"
    ).test_client()
    bodies.append(
        broken.post("/v1/videos", json={"prompt": "p"}, headers=auth).get_data(as_text=True)
    )
    logged = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    for secret in (UPSTREAM_KEY, CALLER_KEY):
        assert secret not in logged
        assert all(secret not in body for body in bodies)
    assert "upstream default unreachable" in caplog.text  # the logs were captured at all
