"""Memory while streaming: 1 GiB down and 1 GiB up through the proxy under gunicorn.

Starts the simulator (in this process) and the proxy under gunicorn with
``config/gunicorn.conf.py`` (one worker, so the serving process is known), then downloads a
1 GiB video and uploads a 1 GiB video to ``/v1/videos/edits`` while sampling the worker's RSS
from ``/proc`` every 20 ms. Prints a table; exits non-zero if RSS grows by 50 MB or more.

    .venv/bin/python bench/memory.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from procs import children  # noqa: E402
from rss import Sampler  # noqa: E402
from servers import Gunicorn  # noqa: E402
from videos import VideoUpload  # noqa: E402

from sora_proxy.simulator import SimulatorServer, large_body_sha256  # noqa: E402

MIB = 1024 * 1024
LIMIT_MB = 50


def download(proxy_url: str, video_id: str, size: int) -> tuple[float, str]:
    digest = hashlib.sha256()
    received = 0
    started = time.perf_counter()
    with requests.get(f"{proxy_url}/v1/videos/{video_id}/content", stream=True, timeout=120) as r:
        r.raise_for_status()
        for chunk in r.raw.stream(MIB, decode_content=False):
            digest.update(chunk)
            received += len(chunk)
    elapsed = time.perf_counter() - started
    assert received == size, (received, size)
    return elapsed, digest.hexdigest()


def upload(proxy_url: str, size: int) -> float:
    body = VideoUpload(size, {"prompt": "bench"})
    started = time.perf_counter()
    response = requests.post(
        f"{proxy_url}/v1/videos/edits",
        data=body,
        timeout=600,
        headers={"Content-Type": body.content_type},
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MIB
    rows = []
    with SimulatorServer(seconds_per_step=0.05) as sim:
        log = Path(os.environ.get("TMPDIR", "/tmp")) / "sora-proxy-bench-memory.log"
        proxy = Gunicorn(
            {
                "SORA_PROXY_UPSTREAM_URL": sim.base_url,
                "SORA_PROXY_MAX_VIDEO_BYTES": str(size + 16 * MIB),
                "SORA_PROXY_ACCESS_LOG": "",
            },
            log,
            workers=1,
        )
        try:
            time.sleep(0.5)
            (worker,) = children(proxy.process.pid)
            # Warm the worker (imports, first Session) so growth is the transfer's own.
            warm = sim.state.add_large_video(8 * MIB, seed=9)
            download(proxy.url, warm, 8 * MIB)
            video_id = sim.state.add_large_video(size, seed=5)
            for name, run in (
                ("download", lambda: download(proxy.url, video_id, size)),
                ("upload (edits)", lambda: upload(proxy.url, size)),
            ):
                with Sampler([worker]) as sampler:
                    result = run()
                elapsed = result[0] if isinstance(result, tuple) else result
                if isinstance(result, tuple):
                    assert result[1] == large_body_sha256(size, seed=5), "download corrupted"
                rss = sampler.serving()
                rows.append((name, size, elapsed, rss.before, rss.peak))
        finally:
            proxy.stop()
    print(f"\nsora_proxy under gunicorn (1 gthread worker), {args.size_mib} MiB each way\n")
    print("| transfer | MiB | seconds | MiB/s | worker RSS before (MB) | peak (MB) | growth (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name, nbytes, elapsed, before, peak in rows:
        growth = (peak - before) / 1e6
        worst = max(worst, growth)
        print(
            f"| {name} | {nbytes // MIB} | {elapsed:.2f} | {nbytes / MIB / elapsed:.0f} | "
            f"{before / 1e6:.1f} | {peak / 1e6:.1f} | {growth:.1f} |"
        )
    print(f"\nlimit: growth < {LIMIT_MB} MB -> {'PASS' if worst < LIMIT_MB else 'FAIL'}")
    return 0 if worst < LIMIT_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
