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
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from servers import Gunicorn  # noqa: E402
from videos import VideoUpload  # noqa: E402

from sora_proxy.simulator import SimulatorServer, large_body_sha256  # noqa: E402

MIB = 1024 * 1024
LIMIT_MB = 50


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                pids.append(int(entry.name))
    return pids


class Sampler:
    """Samples one process's RSS in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
    response = requests.post(f"{proxy_url}/v1/videos/edits", data=body, timeout=600,
                             headers={"Content-Type": body.content_type})
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
        proxy = Gunicorn({"SORA_PROXY_UPSTREAM_URL": sim.base_url,
                          "SORA_PROXY_MAX_VIDEO_BYTES": str(size + 16 * MIB),
                          "SORA_PROXY_ACCESS_LOG": ""}, log, workers=1)
        try:
            time.sleep(0.5)
            (worker,) = worker_pids(proxy.process.pid)
            # Warm the worker (imports, first Session) so growth is the transfer's own.
            warm = sim.state.add_large_video(8 * MIB, seed=9)
            download(proxy.url, warm, 8 * MIB)
            video_id = sim.state.add_large_video(size, seed=5)
            for name, run in (
                ("download", lambda: download(proxy.url, video_id, size)),
                ("upload (edits)", lambda: upload(proxy.url, size)),
            ):
                before = rss_bytes(worker)
                with Sampler(worker) as sampler:
                    result = run()
                elapsed = result[0] if isinstance(result, tuple) else result
                if isinstance(result, tuple):
                    assert result[1] == large_body_sha256(size, seed=5), "download corrupted"
                rows.append((name, size, elapsed, before, sampler.peak))
        finally:
            proxy.stop()
    print(f"\nsora_proxy under gunicorn (1 gthread worker), {args.size_mib} MiB each way\n")
    print("| transfer | MiB | seconds | MiB/s | worker RSS before (MB) | peak (MB) | growth (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name, nbytes, elapsed, before, peak in rows:
        growth = (peak - before) / 1e6
        worst = max(worst, growth)
        print(f"| {name} | {nbytes // MIB} | {elapsed:.2f} | {nbytes / MIB / elapsed:.0f} | "
              f"{before / 1e6:.1f} | {peak / 1e6:.1f} | {growth:.1f} |")
    print(f"\nlimit: growth < {LIMIT_MB} MB -> {'PASS' if worst < LIMIT_MB else 'FAIL'}")
    return 0 if worst < LIMIT_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
