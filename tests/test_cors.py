"""CORS on the proxy's routes only (``SORA_PROXY_CORS_ORIGINS``): preflights as Chromium sends
them, the headers a page may read on every answer (errors included), nothing for an origin
not listed, nothing at all when the setting is off, and nothing ever on the host app's own
routes.

Real sockets: the OpenAI simulator upstream, the proxy (or a host app holding it) on
werkzeug's server, and a tiny upstream that sends CORS headers of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, jsonify
from servers import served

from sora_proxy import SoraProxy, create_app
from sora_proxy.simulator import FailureSpec, SimulatorServer

ALICE = "sk-alice-cors"
UPSTREAM_KEY = "sk-upstream-cors-0b7e"
ORIGIN = "https://app.example"
#: What a page must be able to read (case-insensitive names).
MUST_EXPOSE = {
    "openai-poll-after-ms",
    "x-request-id",
    "content-range",
    "accept-ranges",
    "content-length",
    "etag",
    "content-disposition",
    "retry-after",
    "idempotent-replayed",
}


def _config(tmp_path: Path, sim: SimulatorServer, cors: str | None) -> dict[str, Any]:
    config = {
        "SORA_PROXY_UPSTREAM_URL": sim.base_url,
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": f"alice:{ALICE}",
        "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
        "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
        "SORA_PROXY_ARCHIVE_URL": f"file://{tmp_path}/archive",
        "SORA_PROXY_POLL_INTERVAL": "0.2",
        "SORA_PROXY_SIGNING_KEY": "cors-test-signing-key",
    }
    if cors is not None:
        config["SORA_PROXY_CORS_ORIGINS"] = cors
    return config


@contextmanager
def _proxy(tmp_path: Path, cors: str | None = ORIGIN) -> Iterator[tuple[SimulatorServer, str]]:
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.05) as sim:
        with served(create_app(_config(tmp_path, sim, cors))) as url:
            yield sim, url


def _call(
    method: str, url: str, *, origin: str | None = ORIGIN, key: str | None = ALICE, **kwargs: Any
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if origin is not None:
        headers["Origin"] = origin
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


def _preflight(url: str, method: str, headers: str = "", origin: str = ORIGIN) -> requests.Response:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return requests.options(url, headers=asked, timeout=30)


def _names(value: str | None) -> set[str]:
    return {name.strip().lower() for name in (value or "").split(",") if name.strip()}


def _cors_headers(response: requests.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def _readable(response: requests.Response, origin: str = ORIGIN) -> None:
    """What a browser needs to hand ``response`` to a page on ``origin``."""
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert MUST_EXPOSE <= _names(response.headers["Access-Control-Expose-Headers"])
    assert "origin" in _names(response.headers.get("Vary"))
    assert "Access-Control-Allow-Credentials" not in response.headers


def _completed(url: str) -> str:
    video_id: str = _call("POST", f"{url}/v1/videos", json={"prompt": "p"}).json()["id"]
    deadline = time.monotonic() + 20
    while _call("GET", f"{url}/v1/videos/{video_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return video_id


def test_preflight_of_a_create_as_the_openai_sdk_sends_it(tmp_path: Path) -> None:
    with _proxy(tmp_path) as (_, url):
        # Chromium's form: lower case, sorted, comma-separated without spaces.
        asked = "authorization,content-type,idempotency-key,x-stainless-os,x-stainless-retry-count"
        answer = _preflight(f"{url}/v1/videos", "POST", asked)
        assert answer.status_code == 204 and answer.content == b""
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert {"get", "post"} <= _names(answer.headers["Access-Control-Allow-Methods"])
        assert _names(answer.headers["Access-Control-Allow-Headers"]) == _names(asked)
        assert answer.headers["Access-Control-Max-Age"] == "600"
        assert {"origin", "access-control-request-headers"} <= _names(answer.headers["Vary"])
        assert "Access-Control-Allow-Credentials" not in answer.headers

        # Any case, any spacing; the SDK's other headers; only what was asked comes back.
        asked = "Authorization, OpenAI-Organization, openai-project, OpenAI-Beta, X-Stainless-Lang"
        granted = _names(
            _preflight(f"{url}/v1/videos", "POST", asked).headers["Access-Control-Allow-Headers"]
        )
        assert granted == _names(asked)
        # A header the proxy does not take is left out, so the browser refuses the request.
        partial = _preflight(f"{url}/v1/videos", "POST", "authorization,x-evil,cookie")
        assert _names(partial.headers["Access-Control-Allow-Headers"]) == {"authorization"}
        bare = _preflight(f"{url}/v1/videos", "GET")
        assert bare.status_code == 204 and "Access-Control-Allow-Headers" not in bare.headers


@pytest.mark.parametrize(
    ("path", "method", "methods"),
    [
        ("/v1/videos/video_abc", "DELETE", {"get", "head", "delete"}),
        ("/v1/videos/video_abc/content", "GET", {"get", "head"}),
        ("/v1/videos/video_abc/content_url", "POST", {"post"}),
        ("/v1/videos/video_abc/remix", "POST", {"post"}),
    ],
)
def test_preflight_names_what_the_route_takes(
    tmp_path: Path, path: str, method: str, methods: set[str]
) -> None:
    with _proxy(tmp_path) as (_, url):
        answer = _preflight(f"{url}{path}", method, "authorization,range,if-none-match")
        assert answer.status_code == 204
        assert _names(answer.headers["Access-Control-Allow-Methods"]) - {"options"} == methods
        assert _names(answer.headers["Access-Control-Allow-Headers"]) == {
            "authorization",
            "range",
            "if-none-match",
        }


def test_answers_and_errors_are_readable_by_the_page(tmp_path: Path) -> None:
    with _proxy(tmp_path) as (sim, url):
        created = _call("POST", f"{url}/v1/videos", json={"prompt": "p"})
        assert created.status_code == 200
        _readable(created)
        video_id = _completed(url)
        retrieved = _call("GET", f"{url}/v1/videos/{video_id}")
        _readable(retrieved)
        assert retrieved.headers["openai-poll-after-ms"]
        _readable(_call("GET", f"{url}/v1/videos"))
        _readable(_call("GET", f"{url}/v1/videos/models"))
        ranged = _call("GET", f"{url}/v1/videos/{video_id}/content", headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206
        _readable(ranged)
        _readable(_call("HEAD", f"{url}/v1/videos/{video_id}/content"))
        # A signed content URL, fetched by a page with no key.
        signed = _call("POST", f"{url}/v1/videos/{video_id}/content_url").json()["url"]
        _readable(_call("GET", signed, key=None))

        # Errors, in the envelope, readable too.
        for answer, status in (
            (_call("GET", f"{url}/v1/videos", key=None), 401),
            (_call("GET", f"{url}/v1/videos/video_nope"), 404),
            (_call("GET", f"{url}/v1/videos/a/b/c"), 404),
            (_call("PUT", f"{url}/v1/videos"), 405),
            (_call("GET", f"{url}/v1/videos/{video_id}/content?variant=poster"), 400),
            (_call("GET", f"{signed}x", key=None), 403),
        ):
            assert answer.status_code == status
            assert "error" in answer.json()
            _readable(answer)
        sim.state.fail_next.append(
            FailureSpec(method="POST", status=429, headers={"Retry-After": "7"})
        )
        limited = _call("POST", f"{url}/v1/videos", json={"prompt": "p"})
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
        _readable(limited)


def test_an_origin_not_listed_gets_no_cors_headers(tmp_path: Path) -> None:
    with _proxy(tmp_path, cors=f"{ORIGIN}, https://admin.example") as (_, url):
        _readable(
            _call("GET", f"{url}/v1/videos", origin="https://admin.example"),
            "https://admin.example",
        )
        for other in (
            "https://evil.example",
            "http://app.example",
            "https://app.example.evil",
            "null",
        ):
            preflight = _preflight(f"{url}/v1/videos", "POST", "authorization", origin=other)
            # The same plain 204 as any OPTIONS: the browser then refuses the request.
            assert preflight.status_code == 204
            assert preflight.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
            assert _cors_headers(preflight) == {}
            for answer in (
                _call("GET", f"{url}/v1/videos", origin=other),
                _call("GET", f"{url}/v1/videos", origin=other, key=None),
            ):
                assert answer.status_code in (200, 401)
                assert _cors_headers(answer) == {}
                # Cached answers must not be served across origins.
                assert "origin" in _names(answer.headers.get("Vary"))
        # No Origin at all (curl, server-side clients): no CORS headers either.
        assert _cors_headers(_call("GET", f"{url}/v1/videos", origin=None)) == {}


def test_any_origin(tmp_path: Path) -> None:
    with _proxy(tmp_path, cors="*") as (_, url):
        preflight = _preflight(
            f"{url}/v1/videos", "POST", "authorization,content-type", "https://x.example"
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert _names(preflight.headers["Access-Control-Allow-Headers"]) == {
            "authorization",
            "content-type",
        }
        _readable(_call("GET", f"{url}/v1/videos", origin="https://y.example"), "*")
        _readable(_call("GET", f"{url}/v1/videos", origin="https://y.example", key=None), "*")


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    with _proxy(tmp_path, cors=None) as (_, url):
        preflight = _preflight(f"{url}/v1/videos", "POST", "authorization,content-type")
        assert preflight.status_code == 204 and _cors_headers(preflight) == {}
        for answer in (
            _call("GET", f"{url}/v1/videos"),
            _call("GET", f"{url}/v1/videos", key=None),
            _call("GET", f"{url}/v1/videos/video_nope"),
        ):
            assert _cors_headers(answer) == {}
            assert "origin" not in _names(answer.headers.get("Vary"))


def test_an_upstreams_own_cors_headers_never_speak_for_the_proxy(tmp_path: Path) -> None:
    upstream = Flask("cors-upstream")

    @upstream.get("/v1/videos")
    def videos() -> Any:
        answer = jsonify({"object": "list", "data": []})
        answer.headers["Access-Control-Allow-Origin"] = "*"
        answer.headers["Access-Control-Allow-Credentials"] = "true"
        answer.headers["Access-Control-Expose-Headers"] = "x-upstream-secret"
        return answer

    with served(upstream) as upstream_url:
        # Pass-through: the list is relayed from the upstream, headers and all.
        for cors in (ORIGIN, None):
            config = {"SORA_PROXY_UPSTREAM_URL": f"{upstream_url}/v1"}
            if cors:
                config["SORA_PROXY_CORS_ORIGINS"] = cors
            with served(create_app(config)) as url:
                listed = _call("GET", f"{url}/v1/videos", origin="https://evil.example")
                assert listed.status_code == 200
                if cors:
                    assert _cors_headers(listed) == {}
                    _readable(_call("GET", f"{url}/v1/videos"))
                else:  # CORS off: the relay is as it always was
                    assert listed.headers["Access-Control-Allow-Origin"] == "*"


def test_the_host_apps_own_routes_never_change(tmp_path: Path) -> None:
    def host(cors: str | None, sim: SimulatorServer, folder: Path) -> Flask:
        app = Flask("host")
        app.config.update(_config(folder, sim, cors))

        @app.route("/own", methods=["GET", "POST"])
        def own() -> Any:
            return jsonify({"own": True})

        @app.get("/own/broken")
        def broken() -> Any:
            raise RuntimeError("the host's own failure")

        SoraProxy(app)
        return app

    def fetch(url: str) -> list[tuple[int, dict[str, str], bytes]]:
        answers = [
            _call("GET", f"{url}/own"),
            _call("POST", f"{url}/own", json={}),
            _preflight(f"{url}/own", "POST", "authorization,content-type"),
            _call("OPTIONS", f"{url}/own"),
            _call("GET", f"{url}/own/broken"),
            _call("GET", f"{url}/missing"),
            _call("DELETE", f"{url}/own"),
        ]
        return [
            (a.status_code, {k: v for k, v in a.headers.items() if k != "Date"}, a.content)
            for a in answers
        ]

    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.05) as sim:
        with (
            served(host(ORIGIN, sim, tmp_path / "on")) as on,
            served(host(None, sim, tmp_path / "off")) as off,
        ):
            with_cors, without = fetch(on), fetch(off)
            assert with_cors == without
            assert all(not _cors_headers_of(headers) for _, headers, _ in with_cors)
            # While the proxy's routes in the same app do answer CORS.
            _readable(_call("GET", f"{on}/v1/videos"))


def _cors_headers_of(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}
