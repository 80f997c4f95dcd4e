"""Signed content URLs: minted by a video's owner, fetched with no header at all, as a
``<video src>`` or ``<img src>`` would, with Range, HEAD and ETags as for the owner's own
download; refused (403 in the envelope) once changed, moved to another video or variant, or
expired.

Real sockets throughout: the OpenAI simulator upstream, the proxy on werkzeug's server, the
tracker and archive on (their default).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import openai
import pytest
import requests
from flask import Flask
from itsdangerous import URLSafeSerializer
from servers import served
from werkzeug.middleware.proxy_fix import ProxyFix

from sora_proxy import SoraProxy, create_app
from sora_proxy.archive import open_archive
from sora_proxy.archiving import VARIANTS
from sora_proxy.content_urls import SALT
from sora_proxy.simulator import SimulatorServer

ALICE, BOB = "sk-alice-content-urls", "sk-bob-content-urls"
UPSTREAM_KEY = "sk-upstream-content-urls-51c0"
SIGNING_KEY = "content-url-signing-key-for-tests"


@dataclass
class Stack:
    sim: SimulatorServer
    url: str
    archive_url: str
    instance: Path

    def api(
        self, method: str, path: str, key: str | None = ALICE, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def mint(self, video_id: str, key: str = ALICE, **body: Any) -> requests.Response:
        return self.api("POST", f"/v1/videos/{video_id}/content_url", key, json=body)

    def url_of(self, video_id: str, **body: Any) -> str:
        answer = self.mint(video_id, **body)
        assert answer.status_code == 200, answer.text
        url: str = answer.json()["url"]
        return url

    def create(self, prompt: str = "a kite", key: str = ALICE) -> str:
        answer = self.api("POST", "/v1/videos", key, json={"prompt": prompt, "seconds": "4"})
        assert answer.status_code == 200, answer.text
        video_id: str = answer.json()["id"]
        return video_id

    def completed(self, prompt: str = "a kite", key: str = ALICE) -> str:
        video_id = self.create(prompt, key)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.api("GET", f"/v1/videos/{video_id}", key).json()["status"] == "completed":
                return video_id
            time.sleep(0.05)
        raise AssertionError(f"{video_id} did not complete")

    def wait_archived(self, video_id: str) -> None:
        archive = open_archive(self.archive_url, str(self.instance))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(archive.stat(f"videos/{video_id}/{v}") is not None for v in VARIANTS):
                return
            time.sleep(0.05)
        raise AssertionError(f"{video_id} not archived")

    def content_requests(self) -> list[Any]:
        return [r for r in self.sim.state.requests if r.path.endswith("/content")]


@contextmanager
def _stack(tmp_path: Path, *, step: float = 0.05, **settings: str | None) -> Iterator[Stack]:
    """The proxy with caller keys, a store and the tracker; ``None`` drops a setting."""
    archive_url = f"file://{tmp_path}/archive"
    config: dict[str, Any] = {
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
        "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
        "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
        "SORA_PROXY_ARCHIVE_URL": archive_url,
        "SORA_PROXY_POLL_INTERVAL": "0.2",
        "SORA_PROXY_SIGNING_KEY": SIGNING_KEY,
        **settings,
    }
    config = {name: value for name, value in config.items() if value is not None}
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=step) as sim:
        proxy = create_app({"SORA_PROXY_UPSTREAM_URL": sim.base_url, **config})
        with served(proxy) as url:
            yield Stack(sim, url, archive_url, tmp_path)


def _error(response: requests.Response, status: int, code: str, param: str | None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == param, error
    message: str = error["message"]
    return message


def _sign(payload: Any, key: str = SIGNING_KEY, salt: str = SALT) -> str:
    serializer = URLSafeSerializer(key, salt=salt, signer_kwargs={"digest_method": hashlib.sha256})
    return serializer.dumps(payload)


def _with_token(url: str, token: str) -> str:
    return url.split("token=", 1)[0] + "token=" + token


@pytest.mark.parametrize("source", ["archive", "upstream"])
def test_every_variant_plays_with_no_header_as_the_owner_downloads_it(
    tmp_path: Path, source: str
) -> None:
    settings = {} if source == "archive" else {"SORA_PROXY_ARCHIVE": "false"}
    with _stack(tmp_path, **settings) as stack:
        video_id = stack.completed()
        if source == "archive":
            stack.wait_archived(video_id)
        for variant in VARIANTS:
            upstream_reads = len(stack.content_requests())
            asked = time.time()
            answer = stack.mint(video_id, variant=variant)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert set(body) == {"object", "id", "variant", "url", "expires_at"}
            assert body["object"] == "video.content_url"
            assert (body["id"], body["variant"]) == (video_id, variant)
            assert isinstance(body["expires_at"], int)
            assert asked + 3600 <= body["expires_at"] <= time.time() + 3601  # the default TTL
            url = body["url"]
            parts = urlsplit(url)
            assert url.startswith(f"{stack.url}/v1/videos/{video_id}/content?")
            names = [name for name, _ in parse_qsl(parts.query)]
            assert names == (["token"] if variant == "video" else ["variant", "token"])

            query = "" if variant == "video" else f"?variant={variant}"
            own = stack.api("GET", f"/v1/videos/{video_id}/content{query}")
            assert own.status_code == 200 and len(own.content) > 100

            signed = requests.get(url, timeout=30)
            assert signed.status_code == 200
            assert signed.content == own.content
            for name in ("Content-Type", "ETag", "Accept-Ranges", "Content-Disposition"):
                assert signed.headers[name] == own.headers[name], name

            ranged = requests.get(url, headers={"Range": "bytes=10-99"}, timeout=30)
            assert ranged.status_code == 206 and ranged.content == own.content[10:100]
            assert ranged.headers["Content-Range"] == f"bytes 10-99/{len(own.content)}"

            head = requests.head(url, timeout=30)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["Content-Length"] == str(len(own.content))

            etag = signed.headers["ETag"]
            unchanged = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
            assert unchanged.status_code == 304 and unchanged.content == b""

            reads = stack.content_requests()[upstream_reads:]
            if source == "archive":
                assert reads == []  # all five downloads came from the archive
            else:
                assert len(reads) == 5
                # The token is the proxy's own credential: it never goes upstream.
                assert all("token" not in read.query for read in reads)
                assert all(read.query.get("variant", ["video"]) == [variant] for read in reads)


def test_a_changed_or_moved_token_is_refused(tmp_path: Path) -> None:
    with _stack(tmp_path) as stack:
        video_id, other_id = stack.completed("first"), stack.completed("second")
        url = stack.url_of(video_id)
        thumbnail_url = stack.url_of(video_id, variant="thumbnail")
        token = url.split("token=", 1)[1]
        content = f"{stack.url}/v1/videos/{video_id}/content"

        def refused(target: str, method: str = "GET", **headers: str) -> None:
            answer = requests.request(method, target, headers=headers, timeout=30)
            if method == "HEAD":
                assert answer.status_code == 403 and answer.content == b""
                return
            _error(answer, 403, "invalid_content_url", "token")
            assert answer.json()["error"]["type"] == "invalid_request_error"

        # One character changed, in the payload and in the signature.
        for at in (len(token) // 4, len(token) - 10):
            changed = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
            refused(_with_token(url, changed))
        refused(_with_token(url, changed), "HEAD")
        refused(_with_token(url, ""))
        refused(_with_token(url, "not-a-token"))
        # The same token on another video, or for another variant, either way round.
        refused(f"{stack.url}/v1/videos/{other_id}/content?token={token}")
        refused(f"{content}?variant=thumbnail&token={token}")
        refused(f"{content}?token={thumbnail_url.split('token=', 1)[1]}")
        refused(f"{content}?variant=spritesheet&token={thumbnail_url.split('token=', 1)[1]}")
        # Well-formed payloads signed with another key, or for another purpose (salt).
        payload = {"v": video_id, "c": "alice", "var": "video", "exp": int(time.time()) + 600}
        refused(f"{content}?token={_sign(payload, key='some-other-key')}")
        refused(f"{content}?token={_sign(payload, salt='itsdangerous')}")
        # Signed with the right key but not a grant the proxy made.
        for bad in ([video_id], {**payload, "exp": "soon"}, {**payload, "c": 7}, {"v": video_id}):
            refused(f"{content}?token={_sign(bad)}")

        # The token alone decides: a valid one works beside someone else's key, a bad one
        # fails beside the owner's own.
        with_bob = requests.get(url, headers={"Authorization": f"Bearer {BOB}"}, timeout=30)
        assert with_bob.status_code == 200 and with_bob.content
        refused(_with_token(url, "x" + token), Authorization=f"Bearer {ALICE}")
        # And the original still works.
        assert requests.get(url, timeout=30).status_code == 200


def test_ownership_still_decides(tmp_path: Path) -> None:
    with _stack(tmp_path) as stack:
        video_id = stack.completed()
        mine = stack.url_of(video_id)
        # Bob cannot have a URL to Alice's video: the same 404 as for an id that does not exist.
        foreign = _error(stack.mint(video_id, BOB), 404, "video_not_found", "video_id")
        unknown = _error(stack.mint("video_nope", BOB), 404, "video_not_found", "video_id")
        assert foreign.replace(video_id, "X") == unknown.replace("video_nope", "X")
        _error(stack.mint(video_id, key="sk-nobody"), 401, "invalid_api_key", None)
        assert stack.api("POST", f"/v1/videos/{video_id}/content_url", None).status_code == 401
        # A genuine signature naming Bob grants Bob's view of the video: none.
        as_bob = {"v": video_id, "c": "bob", "var": "video", "exp": int(time.time()) + 600}
        answer = requests.get(f"{_with_token(mine, _sign(as_bob))}", timeout=30)
        _error(answer, 404, "video_not_found", "video_id")
        # Deleted: the URL handed out before is a 404 at once, long before it expires.
        assert requests.get(mine, timeout=30).status_code == 200
        assert stack.api("DELETE", f"/v1/videos/{video_id}").status_code == 200
        _error(requests.get(mine, timeout=30), 404, "video_not_found", "video_id")


def test_an_expired_url_is_refused(tmp_path: Path) -> None:
    with _stack(
        tmp_path, SORA_PROXY_CONTENT_URL_TTL="1", SORA_PROXY_CONTENT_URL_MAX_TTL="2"
    ) as stack:
        video_id = stack.completed()
        short = stack.mint(video_id).json()  # the default life: 1 s here
        explicit = stack.mint(video_id, variant="thumbnail", expires_in=1).json()
        assert requests.get(short["url"], timeout=30).status_code == 200
        _error(stack.mint(video_id, expires_in=3), 400, None, "expires_in")
        time.sleep(max(0.0, max(short["expires_at"], explicit["expires_at"]) - time.time()) + 0.1)
        for url in (short["url"], explicit["url"]):
            message = _error(requests.get(url, timeout=30), 403, "content_url_expired", "token")
            assert "expired" in message
            assert requests.head(url, timeout=30).status_code == 403


def test_the_request_body_is_checked(tmp_path: Path) -> None:
    with _stack(tmp_path) as stack:
        video_id = stack.completed()
        path = f"/v1/videos/{video_id}/content_url"
        for variant in ("poster", "", None, 3, ["video"]):
            _error(stack.mint(video_id, variant=variant), 400, None, "variant")
        for expires_in in (0, -5, "60", True, None, 86401, 1e9):
            _error(stack.mint(video_id, expires_in=expires_in), 400, None, "expires_in")
        assert stack.mint(video_id, expires_in=86400).status_code == 200
        assert stack.mint(video_id, expires_in=0.5).status_code == 200
        bad_json = stack.api("POST", path, data=b"{", headers={"Content-Type": "application/json"})
        _error(bad_json, 400, "invalid_json", None)
        _error(stack.api("POST", path, json=["video"]), 400, "invalid_json", None)
        # No body at all (what requests and the SDKs send for a bare POST): the defaults.
        bare = stack.api("POST", path)
        assert bare.status_code == 200 and bare.json()["variant"] == "video"
        # Only POST: the route's other methods are the usual 405 with Allow.
        not_allowed = stack.api("GET", path)
        assert not_allowed.status_code == 405 and not_allowed.headers["Allow"] == "POST, OPTIONS"


def test_a_video_not_yet_completed_gets_no_url(tmp_path: Path) -> None:
    with _stack(tmp_path, step=3600) as stack:
        video_id = stack.create()
        message = _error(stack.mint(video_id), 409, "video_not_ready", "video_id")
        assert "queued" in message or "in_progress" in message


def test_without_a_signing_key_the_answer_says_which_to_set(tmp_path: Path) -> None:
    with _stack(tmp_path, SORA_PROXY_SIGNING_KEY=None) as stack:
        video_id = stack.completed()
        answer = stack.mint(video_id)
        message = _error(answer, 503, "signing_key_missing", None)
        assert "SORA_PROXY_SIGNING_KEY" in message and "SECRET_KEY" in message
        assert answer.headers["x-should-retry"] == "false"
        assert answer.json()["error"]["type"] == "server_error"
        # Nor can any token be checked.
        payload = {"v": video_id, "c": "alice", "var": "video", "exp": int(time.time()) + 60}
        token_url = f"{stack.url}/v1/videos/{video_id}/content?token={_sign(payload)}"
        _error(requests.get(token_url, timeout=30), 503, "signing_key_missing", None)


def test_pass_through_mode_cannot_sign(tmp_path: Path) -> None:
    """The upstream checks each caller's own key there, which no URL can carry."""
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.05) as sim:
        proxy = create_app(
            {"SORA_PROXY_UPSTREAM_URL": sim.base_url, "SORA_PROXY_SIGNING_KEY": SIGNING_KEY}
        )
        with served(proxy) as url:
            headers = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
            video = requests.post(f"{url}/v1/videos", json={"prompt": "p"}, headers=headers)
            answer = requests.post(
                f"{url}/v1/videos/{video.json()['id']}/content_url", headers=headers, timeout=30
            )
            _error(answer, 503, "content_urls_unavailable", None)
            assert answer.headers["x-should-retry"] == "false"


def test_the_token_is_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sora_proxy")
    with _stack(tmp_path) as stack:
        video_id = stack.completed()
        url = stack.url_of(video_id)
        token = url.split("token=", 1)[1]
        assert requests.get(url, timeout=30).status_code == 200
        assert requests.get(_with_token(url, token[:-4]), timeout=30).status_code == 403
        deadline = time.monotonic() + 5
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = [
                r.getMessage()
                for r in caplog.records
                if r.name == "sora_proxy.access"
                and '"route":"/v1/videos/<video_id>/content"' in r.getMessage()
            ]
            if len(lines) >= 2:  # a streamed download is logged once its last byte went
                break
            time.sleep(0.05)
        assert len(lines) == 2
        assert all(f'"path":"/v1/videos/{video_id}/content"' in line for line in lines)
        granted, refused = sorted(lines, key=lambda line: '"status":403' in line)
        assert '"caller":"alice"' in granted
        # A refused token names nobody: its claim was not believed.
        assert '"caller":null' in refused and '"error_code":"invalid_content_url"' in refused
        ours = [r.getMessage() for r in caplog.records if r.name.startswith("sora_proxy")]
        assert ours and not any(token[:40] in line for line in ours)
        assert not any(token[:40] in str(r.query) for r in stack.sim.state.requests)


def test_a_host_app_signs_with_its_secret_key_under_its_prefix_and_proxy_fix(
    tmp_path: Path,
) -> None:
    """The host app's ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS`` for rotation), its own
    login, its mount point, and the external URL its ProxyFix sees."""
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.05) as sim:
        host = Flask("host")
        host.config.update(
            SECRET_KEY="host-secret-one",
            SORA_PROXY_UPSTREAM_URL=sim.base_url,
            SORA_PROXY_UPSTREAM_API_KEY=UPSTREAM_KEY,
            SORA_PROXY_URL_PREFIX="/ai",
            SORA_PROXY_STORE_URL=f"sqlite:///{tmp_path}/store.sqlite3",
            SORA_PROXY_SPOOL_DIR=str(tmp_path / "spool"),
            SORA_PROXY_ARCHIVE_URL=f"file://{tmp_path}/archive",
            SORA_PROXY_POLL_INTERVAL="0.2",
        )
        SoraProxy(host, authenticate=lambda request: request.headers.get("X-User"))
        host.wsgi_app = ProxyFix(host.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
        with served(host) as url:
            alice = {"X-User": "alice"}
            video_id = requests.post(
                f"{url}/ai/v1/videos", json={"prompt": "p"}, headers=alice, timeout=30
            ).json()["id"]
            deadline = time.monotonic() + 20
            while (
                requests.get(f"{url}/ai/v1/videos/{video_id}", headers=alice).json()["status"]
                != "completed"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            forwarded = {
                **alice,
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "videos.example",
            }
            minted = requests.post(
                f"{url}/ai/v1/videos/{video_id}/content_url", headers=forwarded, timeout=30
            ).json()["url"]
            assert minted.startswith(f"https://videos.example/ai/v1/videos/{video_id}/content?")
            signed = minted.replace("https://videos.example", url)
            own = requests.get(f"{url}/ai/v1/videos/{video_id}/content", headers=alice)
            assert requests.get(signed, timeout=30).content == own.content
            # Bob (another login of the host app) cannot have one.
            bob = requests.post(
                f"{url}/ai/v1/videos/{video_id}/content_url", headers={"X-User": "bob"}
            )
            _error(bob, 404, "video_not_found", "video_id")

            # A new SECRET_KEY with the old one among its fallbacks keeps the URL working...
            host.config.update(
                SECRET_KEY="host-secret-two", SECRET_KEY_FALLBACKS=["host-secret-one"]
            )
            assert requests.get(signed, timeout=30).status_code == 200
            # ...and without it, the URL is void.
            host.config.update(SECRET_KEY_FALLBACKS=[])
            _error(requests.get(signed, timeout=30), 403, "invalid_content_url", "token")


def test_an_sdk_style_client_flow(tmp_path: Path) -> None:
    """What a back end does for its page: create, poll as told, ask for a URL (no body), and
    hand it to a client that has no key."""
    with _stack(tmp_path) as stack:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {ALICE}"
        created = session.post(f"{stack.url}/v1/videos", json={"prompt": "a comet"}, timeout=30)
        video = created.json()
        while video["status"] != "completed":
            time.sleep(int(created.headers.get("openai-poll-after-ms", "200")) / 1000)
            created = session.get(f"{stack.url}/v1/videos/{video['id']}", timeout=30)
            video = created.json()
        granted = session.post(f"{stack.url}/v1/videos/{video['id']}/content_url", timeout=30)
        assert granted.status_code == 200
        owner_bytes = session.get(f"{stack.url}/v1/videos/{video['id']}/content").content

        with requests.get(granted.json()["url"], stream=True, timeout=30) as anonymous:
            assert anonymous.status_code == 200
            assert anonymous.headers["Content-Type"] == "video/mp4"
            assert b"".join(anonymous.iter_content(1024)) == owner_bytes

        # The official SDK can ask too, through its generic POST.
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=ALICE, max_retries=0)
        answer = client.post(
            f"/videos/{video['id']}/content_url", body={"variant": "thumbnail"}, cast_to=object
        )
        assert isinstance(answer, dict) and answer["variant"] == "thumbnail"
        assert requests.get(answer["url"], timeout=30).headers["Content-Type"] == "image/webp"
        # Its errors are the SDK's usual exceptions.
        with pytest.raises(openai.NotFoundError):
            openai.OpenAI(base_url=f"{stack.url}/v1", api_key=BOB, max_retries=0).post(
                f"/videos/{video['id']}/content_url", cast_to=object
            )
