"""Following videos to their end across processes: two gunicorn instances x 2 workers on one
Redis, N videos on two dialects (the OpenAI simulator and xAI's), no client polling.

Prints a markdown table: how long after its upstream job finished each video's webhook event
arrived (verified with the official openai SDK), polls per video, polls that overlapped
another poll of the same video (must be 0), deliveries per event, archive copies per video.

    .venv/bin/python bench/tracker.py [--videos 50] [--step 0.5] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from redis_server import RedisServer  # noqa: E402
from servers import Gunicorn  # noqa: E402
from webhook_receiver import WebhookReceiver  # noqa: E402

from sora_proxy.simulator import SimulatorServer  # noqa: E402
from sora_proxy.simulator.gateways.results import create_result_host_app  # noqa: E402
from sora_proxy.simulator.xai import create_xai_app  # noqa: E402

ALICE, OPENAI_KEY, XAI_KEY = "sk-bench-alice", "sk-bench-openai", "xai-bench-key"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _overlapping(recorded: list) -> int:
    by_path = defaultdict(list)
    for seen in recorded:
        if seen.method == "GET" and "/content" not in seen.path:
            by_path[seen.path].append(seen)
    count = 0
    for polls in by_path.values():
        polls.sort(key=lambda r: r.received_at)
        for first, second in itertools.pairwise(polls):
            if first.answered_at is None or first.answered_at > second.received_at:
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--step", type=float, default=0.5, help="simulator seconds per stage")
    parser.add_argument("--interval", type=float, default=1.0, help="SORA_PROXY_POLL_INTERVAL")
    args = parser.parse_args()
    with (
        TemporaryDirectory() as folder,
        RedisServer() as redis,
        WebhookReceiver() as receiver,
        SimulatorServer(api_key=OPENAI_KEY, seconds_per_step=args.step) as openai_sim,
        SimulatorServer(app=create_result_host_app()) as results,
    ):
        xai_app = create_xai_app(
            api_key=XAI_KEY,
            seconds_per_step=args.step,
            result_base_url=results.base_url.removesuffix("/v1"),
        )
        with SimulatorServer(app=xai_app) as xai_sim:
            tmp = Path(folder)
            upstreams = tmp / "upstreams.toml"
            upstreams.write_text(
                f'[[upstream]]\nname = "openai"\nbase_url = "{openai_sim.base_url}"\n'
                f'api_key = "{OPENAI_KEY}"\n[upstream.models."sora-2"]\n\n'
                f'[[upstream]]\nname = "xai"\nbase_url = "{xai_sim.base_url}"\ndialect = "xai"\n'
                f'api_key = "{XAI_KEY}"\n[upstream.models."grok-imagine-video"]\n'
                'sizes = ["1280x720"]\nseconds = ["4"]\n'
            )
            settings = {
                "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
                "SORA_PROXY_API_KEYS": f"alice:{ALICE}",
                "SORA_PROXY_STORE_URL": redis.url,
                "SORA_PROXY_STORE_PREFIX": f"bench{uuid.uuid4().hex}:",
                "SORA_PROXY_FETCH_ALLOW_PRIVATE": "true",
                "SORA_PROXY_POLL_INTERVAL": str(args.interval),
                "SORA_PROXY_ARCHIVE_URL": f"file://{tmp / 'archive'}",
                "SORA_PROXY_WEBHOOK_URL": receiver.url,
                "SORA_PROXY_WEBHOOK_SECRET": receiver.secret,
                "SORA_PROXY_WEBHOOK_ALLOW_PRIVATE": "true",
            }
            instances = []
            for name in ("a", "b"):
                (tmp / name).mkdir()
                instances.append(Gunicorn(settings, tmp / name / "gunicorn.log", workers=2))
            try:
                jobs = [
                    (instances[n % 2].url, "sora-2" if n % 2 else "grok-imagine-video")
                    for n in range(args.videos)
                ]

                def create(job: tuple[str, str]) -> tuple[str, float]:
                    answer = requests.post(
                        f"{job[0]}/v1/videos",
                        json={"model": job[1], "prompt": "a bench", "seconds": "4"},
                        headers={"Authorization": f"Bearer {ALICE}"},
                        timeout=30,
                    )
                    answer.raise_for_status()
                    return answer.json()["id"], time.time()

                started = time.time()
                with ThreadPoolExecutor(8) as pool:
                    created = dict(pool.map(create, jobs))
                receiver.wait_for(args.videos, timeout=120 + 10 * args.step)
                all_events = time.time() - started
                time.sleep(2.0)
            finally:
                for instance in instances:
                    instance.stop()
    finished_after = 3 * args.step  # the simulators finish a job three stages after its create
    first_delivery: dict[str, float] = {}
    for delivery in receiver.deliveries:
        if delivery.verified and delivery.event is not None:
            video_id = delivery.event["data"]["id"]
            first_delivery.setdefault(video_id, delivery.received_at)
    lags = [first_delivery[v] - (created[v] + finished_after) for v in created]
    polls = [r for sim in (openai_sim, xai_sim) for r in sim.state.requests if r.method == "GET"]
    poll_count = sum(1 for r in polls if "/content" not in r.path)
    copies = Counter(
        (r.path, r.query.get("variant", ["video"])[0])
        for r in openai_sim.state.requests
        if r.method == "GET" and "/content" in r.path
    ) + Counter((r.path, "video") for r in results.state.requests if r.method == "GET")
    print(
        f"| videos | poll interval s | all events after s | event lag p50 s | event lag p99 s "
        f"| polls per video | overlapping polls | deliveries per event | copies per file |\n"
        f"|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {args.videos} | {args.interval:g} | {all_events:.1f} "
        f"| {statistics.median(lags):.2f} | {_percentile(lags, 0.99):.2f} "
        f"| {poll_count / args.videos:.1f} "
        f"| {_overlapping(openai_sim.state.requests) + _overlapping(xai_sim.state.requests)} "
        f"| {len(receiver.deliveries) / args.videos:.2f} "
        f"| {max(copies.values()) if copies else 0} |"
    )


if __name__ == "__main__":
    main()
