"""Limits and budgets per caller, on one host (SQLite store, the tracker in this process).

The proxy runs on a real socket in front of the OpenAI simulator, which records what it
received: every refusal is checked to have sent nothing upstream, and every settlement to use
what the upstream finally said.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from servers import served

from sora_proxy import CallerLimits, ConfigError, SoraProxy, create_app
from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.state import FailureSpec
from sora_proxy.simulator.views import FAIL_MARKER
from sora_proxy.store.ledger import Cap

ALICE, BOB = "sk-alice-budget-7f1e", "sk-bob-budget-2c9a"
UPSTREAM_KEY = "sk-upstream-budget-91d0"
PRICES = {"currency": "usd", "models": {"sora-2": {"720x1280": 0.10, "*": 0.30}}}


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(api_key=UPSTREAM_KEY, seconds_per_step=0.15) as server:
        yield server


def _config(sim: SimulatorServer, tmp_path: Path, limits: Any, **extra: Any) -> dict[str, Any]:
    return {
        "SORA_PROXY_UPSTREAM_URL": sim.base_url,
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
        "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
        "SORA_PROXY_POLL_INTERVAL": "0.2",
        "SORA_PROXY_ARCHIVE": "false",
        "SORA_PROXY_LIMITS": json.dumps(limits),
        "SORA_PROXY_PRICES": json.dumps(PRICES),
        **extra,
    }


@contextmanager
def proxy(sim: SimulatorServer, tmp_path: Path, limits: Any, **extra: Any) -> Iterator[str]:
    with served(create_app(_config(sim, tmp_path, limits, **extra))) as url:
        yield url


def create(url: str, key: str = ALICE, **body: Any) -> requests.Response:
    fields = {"model": "sora-2", "prompt": "a lighthouse", "seconds": "8", "size": "720x1280"}
    fields.update(body)
    return requests.post(
        f"{url}/v1/videos",
        json=fields,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def usage(url: str, key: str = ALICE) -> dict[str, Any]:
    answer = requests.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_usage(url: str, check: Callable[[dict[str, Any]], bool], key: str = ALICE) -> dict:
    deadline = time.monotonic() + 20
    while True:
        seen = usage(url, key)
        if check(seen):
            return seen
        assert time.monotonic() < deadline, f"usage never got there: {seen}"
        time.sleep(0.1)


def creates_sent(sim: SimulatorServer) -> int:
    return sum(1 for r in sim.state.requests if r.method == "POST" and r.path == "/v1/videos")


def day(seen: dict[str, Any]) -> dict[str, Any]:
    return dict(seen["periods"]["day"])


def hold_forever(sim: SimulatorServer, video_id: str) -> None:
    """Keep the simulator's job unfinished (its clock starts far in the future)."""
    sim.state.videos[video_id]["_started"] = time.time() + 10**6


def test_concurrency_cap_refuses_before_anything_is_sent(sim, tmp_path):
    with proxy(sim, tmp_path, {"*": {"concurrent": 2}}) as url:
        first, second = create(url), create(url)
        assert first.status_code == second.status_code == 200
        for answer in (first, second):
            hold_forever(sim, answer.json()["id"])
        refused = create(url)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["type"] == "requests"
        assert int(refused.headers["Retry-After"]) >= 1
        assert creates_sent(sim) == 2
        assert create(url, key=BOB).status_code == 200  # another caller has its own cap
        sim.state.complete(first.json()["id"])
        wait_usage(url, lambda seen: seen["unfinished"] == 1)
        assert create(url).status_code == 200
        assert creates_sent(sim) == 4


def test_rate_per_minute_is_counted_by_the_limits_library(sim, tmp_path):
    with proxy(sim, tmp_path, {"alice": {"per_minute": 2}}) as url:
        assert [create(url).status_code for _ in range(2)] == [200, 200]
        refused = create(url)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert creates_sent(sim) == 2
        assert create(url, key=BOB).status_code == 200
        assert usage(url)["limits"] == {
            "concurrent": None,
            "per_minute": 2,
            "per_minute_remaining": 0,
        }


def test_a_day_budget_in_seconds_holds_then_a_failure_gives_it_back(sim, tmp_path):
    with proxy(sim, tmp_path, {"*": {"day": {"seconds": 16}}}) as url:
        kept = create(url, prompt=f"this one fails {FAIL_MARKER}")
        assert kept.status_code == 200
        assert create(url).status_code == 200
        refused = create(url, seconds="4")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert refused.json()["error"]["type"] == "insufficient_quota"
        assert refused.headers["x-should-retry"] == "false"
        assert creates_sent(sim) == 2
        seen = day(wait_usage(url, lambda s: day(s)["videos"]["released"] == 1))
        assert seen["videos"]["settled"] == 1
        assert seen["spent"]["seconds"] == 8.0 and seen["held"]["seconds"] == 0.0
        assert seen["remaining"]["seconds"] == 8.0
        assert create(url).status_code == 200  # what the failure held is free again


def test_completion_settles_the_upstreams_real_seconds_and_price(sim, tmp_path):
    with proxy(sim, tmp_path, {"*": {"month": {"cost": 100}}}) as url:
        answer = create(url, seconds="8")
        video_id = answer.json()["id"]
        seen = day(usage(url))
        assert seen["held"] == {"seconds": 8.0, "cost": 0.8}
        sim.state.videos[video_id]["seconds"] = "5"  # the model made another length
        seen = wait_usage(url, lambda s: day(s)["videos"]["settled"] == 1)
        for period in ("day", "month"):
            assert seen["periods"][period]["spent"] == {"seconds": 5.0, "cost": 0.5}
            assert seen["periods"][period]["held"] == {"seconds": 0.0, "cost": 0.0}
        assert seen["periods"]["month"]["remaining"]["cost"] == 99.5
        assert seen["periods"]["day"]["by_model"]["sora-2"]["spent"]["seconds"] == 5.0
        other = create(url, size="1280x720", seconds="4")  # another size tier: 0.30 a second
        assert day(usage(url))["held"]["cost"] == pytest.approx(1.2)
        assert other.status_code == 200


def test_an_extension_settles_what_it_added_not_the_stitched_total(sim, tmp_path):
    with proxy(sim, tmp_path, {"*": {"day": {"seconds": 100}}}) as url:
        source = create(url, seconds="8").json()["id"]
        wait_usage(url, lambda s: day(s)["videos"]["settled"] == 1)
        extended = requests.post(
            f"{url}/v1/videos/extensions",
            json={"video": {"id": source}, "prompt": "and then", "seconds": "4"},
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=30,
        )
        assert extended.status_code == 200, extended.text
        assert extended.json()["seconds"] == "12"  # the upstream's stitched total
        assert day(usage(url))["held"]["seconds"] == 4.0
        seen = day(wait_usage(url, lambda s: day(s)["videos"]["settled"] == 2))
        assert seen["spent"]["seconds"] == 12.0  # 8 + 4, not 8 + 12


def test_refusal_timeout_and_uncertain_answers(sim, tmp_path):
    limits = {"*": {"day": {"seconds": 100}}}
    with proxy(sim, tmp_path, limits, SORA_PROXY_JOB_TIMEOUT="1.5") as url:
        sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos", method="POST", status=400))
        assert create(url).status_code == 400  # the upstream refused: released at once
        seen = day(usage(url))
        assert seen["videos"] == {"settled": 0, "released": 1, "unfinished": 0}
        stuck = create(url).json()["id"]
        hold_forever(sim, stuck)
        seen = day(wait_usage(url, lambda s: day(s)["videos"]["released"] == 2))
        assert seen["spent"]["seconds"] == 0 and seen["held"]["seconds"] == 0
        retrieved = requests.get(
            f"{url}/v1/videos/{stuck}", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10
        )
        assert retrieved.json()["error"]["code"] == "timeout"


def test_a_timeout_after_sending_counts_the_estimate(sim, tmp_path):
    limits = {"*": {"day": {"seconds": 100}}}
    with proxy(sim, tmp_path, limits, SORA_PROXY_READ_TIMEOUT="0.5") as url:
        sim.state.fail_next.append(FailureSpec(path_prefix="/v1/videos", method="POST", delay=1.5))
        answer = create(url)
        assert answer.status_code == 504 and answer.headers["x-should-retry"] == "false"
        seen = day(usage(url))  # the upstream may have started it: counted, not released
        assert seen["spent"]["seconds"] == 8.0 and seen["videos"]["settled"] == 1


def test_deleting_an_unfinished_video_counts_its_estimate(sim, tmp_path):
    with proxy(sim, tmp_path, {"*": {"concurrent": 1}}) as url:
        video_id = create(url).json()["id"]
        hold_forever(sim, video_id)
        gone = requests.delete(
            f"{url}/v1/videos/{video_id}", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10
        )
        assert gone.status_code == 200
        seen = usage(url)
        assert seen["unfinished"] == 0 and day(seen)["spent"]["seconds"] == 8.0
        assert create(url).status_code == 200


def test_an_idempotent_replay_is_not_charged_twice(sim, tmp_path):
    with proxy(sim, tmp_path, {"*": {"concurrent": 1}}) as url:
        headers = {"Authorization": f"Bearer {ALICE}", "Idempotency-Key": "once-only"}
        body = {"model": "sora-2", "prompt": "a fox", "seconds": "8", "size": "720x1280"}
        first = requests.post(f"{url}/v1/videos", json=body, headers=headers, timeout=30)
        again = requests.post(f"{url}/v1/videos", json=body, headers=headers, timeout=30)
        assert first.status_code == again.status_code == 200
        assert first.json()["id"] == again.json()["id"]
        assert creates_sent(sim) == 1
        assert day(usage(url))["videos"]["unfinished"] == 1


def test_the_sdk_gets_a_rate_limit_error_and_does_not_retry_a_spent_budget(sim, tmp_path):
    limits = {"*": {"day": {"seconds": 4}}}
    with proxy(sim, tmp_path, limits, SORA_PROXY_METRICS="true") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=ALICE, max_retries=2)
        with pytest.raises(openai.RateLimitError) as raised:
            client.videos.create(model="sora-2", prompt="a fox", seconds="8", size="720x1280")
        assert raised.value.code == "insufficient_quota"
        assert creates_sent(sim) == 0
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        line = 'sora_proxy_limit_refusals_total{caller="alice",reason="budget"} 1.0'
        assert line in metrics  # one request: the SDK did not retry it
        client.videos.create(model="sora-2", prompt="a fox", seconds="4", size="720x1280")
        wait_usage(url, lambda s: day(s)["videos"]["settled"] == 1)
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'sora_proxy_spent_video_seconds_total{caller="alice",model="sora-2"} 4.0' in metrics
        assert 'sora_proxy_budget_holds_total{caller="alice",outcome="settled"} 1.0' in metrics


def test_usage_shows_limits_periods_and_nothing_for_another_caller(sim, tmp_path):
    limits = {"*": {"day": {"seconds": 60, "cost": 10}}, "bob": {"day": None, "concurrent": 3}}
    with proxy(sim, tmp_path, limits) as url:
        create(url)
        seen = usage(url)
        assert seen["object"] == "usage" and seen["caller"] == "alice"
        assert seen["currency"] == "usd"
        today = day(seen)
        assert today["limit"] == {"seconds": 60.0, "cost": 10.0}
        assert today["held"] == {"seconds": 8.0, "cost": 0.8}
        assert today["remaining"] == {"seconds": 52.0, "cost": 9.2}
        assert today["ends_at"] - today["starts_at"] == 86400
        bobs = usage(url, BOB)
        assert bobs["limits"]["concurrent"] == 3
        assert day(bobs)["limit"] is None and day(bobs)["held"]["seconds"] == 0.0
        anonymous = requests.get(f"{url}/v1/usage", timeout=10)
        assert anonymous.status_code == 401
        assert UPSTREAM_KEY not in json.dumps(seen)


def test_limits_from_the_keys_file_and_the_host_apps_callback(sim, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE} concurrent=1 day_seconds=30\nbob:{BOB}\n")
    config = _config(sim, tmp_path, {"*": {"concurrent": 5}})
    config.pop("SORA_PROXY_API_KEYS")
    config["SORA_PROXY_API_KEYS_FILE"] = str(keys)
    with served(create_app(config)) as url:
        assert usage(url)["limits"]["concurrent"] == 1
        assert day(usage(url))["limit"]["seconds"] == 30.0
        assert usage(url, BOB)["limits"]["concurrent"] == 5

    from flask import Flask

    host = Flask("host")
    host.config.update(config)
    SoraProxy(host, limits_for=lambda caller: CallerLimits(concurrent=7, day=Cap(ms=9000)))
    with served(host) as url:
        assert usage(url)["limits"]["concurrent"] == 7
        refused = create(url, seconds="12")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"


@pytest.mark.parametrize(
    ("limits", "extra", "message"),
    [
        ({"*": {"concurrent": 2}}, {"SORA_PROXY_TRACKER": "off"}, "TRACKER"),
        ({"*": {"day": {"cost": 5}}}, {"SORA_PROXY_PRICES": ""}, "PRICES"),
        ({"*": {"weekly": 5}}, {}, "unknown limit"),
        ({"*": {"concurrent": 0}}, {}, "1 or more"),
        ({"*": {"day": {"minutes": 5}}}, {}, "seconds"),
        ("not json", {}, "not valid JSON"),
    ],
)
def test_bad_limits_stop_start_up_naming_the_key(sim, tmp_path, limits, extra, message):
    config = _config(sim, tmp_path, limits, **extra)
    if isinstance(limits, str):
        config["SORA_PROXY_LIMITS"] = limits
    with pytest.raises(ConfigError) as raised:
        create_app(config)
    assert "SORA_PROXY_LIMITS" in str(raised.value) and message in str(raised.value)


def test_pass_through_callers_spend_their_own_keys_unlimited(sim, tmp_path):
    config = {
        "SORA_PROXY_UPSTREAM_URL": sim.base_url,
        "SORA_PROXY_LIMITS": json.dumps({"*": {"per_minute": 1}}),
    }
    with served(create_app(config)) as url:  # no upstream key: each caller's own goes upstream
        answers = [create(url, key=UPSTREAM_KEY).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    assert creates_sent(sim) == 3
