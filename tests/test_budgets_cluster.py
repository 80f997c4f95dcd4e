"""Budgets and limits across processes and hosts: two gunicorn instances (2 workers each) on one
Redis, 50 creates at once per limit. Holds, rates and caps are decided in Redis in one atomic
step, so exactly what fits goes upstream, whichever worker or host takes each request."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from servers import Gunicorn

from sora_proxy.simulator import SimulatorServer

UPSTREAM_KEY = "sk-upstream-budget-cluster"
KEYS = {"budget": "sk-budget-cluster-1", "cap": "sk-cap-cluster-2", "rate": "sk-rate-cluster-3"}
LIMITS = {
    "budget": {"day": {"seconds": 80, "cost": 8}},  # ten 8-second videos at 0.10 a second
    "cap": {"concurrent": 3},
    "rate": {"per_minute": 10},
}


def _create(url: str, key: str, n: int) -> requests.Response:
    return requests.post(
        f"{url}/v1/videos",
        json={"model": "sora-2", "prompt": f"a harbour, take {n}", "seconds": "8"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _race(instances: list[Gunicorn], caller: str) -> list[requests.Response]:
    """50 creates at once by ``caller``, alternating between the instances."""
    with ThreadPoolExecutor(50) as pool:
        return list(pool.map(lambda n: _create(instances[n % 2].url, KEYS[caller], n), range(50)))


def _usage(url: str, caller: str) -> dict[str, Any]:
    answer = requests.get(
        f"{url}/v1/usage", headers={"Authorization": f"Bearer {KEYS[caller]}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _sent(sim: SimulatorServer, prompts: set[str]) -> int:
    return sum(
        1
        for r in sim.state.requests
        if r.method == "POST" and r.path == "/v1/videos" and r.form["prompt"][0] in prompts
    )


def test_fifty_creates_at_once_on_two_instances_spend_exactly_the_budget(
    tmp_path: Path, redis_server
) -> None:
    # A step of an hour: no job finishes unless the test says so.
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=3600) as sim:
        settings = {
            "SORA_PROXY_UPSTREAM_URL": sim.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_API_KEYS": ",".join(f"{name}:{key}" for name, key in KEYS.items()),
            "SORA_PROXY_STORE_URL": redis_server.url,
            "SORA_PROXY_STORE_PREFIX": f"budgets{uuid.uuid4().hex}:",
            "SORA_PROXY_POLL_INTERVAL": "0.3",
            "SORA_PROXY_JOB_TIMEOUT": "20",
            "SORA_PROXY_ARCHIVE": "false",
            "SORA_PROXY_LIMITS": json.dumps(LIMITS),
            "SORA_PROXY_PRICES": json.dumps({"models": {"sora-2": 0.10}}),
        }
        instances = []
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                instances.append(Gunicorn(settings, tmp_path / name / "gunicorn.log"))
            started = time.monotonic()

            # A budget that fits 10: exactly 10 go upstream, 40 are refused.
            answers = _race(instances, "budget")
            statuses = Counter(answer.status_code for answer in answers)
            assert statuses == {200: 10, 429: 40}, statuses
            refused = [a.json()["error"] for a in answers if a.status_code == 429]
            assert {(e["code"], e["type"]) for e in refused} == {
                ("insufficient_quota", "insufficient_quota")
            }
            accepted = [a.json()["id"] for a in answers if a.status_code == 200]
            prompts = {f"a harbour, take {n}" for n in range(50)}
            assert _sent(sim, prompts) == 10
            seen = _usage(instances[0].url, "budget")["periods"]["day"]
            assert seen["held"] == {"seconds": 80.0, "cost": 8.0}
            assert seen["remaining"] == {"seconds": 0.0, "cost": 0.0}

            # 3 fail, 2 never finish (the job timeout ends them), 5 complete: 2 of those with
            # another length than asked, which is what they cost.
            for video_id in accepted[:3]:
                sim.state.videos[video_id]["_fails"] = True
                sim.state.complete(video_id)
            for video_id in accepted[5:]:
                if video_id in accepted[5:7]:
                    sim.state.videos[video_id]["seconds"] = "5"
                sim.state.complete(video_id)

            # A concurrency cap of 3 under the same race (and rates, counted in Redis).
            capped = Counter(a.status_code for a in _race(instances, "cap"))
            assert capped == {200: 3, 429: 47}, capped
            rated = _race(instances, "rate")
            assert Counter(a.status_code for a in rated) == {200: 10, 429: 40}
            assert {a.json()["error"]["code"] for a in rated if a.status_code == 429} == {
                "rate_limit_exceeded"
            }
            assert all(int(a.headers["Retry-After"]) >= 1 for a in rated if a.status_code == 429)

            deadline = started + 60
            while True:
                seen = _usage(instances[1].url, "budget")["periods"]["day"]
                if seen["videos"]["unfinished"] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert seen["videos"] == {"settled": 5, "released": 5, "unfinished": 0}
            assert seen["spent"] == {"seconds": 34.0, "cost": 3.4}  # 3 x 8 + 2 x 5
            assert seen["held"] == {"seconds": 0.0, "cost": 0.0}
            assert seen["by_model"]["sora-2"]["videos"]["settled"] == 5
            statuses_now = [
                requests.get(
                    f"{instances[0].url}/v1/videos/{video_id}",
                    headers={"Authorization": f"Bearer {KEYS['budget']}"},
                    timeout=10,
                ).json()
                for video_id in accepted
            ]
            codes = Counter((v["status"], (v.get("error") or {}).get("code")) for v in statuses_now)
            assert codes[("completed", None)] == 5
            assert codes[("failed", "timeout")] == 2
            assert sum(n for (status, _), n in codes.items() if status == "failed") == 5
        finally:
            logs = [instance.stop() for instance in instances]
    for log in logs:
        assert "Traceback" not in log
        assert UPSTREAM_KEY not in log and not any(key in log for key in KEYS.values())
