"""Where webhooks go and who runs the tracker: the keys file, ``SORA_PROXY_WEBHOOKS``, a host
app's ``webhook_for``, ``sora-proxy tracker`` beside web workers that do not track, and the
settings' refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from flask import Flask
from servers import REPO, Gunicorn, served
from webhook_receiver import WebhookReceiver, new_secret

from sora_proxy import ConfigError, SoraProxy, WebhookEndpoint, create_app
from sora_proxy.simulator import SimulatorServer

UPSTREAM_KEY = "sk-upstream-config-91"


def _upstream(tmp_path: Path, sim: SimulatorServer) -> Path:
    path = tmp_path / "upstreams.toml"
    path.write_text(
        f'[[upstream]]\nname = "openai"\nbase_url = "{sim.base_url}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n[upstream.models."sora-2"]\n'
    )
    return path


def _common(tmp_path: Path, sim: SimulatorServer) -> dict[str, str]:
    return {
        "SORA_PROXY_UPSTREAMS_FILE": str(_upstream(tmp_path, sim)),
        "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
        "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
        "SORA_PROXY_ARCHIVE_URL": f"file://{tmp_path}/archive",
        "SORA_PROXY_POLL_INTERVAL": "0.2",
        "SORA_PROXY_WEBHOOK_ALLOW_PRIVATE": "true",
    }


def _create(url: str, key: str) -> str:
    answer = requests.post(
        f"{url}/v1/videos",
        json={"model": "sora-2", "prompt": "a fox", "seconds": "4"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def test_each_caller_gets_events_at_the_endpoint_the_keys_file_or_settings_name(
    tmp_path: Path,
) -> None:
    with (
        WebhookReceiver() as alice_hooks,
        WebhookReceiver() as bob_hooks,
        SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.1) as sim,
    ):
        keys = tmp_path / "keys"
        keys.write_text(
            "# caller keys\n"
            f"alice:sk-alice-1 webhook_url={alice_hooks.url} webhook_secret={alice_hooks.secret}\n"
            "carol:sk-carol-1\n"
        )
        proxy = create_app(
            {
                **_common(tmp_path, sim),
                "SORA_PROXY_API_KEYS_FILE": str(keys),
                "SORA_PROXY_API_KEYS": "bob:sk-bob-1",
                "SORA_PROXY_WEBHOOKS": (
                    f'{{"bob": {{"url": "{bob_hooks.url}", "secret": "{bob_hooks.secret}"}}}}'
                ),
            }
        )
        with served(proxy) as url:
            alice_video = _create(url, "sk-alice-1")
            bob_video = _create(url, "sk-bob-1")
            carol_video = _create(url, "sk-carol-1")
            (alice_event,) = alice_hooks.wait_for(1, timeout=20).values()
            (bob_event,) = bob_hooks.wait_for(1, timeout=20).values()
            # Carol has no endpoint: her video ends all the same, with no event anywhere.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                carol = requests.get(
                    f"{url}/v1/videos/{carol_video}",
                    headers={"Authorization": "Bearer sk-carol-1"},
                    timeout=10,
                ).json()
                if carol["status"] == "completed":
                    break
                time.sleep(0.1)
            assert carol["status"] == "completed"
            proxy.extensions["sora_proxy"].tracker.stop()
        assert alice_event["data"]["id"] == alice_video
        assert bob_event["data"]["id"] == bob_video
        seen = [d.event["data"]["id"] for d in alice_hooks.deliveries + bob_hooks.deliveries]
        assert carol_video not in seen


def test_a_host_app_names_endpoints_from_its_own_callback(tmp_path: Path) -> None:
    with (
        WebhookReceiver() as hooks,
        SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.1) as sim,
    ):
        app = Flask("host")
        app.config.update(_common(tmp_path, sim))
        asked: list[str] = []

        def webhook_for(caller: str) -> WebhookEndpoint | None:
            asked.append(caller)
            return WebhookEndpoint(hooks.url, hooks.secret) if caller == "user-7" else None

        SoraProxy(
            app,
            authenticate=lambda request: request.headers.get("X-User"),
            webhook_for=webhook_for,
        )
        with served(app) as url:
            answer = requests.post(
                f"{url}/v1/videos",
                json={"model": "sora-2", "prompt": "a heron", "seconds": "4"},
                headers={"X-User": "user-7"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            (event,) = hooks.wait_for(1, timeout=20).values()
            app.extensions["sora_proxy"].tracker.stop()
        assert event["data"]["id"] == answer.json()["id"]
        assert event["type"] == "video.completed"
        assert "user-7" in asked


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"SORA_PROXY_WEBHOOK_URL": "https://hooks.example/x"}, "SORA_PROXY_WEBHOOK_URL"),
        (
            {"SORA_PROXY_WEBHOOK_URL": "https://hooks.example/x", "SORA_PROXY_WEBHOOK_SECRET": "x"},
            "SORA_PROXY_WEBHOOKS",
        ),
        (
            {
                "SORA_PROXY_WEBHOOK_URL": "ftp://hooks.example/x",
                "SORA_PROXY_WEBHOOK_SECRET": new_secret(),
            },
            "SORA_PROXY_WEBHOOKS",
        ),
        ({"SORA_PROXY_WEBHOOKS": "{not json"}, "SORA_PROXY_WEBHOOKS"),
        ({"SORA_PROXY_WEBHOOKS": '{"a": {"url": "https://h/x"}}'}, "SORA_PROXY_WEBHOOKS"),
        ({"SORA_PROXY_WEBHOOK_RETRY_SCHEDULE": "5,-1"}, "SORA_PROXY_WEBHOOK_RETRY_SCHEDULE"),
        ({"SORA_PROXY_ARCHIVE_MAX_BYTES": "lots"}, "SORA_PROXY_ARCHIVE_MAX_BYTES"),
        ({"SORA_PROXY_ARCHIVE_URL": "ftp://somewhere/archive"}, "SORA_PROXY_ARCHIVE_URL"),
        ({"SORA_PROXY_JOB_TIMEOUT": "0"}, "SORA_PROXY_JOB_TIMEOUT"),
        ({"SORA_PROXY_TRACKER": "sometimes"}, "SORA_PROXY_TRACKER"),
    ],
)
def test_bad_tracker_settings_stop_start_up_naming_the_key(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    config = {
        "SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": "alice:sk-alice-1",
        "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
        **settings,
    }
    with pytest.raises(ConfigError) as raised:
        create_app(config)
    assert str(raised.value).startswith(named)
    secret = settings.get("SORA_PROXY_WEBHOOK_SECRET")
    if secret:
        assert secret not in str(raised.value)


def test_a_keys_file_webhook_needs_both_options(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("alice:sk-alice-1 webhook_url=https://hooks.example/x\n")
    with pytest.raises(ConfigError, match="webhook_url and webhook_secret go together"):
        create_app(
            {
                "SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
                "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
                "SORA_PROXY_API_KEYS_FILE": str(keys),
            }
        )


def test_sora_proxy_tracker_follows_videos_for_web_workers_that_do_not(tmp_path: Path) -> None:
    with (
        WebhookReceiver() as hooks,
        SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.1) as sim,
    ):
        settings = {
            **_common(tmp_path, sim),
            "SORA_PROXY_API_KEYS": "alice:sk-alice-1",
            "SORA_PROXY_WEBHOOK_URL": hooks.url,
            "SORA_PROXY_WEBHOOK_SECRET": hooks.secret,
        }
        web = Gunicorn({**settings, "SORA_PROXY_TRACKER": "external"}, tmp_path / "web.log")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SORA_PROXY_")}
        tracker_log = open(tmp_path / "tracker.log", "wb")  # noqa: SIM115
        tracker = subprocess.Popen(
            [sys.executable, "-m", "sora_proxy.cli", "tracker"],
            cwd=REPO,
            env={**environment, **settings},
            stdout=tracker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            video_id = _create(web.url, "sk-alice-1")
            (event,) = hooks.wait_for(1, timeout=30).values()
            assert event["data"]["id"] == video_id
            archived = tmp_path / "archive" / "videos" / video_id / "video"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not archived.exists():
                time.sleep(0.1)
            assert archived.exists()
        finally:
            tracker.terminate()
            tracker.wait(timeout=20)
            tracker_log.close()
            web_log = web.stop()
        # The web workers never polled: every poll came from the tracker process.
        assert "tracker started" not in web_log
        assert tracker.returncode == 0
        assert "Traceback" not in (tmp_path / "tracker.log").read_text()
