"""The playground and embeddable content in a real headless Chromium: create with a reference
image, watch it complete, play it inline with its poster, remix and delete; and a page on
another origin that calls the API under CORS and plays a signed content URL.

Screenshots of the page (empty, rendering, playing) are taken on the way; with
``PLAYGROUND_SCREENSHOTS=<folder>`` they are also copied there (that is how the README's are
made: ``PLAYGROUND_SCREENSHOTS=docs .venv/bin/pytest tests/test_playground_browser.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from browser import chromium
from flask import Flask
from images import make_image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from servers import served

from sora_proxy import create_app
from sora_proxy.simulator import SimulatorServer

ALICE, BOB = "sk-alice-playground", "sk-bob-playground"
UPSTREAM_KEY = "sk-upstream-playground"


@dataclass
class Stack:
    sim: SimulatorServer
    url: str

    def api(self, method: str, path: str, key: str = ALICE, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)


@contextmanager
def _stack(tmp_path: Path, *, cors_origins: str = "", step: float = 0.2) -> Iterator[Stack]:
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=step) as sim:
        proxy = create_app(
            {
                "SORA_PROXY_UPSTREAM_URL": sim.base_url,
                "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
                "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
                "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
                "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
                "SORA_PROXY_ARCHIVE_URL": f"file://{tmp_path}/archive",
                "SORA_PROXY_POLL_INTERVAL": "0.3",
                "SORA_PROXY_PLAYGROUND": "true",
                "SORA_PROXY_SIGNING_KEY": "playground-signing-key-for-tests",
                "SORA_PROXY_CORS_ORIGINS": cors_origins,
            }
        )
        with served(proxy) as url:
            yield Stack(sim, url)


def _wait(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met after {timeout} s")


def _screenshot(browser: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"playground-{name}.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("PLAYGROUND_SCREENSHOTS")
    if target:
        shutil.copy(path, Path(target) / path.name)


def _player_state(browser: Any) -> dict[str, Any]:
    return browser.execute_script(
        "const v = document.getElementById('player');"
        "return {ready: v.readyState, time: v.currentTime, src: v.currentSrc,"
        " poster: v.poster, error: v.error && v.error.code};"
    )


def _poster_loads(browser: Any, url: str) -> bool:
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const image = new Image();"
        "image.onload = () => done(image.naturalWidth > 0);"
        "image.onerror = () => done(false);"
        "image.src = arguments[0];",
        url,
    )


def test_the_playground_creates_watches_plays_remixes_and_deletes(tmp_path: Path) -> None:
    reference = tmp_path / "reference.png"
    reference.write_bytes(make_image(1280, 720, "PNG"))
    with _stack(tmp_path, step=1.0) as stack, chromium(height=1250) as browser:
        browser.set_script_timeout(20)
        browser.get(f"{stack.url}/playground")
        browser.find_element(By.ID, "api-key").send_keys(ALICE)
        browser.find_element(By.ID, "save-key").click()
        model = Select(browser.find_element(By.ID, "model"))
        _wait(lambda: any(o.text.startswith("sora-2") for o in model.options), what="models")
        model.select_by_value("sora-2")
        _wait(lambda: "1280x720" in browser.find_element(By.ID, "model-info").text, what="sizes")
        _screenshot(browser, tmp_path, "empty")

        browser.find_element(By.ID, "prompt").send_keys("A paper lantern drifting at dusk")
        Select(browser.find_element(By.ID, "orientation")).select_by_value("landscape")
        Select(browser.find_element(By.ID, "seconds")).select_by_value("4")
        browser.find_element(By.ID, "reference").send_keys(str(reference))
        browser.find_element(By.ID, "create").click()

        # The create went upstream with the reference image, as a file of the video's size.
        create = _wait(
            lambda: [r for r in stack.sim.state.requests if r.method == "POST"], what="create"
        )[0]
        assert create.form["prompt"] == ["A paper lantern drifting at dusk"]
        assert create.form["size"] == ["1280x720"] and create.form["seconds"] == ["4"]
        assert create.files["input_reference"][0].data[:8] == b"\x89PNG\r\n\x1a\n"
        _wait(
            lambda: "in_progress" in browser.find_element(By.ID, "status").text,
            what="in progress shown",
        )
        _screenshot(browser, tmp_path, "rendering")

        # Completed: the player loads the video and its poster, and plays.
        state = _wait(lambda: (s := _player_state(browser))["ready"] >= 2 and s, what="video")
        assert state["error"] is None and state["poster"]
        assert _poster_loads(browser, state["poster"])
        browser.execute_script("const v = document.getElementById('player'); v.muted = true;")
        browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "document.getElementById('player').play().then(() => done(true), () => done(false));"
        )
        _wait(lambda: _player_state(browser)["time"] > 0, what="playback")
        assert "completed" in browser.find_element(By.ID, "status").text
        _screenshot(browser, tmp_path, "playing")

        # The list shows this caller's video; remix it, then delete the remix.
        (video_id,) = [v["id"] for v in stack.api("GET", "/v1/videos").json()["data"]]
        item = _wait(
            lambda: browser.find_elements(By.CSS_SELECTOR, f'#videos [data-video-id="{video_id}"]'),
            what="list item",
        )[0]
        item.find_element(By.CSS_SELECTOR, ".remix").click()
        remix_prompt = _wait(
            lambda: item.find_elements(By.CSS_SELECTOR, ".remix-prompt"), what="remix form"
        )[0]
        remix_prompt.send_keys("The same lantern, at dawn")
        item.find_element(By.CSS_SELECTOR, ".remix-submit").click()
        remixes = _wait(
            lambda: [
                v
                for v in stack.api("GET", "/v1/videos").json()["data"]
                if v.get("remixed_from_video_id") == video_id
            ],
            what="remix",
        )
        remix_id = remixes[0]["id"]
        remix_item = _wait(
            lambda: browser.find_elements(By.CSS_SELECTOR, f'#videos [data-video-id="{remix_id}"]'),
            what="remix listed",
        )[0]
        remix_item.find_element(By.CSS_SELECTOR, ".delete").click()
        _wait(
            lambda: (
                not browser.find_elements(By.CSS_SELECTOR, f'#videos [data-video-id="{remix_id}"]')
            ),
            what="remix removed from the list",
        )
        assert stack.api("GET", f"/v1/videos/{remix_id}").status_code == 404
        assert stack.api("GET", f"/v1/videos/{video_id}").status_code == 200
        # Nothing went wrong in the page itself.
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []


EMBED_PAGE = """<!doctype html><meta charset="utf-8"><title>embed</title>
<video id="v" muted playsinline></video><img id="poster">
<script>
window.result = null;
(async () => {
  const params = new URLSearchParams(location.search);
  const api = params.get("api"), id = params.get("id"), key = params.get("key");
  const auth = {"Authorization": "Bearer " + key};
  try {
    const answer = await fetch(api + "/v1/videos/" + id, {headers: auth});
    const video = await answer.json();
    const sign = async (variant) => (await (await fetch(
      api + "/v1/videos/" + id + "/content_url",
      {method: "POST", body: JSON.stringify({variant}),
       headers: {...auth, "Content-Type": "application/json", "Idempotency-Key": "k-" + variant}}
    )).json()).url;
    const [videoUrl, posterUrl] = [await sign("video"), await sign("thumbnail")];
    document.getElementById("poster").src = posterUrl;
    const player = document.getElementById("v");
    player.src = videoUrl;
    await player.play();
    window.result = {status: video.status, pollAfter: answer.headers.get("openai-poll-after-ms"),
                     requestId: answer.headers.get("x-request-id"), videoUrl};
  } catch (error) {
    window.result = {error: String(error)};
  }
})();
</script>"""


@pytest.fixture
def embedding_site() -> Iterator[str]:
    site = Flask("embedding-site")
    site.add_url_rule("/embed", "embed", lambda: EMBED_PAGE)
    with served(site) as url:
        yield url


def test_a_page_on_another_origin_uses_the_api_and_plays_a_signed_url(
    tmp_path: Path, embedding_site: str
) -> None:
    with _stack(tmp_path, cors_origins=embedding_site) as stack, chromium() as browser:
        video_id = stack.api(
            "POST", "/v1/videos", json={"prompt": "a kite", "seconds": "4"}
        ).json()["id"]
        _wait(
            lambda: stack.api("GET", f"/v1/videos/{video_id}").json()["status"] == "completed",
            what="completed",
        )
        query = f"api={stack.url}&id={video_id}&key={ALICE}"
        browser.get(f"{embedding_site}/embed?{query}")
        result = _wait(lambda: browser.execute_script("return window.result"), what="embed")
        assert "error" not in result, result
        assert result["status"] == "completed"
        # Headers the page may read only because the proxy exposes them.
        assert result["pollAfter"] and result["requestId"].startswith("req_")
        _wait(
            lambda: browser.execute_script(
                "const v = document.getElementById('v'); return v.readyState >= 2 && v.currentTime > 0"
            ),
            what="signed video playing",
        )
        _wait(
            lambda: browser.execute_script(
                "return document.getElementById('poster').naturalWidth > 0"
            ),
            what="signed poster",
        )
        # The signed URL works with no header at all, and a changed one does not.
        assert requests.get(result["videoUrl"], timeout=10).status_code == 200
        assert requests.get(result["videoUrl"][:-3] + "xyz", timeout=10).status_code == 403

        # A page on an origin the proxy does not list is refused by the browser.
        with served(Flask("elsewhere")) as other:
            browser.get(f"{other}/nothing-here")
            refused = browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(arguments[0], {headers: {Authorization: 'Bearer ' + arguments[1]}})"
                ".then(() => done('fetched'), (error) => done(String(error)));",
                f"{stack.url}/v1/videos/{video_id}",
                ALICE,
            )
        assert refused.startswith("TypeError")
        assert json.dumps(result).count(ALICE) == 0
