"""The store under real deployment: two gunicorns sharing Redis, and a store that is down."""

from __future__ import annotations

import time
import uuid

import requests
from conftest import UPSTREAM_KEY
from servers import Gunicorn

from sora_proxy import create_app
from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.media import load as load_asset

MP4, _, _ = load_asset("video")
KEY = "sk-shared-caller-93d1"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_two_gunicorns_sharing_redis_serve_one_callers_videos(tmp_path, redis_server):
    settings = {
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": f"carol:{KEY},dave:sk-dave",
        "SORA_PROXY_STORE_URL": redis_server.url,
        "SORA_PROXY_STORE_PREFIX": f"d{uuid.uuid4().hex[:8]}:",
    }
    with SimulatorServer(seconds_per_step=0.05) as sim:
        settings["SORA_PROXY_UPSTREAM_URL"] = sim.base_url
        one = Gunicorn(settings, tmp_path / "one.log", workers=1)
        two = Gunicorn(settings, tmp_path / "two.log", workers=1)
        try:
            created = requests.post(
                f"{one.url}/v1/videos", json={"prompt": "p"}, headers=AUTH, timeout=10
            )
            video_id = created.json()["id"]
            sim.state.complete(video_id)
            # Instance one's tracker sees it end; instance two answers from the shared store.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                retrieved = requests.get(
                    f"{two.url}/v1/videos/{video_id}", headers=AUTH, timeout=10
                )
                if retrieved.json().get("status") == "completed":
                    break
                time.sleep(0.2)
            assert retrieved.status_code == 200 and retrieved.json()["status"] == "completed"
            listed = requests.get(f"{two.url}/v1/videos", headers=AUTH, timeout=10).json()
            assert [video["id"] for video in listed["data"]] == [video_id]
            content = requests.get(
                f"{two.url}/v1/videos/{video_id}/content", headers=AUTH, timeout=10
            )
            assert content.content == MP4
            other = requests.get(
                f"{one.url}/v1/videos/{video_id}",
                headers={"Authorization": "Bearer sk-dave"},
                timeout=10,
            )
            assert other.status_code == 404
            assert (
                requests.delete(
                    f"{two.url}/v1/videos/{video_id}", headers=AUTH, timeout=10
                ).status_code
                == 200
            )
            assert (
                requests.get(
                    f"{one.url}/v1/videos/{video_id}", headers=AUTH, timeout=10
                ).status_code
                == 404
            )
        finally:
            logs = one.stop() + two.stop()
        for secret in (KEY, UPSTREAM_KEY, "sk-dave"):
            assert secret not in logs


def test_store_down_is_503_and_nothing_is_served(upstream, tmp_path):
    from redis_server import RedisServer

    with RedisServer() as redis:
        app = create_app(
            {
                "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
                "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
                "SORA_PROXY_API_KEYS": f"erin:{KEY}",
                "SORA_PROXY_STORE_URL": redis.url,
            }
        )
        client = app.test_client()
        video_id = client.post("/v1/videos", json={"prompt": "p"}, headers=AUTH).get_json()["id"]
        upstream.state.complete(video_id)
        redis.stop()
        upstream.state.clear_requests()
        for response in (
            client.get(f"/v1/videos/{video_id}", headers=AUTH),
            client.get(f"/v1/videos/{video_id}/content", headers=AUTH),
            client.delete(f"/v1/videos/{video_id}", headers=AUTH),
            client.get("/v1/videos", headers=AUTH),
            client.post(f"/v1/videos/{video_id}/remix", json={"prompt": "x"}, headers=AUTH),
            client.post(
                "/v1/videos", json={"prompt": "p"}, headers={**AUTH, "Idempotency-Key": "k"}
            ),
        ):
            assert response.status_code == 503, response.get_data(as_text=True)
            error = response.get_json()["error"]
            assert error["code"] == "service_unavailable" and error["type"] == "server_error"
        # Nothing that needed the store reached the upstream.
        assert upstream.state.requests == []
        redis.start()
        assert client.get(f"/v1/videos/{video_id}", headers=AUTH).status_code == 200


def test_sqlite_store_unwritable_is_503(upstream, tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    app = create_app(
        {
            "SORA_PROXY_UPSTREAM_URL": upstream.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": f"erin:{KEY}",
            "SORA_PROXY_STORE_URL": f"sqlite:///{store_dir}/s.db",
        }
    )
    client = app.test_client()
    assert client.get("/v1/videos", headers=AUTH).status_code == 200
    import shutil

    shutil.rmtree(store_dir)
    (tmp_path / "store").write_text("not a directory any more")
    app.extensions["sora_proxy"].records.store.close()
    response = client.get("/v1/videos", headers=AUTH)
    assert response.status_code == 503
