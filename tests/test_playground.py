"""The playground page: off unless asked for, then one page and its two files, strict headers,
and the API calls its script makes. Real sockets throughout (werkzeug's server, the
simulator upstream; ``sora-proxy serve`` for ``make serve``). What the page does in a browser
is the headless-Chromium test's job."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from conftest import CALLER_KEY, UPSTREAM_KEY
from images import make_image
from servers import REPO, free_port, free_run, served, wait_for_port

from sora_proxy import create_app
from sora_proxy.cli import _serve_environment
from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.fleet import MEMBERS as FLEET

if str(REPO) not in sys.path:  # the repository root, for examples.host_app
    sys.path.insert(0, str(REPO))
from examples.host_app import create_host_app  # noqa: E402

ASSETS = REPO / "sora_proxy" / "playground_assets"
#: The ids the browser test drives: renaming one breaks it.
IDS = (
    "api-key",
    "save-key",
    "model",
    "model-info",
    "prompt",
    "orientation",
    "seconds",
    "reference",
    "drop-zone",
    "create",
    "status",
    "progress",
    "player",
    "videos",
    "alert",
)
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class Markup(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def by_id(self, element_id: str) -> tuple[str, dict[str, str | None]] | None:
        return next(((t, a) for t, a in self.tags if a.get("id") == element_id), None)

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}

    def first(self, tag: str) -> dict[str, str | None]:
        return next(a for t, a in self.tags if t == tag)


@pytest.fixture
def keyed(upstream: SimulatorServer, tmp_path: Path):
    """A keyed proxy's settings (caller keys, an upstream key), playground off."""
    return {
        "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": f"alice:{CALLER_KEY}",
        "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "SORA_PROXY_ARCHIVE": "false",
    }


@pytest.fixture
def on(keyed) -> Iterator[str]:
    """The keyed proxy with the playground on, on a real socket."""
    with served(create_app({**keyed, "SORA_PROXY_PLAYGROUND": "true"})) as url:
        yield url


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written: requests and urllib3 would remove its dot segments."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_unknown_route(response: requests.Response, path: str) -> None:
    assert response.status_code == 404, response.text
    assert response.json() == {
        "error": {
            "message": f"Unknown route: GET {path}.",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_route",
        }
    }


# --- off --------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", [None, "false"])
def test_off_the_page_is_an_unknown_route(keyed, setting):
    if setting is not None:
        keyed["SORA_PROXY_PLAYGROUND"] = setting
    with served(create_app(keyed)) as url:
        unknown = requests.get(f"{url}/v1/videos/x/y/z", timeout=10)
        for path in ("/playground", "/playground/assets/playground.js"):
            response = requests.get(url + path, timeout=10)
            assert_unknown_route(response, path)
            # The very answer a path no route takes gets, but for the path it names.
            assert response.json()["error"]["code"] == unknown.json()["error"]["code"]
            assert "Content-Security-Policy" not in response.headers


# --- the page ---------------------------------------------------------------------------------


def test_the_page_with_caller_keys(on):
    # A caller who sends their key with the page request still finds it nowhere in the page.
    response = requests.get(
        f"{on}/playground", headers={"Authorization": f"Bearer {CALLER_KEY}"}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    page = Markup(response.text)
    assert set(IDS) <= page.ids()
    assert page.by_id("api-key")[0] == "input"
    assert page.by_id("api-key")[1]["type"] == "password"
    assert page.by_id("player")[0] == "video" and "controls" in page.by_id("player")[1]
    assert page.by_id("progress")[0] == "progress"
    assert page.by_id("reference")[1]["type"] == "file"
    assert page.by_id("alert")[1]["role"] == "alert"
    body = page.first("body")
    assert body["data-api-base"] == "/v1"
    assert body["data-auth"] == "key" and body["data-key-required"] == "true"
    for secret in (CALLER_KEY, UPSTREAM_KEY, "alice"):
        assert secret not in response.text


def test_every_field_has_a_label(on):
    page = Markup(requests.get(f"{on}/playground", timeout=10).text)
    labelled = {a["for"] for t, a in page.tags if t == "label" and a.get("for")}
    fields = {a["id"] for t, a in page.tags if t in ("input", "select", "textarea") and a.get("id")}
    assert fields and fields <= labelled


def test_the_page_keeps_to_its_own_policy(on):
    """Nothing the CSP would block: no inline script, style or handler, nothing external."""
    text = requests.get(f"{on}/playground", timeout=10).text
    page = Markup(text)
    scripts = [a for t, a in page.tags if t == "script"]
    assert scripts and all(a.get("src") for a in scripts)
    assert "<style" not in text
    for tag, attributes in page.tags:
        assert "style" not in attributes, tag
        assert not [name for name in attributes if name.startswith("on")], tag
        for name in ("src", "href", "action", "poster"):
            value = attributes.get(name) or ""
            assert not re.match(r"^(https?:)?//", value), (tag, name, value)
    # Every file the page names is served, with its own type.
    for url in [a["src"] for a in scripts] + [
        a["href"] for t, a in page.tags if t == "link" and a.get("rel") == "stylesheet"
    ]:
        assert requests.get(on + url, timeout=10).status_code == 200, url


def test_under_a_url_prefix(keyed):
    app = create_app({**keyed, "SORA_PROXY_PLAYGROUND": "true", "SORA_PROXY_URL_PREFIX": "/ai"})
    with served(app) as url:
        response = requests.get(f"{url}/ai/playground", timeout=10)
        assert response.status_code == 200
        page = Markup(response.text)
        base = page.first("body")["data-api-base"]
        assert base == "/ai/v1"
        script = page.first("script")["src"]
        assert script.startswith("/ai/playground/assets/playground.js?v=")
        assert requests.get(url + script, timeout=10).status_code == 200
        # The base the script uses is the API's.
        models = requests.get(
            f"{url}{base}/videos/models",
            headers={"Authorization": f"Bearer {CALLER_KEY}"},
            timeout=10,
        )
        assert models.status_code == 200 and models.json()["data"]
        assert requests.get(f"{url}/playground", timeout=10).status_code == 404


def test_with_the_host_apps_login_there_is_no_key_field(upstream, tmp_path):
    host = create_host_app(
        {
            "SECRET_KEY": "test-secret",
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path / 'host.sqlite3'}",
            "SORA_PROXY_PLAYGROUND": True,
        }
    )
    with served(host) as url:
        response = requests.get(f"{url}/ai/playground", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Security-Policy"] == CSP
        page = Markup(response.text)
        assert page.by_id("api-key") is None and page.by_id("save-key") is None
        assert set(IDS) - {"api-key", "save-key"} <= page.ids()
        body = page.first("body")
        assert body["data-auth"] == "session" and body["data-api-base"] == "/ai/v1"
        # What the script's same-origin fetches carry: the host's session cookie, no key.
        browser = requests.Session()
        assert requests.get(f"{url}/ai/v1/videos/models", timeout=10).status_code == 401
        login = {"username": "ann", "password": "wonderland"}
        assert browser.post(f"{url}/login", data=login, timeout=10).status_code == 200
        assert browser.get(f"{url}/ai/v1/videos/models", timeout=10).status_code == 200


def test_without_caller_keys_the_key_is_optional(upstream):
    """Pass-through (what ``make serve`` runs): a key is forwarded if the visitor has one."""
    app = create_app({"SORA_PROXY_UPSTREAM_URL": upstream.base_url, "SORA_PROXY_PLAYGROUND": "1"})
    with served(app) as url:
        page = Markup(requests.get(f"{url}/playground", timeout=10).text)
        assert page.by_id("api-key") is not None
        assert page.first("body")["data-key-required"] == "false"


# --- the assets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("playground.js", "text/javascript; charset=utf-8"),
        ("playground.css", "text/css; charset=utf-8"),
    ],
)
def test_assets_with_their_types_and_validators(on, name, content_type):
    url = f"{on}/playground/assets/{name}"
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.content == (ASSETS / name).read_bytes()
    etag = response.headers["ETag"]
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    # The page links each file with its version: that URL may be kept for good.
    version = etag.strip('"')
    versioned = requests.get(url, params={"v": version}, timeout=10)
    assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    stale = requests.get(url, params={"v": "old"}, timeout=10)
    assert stale.headers["Cache-Control"] == "no-cache"
    assert f"{name}?v={version}" in requests.get(f"{on}/playground", timeout=10).text
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["ETag"] == etag


@pytest.mark.parametrize(
    "name",
    [
        "playground.html",  # the template: not an asset
        "nope.js",
        "PLAYGROUND.JS",
        "playground.js.map",
        "__init__.py",
        "..",
        "%2e%2e",
        "..%5cplayground.py",
        "playground.js%00",
        "playground.js%20",
    ],
)
def test_unknown_assets_are_unknown_routes(on, name):
    status, body = raw_get(on, f"/playground/assets/{name}")
    assert status == 404
    assert b'"code": "unknown_route"' in body or b'"code":"unknown_route"' in body


@pytest.mark.parametrize(
    "path",
    [
        "/playground/assets/../playground.py",
        "/playground/assets/../../sora_proxy/settings.py",
        "/playground/assets/..%2fplayground.py",
        "/playground/assets/..%2F..%2Fsettings.py",
        "/playground/assets/%2e%2e/%2e%2e/setup.cfg",
        "/playground/assets//etc/passwd",
        "/playground/assets/./playground.js/..",
        "/playground/assets/playground_assets/playground.html",
        "/playground/playground_assets/playground.js",
    ],
)
def test_path_traversal_finds_nothing(on, path):
    status, body = raw_get(on, path)
    assert status == 404
    for leaked in (b"from __future__", b"[metadata]", b"root:", b"{% if", b"use strict"):
        assert leaked not in body


def test_the_script_never_parses_api_text_as_markup():
    script = (ASSETS / "playground.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "localStorage" not in script and "sessionStorage" in script
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (make test installs it)")
    checked = subprocess.run([node, "--check", str(ASSETS / "playground.js")], capture_output=True)
    assert checked.returncode == 0, checked.stderr


# --- the calls the script makes ---------------------------------------------------------------


def test_the_calls_the_script_makes(on, upstream):
    """Each answer has what the script reads: models with sizes and seconds, one paid create
    for a double click, the poll-after header, the list's paging fields."""
    auth = {"Authorization": f"Bearer {CALLER_KEY}"}
    models = requests.get(f"{on}/v1/videos/models", headers=auth, timeout=10).json()["data"]
    model = next(m for m in models if m["id"] == "sora-2")
    assert "1280x720" in model["sizes"] and "4" in model["seconds"]
    key = str(uuid.uuid4())
    fields = {"prompt": "A paper boat", "model": "sora-2", "size": "1280x720", "seconds": "4"}
    image = {"input_reference": ("ref.png", make_image(640, 360), "image/png")}
    answers = [
        requests.post(
            f"{on}/v1/videos",
            data=fields,
            files=image,
            headers={**auth, "Idempotency-Key": key},
            timeout=30,
        )
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert answers[1].headers.get("idempotent-replayed") == "true"
    creates = [r for r in upstream.state.requests if r.method == "POST"]
    assert len(creates) == 1
    video_id = answers[0].json()["id"]
    polled = requests.get(f"{on}/v1/videos/{video_id}", headers=auth, timeout=10)
    assert polled.json()["status"] in ("queued", "in_progress", "completed")
    assert int(polled.headers["openai-poll-after-ms"]) >= 0
    page = requests.get(f"{on}/v1/videos", params={"limit": 20}, headers=auth, timeout=10).json()
    assert [v["id"] for v in page["data"]] == [video_id]
    assert page["has_more"] is False and page["last_id"] == video_id


# --- make serve -------------------------------------------------------------------------------


def test_serve_turns_the_playground_on_and_makes_a_signing_key():
    environ = _serve_environment({"PATH": "/bin"})
    assert environ["SORA_PROXY_PLAYGROUND"] == "true" and environ["PATH"] == "/bin"
    key = environ["SORA_PROXY_SIGNING_KEY"]
    assert len(key) >= 32 and key != _serve_environment({})["SORA_PROXY_SIGNING_KEY"]
    chosen = {"SORA_PROXY_PLAYGROUND": "false", "SORA_PROXY_SIGNING_KEY": "mine"}
    assert _serve_environment(chosen) == chosen


def test_make_serve_serves_the_playground(tmp_path: Path):
    sim_port = free_run(len(FLEET))
    bind = free_port()
    while sim_port <= bind < sim_port + len(FLEET):
        bind = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SORA_PROXY_") and k != "WEB_CONCURRENCY"
    }
    env.update(
        SORA_PROXY_BIND=f"127.0.0.1:{bind}",
        SORA_PROXY_SIMULATOR_PORT=str(sim_port),
        WEB_CONCURRENCY="1",
        SORA_PROXY_STORE_URL=f"sqlite:///{tmp_path}/serve.sqlite3",
        SORA_PROXY_SPOOL_DIR=str(tmp_path / "spool"),
    )
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sora_proxy.cli", "serve"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(bind, process, timeout=60)
        url = f"http://127.0.0.1:{bind}"
        page = requests.get(f"{url}/playground", timeout=30)
        assert page.status_code == 200, log_path.read_text(errors="replace")
        assert page.headers["Content-Security-Policy"] == CSP
        base = Markup(page.text).first("body")["data-api-base"]
        models = requests.get(f"{url}{base}/videos/models", timeout=30)
        assert models.status_code == 200 and len(models.json()["data"]) > 1
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log_path.read_text(errors="replace")
