"""Worst-case reference images through the proxy: worker memory and the time they add.

Starts the simulator (gunicorn, its own process) and the proxy under gunicorn with
``config/gunicorn.conf.py`` and one worker (so the serving process is known), warms the
worker, then sends each case once while sampling the worker's RSS from ``/proc`` every 20 ms,
then 16 at once. Prints a markdown table: what the proxy answered, the worker's peak RSS growth,
its RSS growth once the request is over, and the latency against the upstream alone (the same
final image posted straight to the simulator).

    .venv/bin/python bench/reference_memory.py [--runs 11]

Targets (issue 10): any single reference <= 150 MB peak growth, 16 concurrent worst-case
references <= 1 GB, memory returned afterwards, <= 100 ms added for a right-size reference.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image
from urllib3 import encode_multipart_formdata

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from images import make_photo, zero_png  # noqa: E402
from procs import Service, children, free_port  # noqa: E402
from rss import Sampler, rss_bytes  # noqa: E402

from sora_proxy.references import fit_image, load_image  # noqa: E402
from sora_proxy.sizing import VideoSize  # noqa: E402

MB = 1e6
FIELDS = {"prompt": "A paper boat in the rain", "model": "sora-2", "size": "1280x720"}
SETTLE_S = 0.5
CONCURRENT = 16


@dataclass(frozen=True)
class Case:
    """One reference image and how it is sent (``json``: a data URI; ``multipart``: a file)."""

    name: str
    data: bytes
    form: str

    def body(self) -> tuple[bytes, str]:
        """The create body and its Content-Type, encoded once so the client's own encoding
        time is not counted."""
        if self.form == "json":
            uri = "data:image/png;base64," + base64.b64encode(self.data).decode()
            return json.dumps({**FIELDS, "input_reference": uri}).encode(), "application/json"
        return encode_multipart_formdata(
            [*FIELDS.items(), ("input_reference", ("reference", self.data))]
        )


def poster(url: str, body: tuple[bytes, str]) -> Callable[[], requests.Response]:
    """A function that posts ``body`` to ``url``'s create route."""
    content, content_type = body
    return lambda: requests.post(
        f"{url}/v1/videos", data=content, timeout=120, headers={"Content-Type": content_type}
    )


def noise_png(mode: str, size: tuple[int, int]) -> bytes:
    """Random pixels: PNG cannot compress them (the ``make bench`` reference images)."""
    image = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def cases() -> list[Case]:
    """The worst cases: costly to decode, big on the wire, or hostile."""
    return [
        Case(
            "16-bit RGBA PNG 6324x6324 (decodes to 160 MB)",
            zero_png(6324, 6324, 16, 6),
            "multipart",
        ),
        Case("PNG bomb 50000x50000, 1-bit", zero_png(50000, 50000, 1, 0), "multipart"),
        Case(
            "RGBA PNG 4096x4096 (64 MiB decoded: the budget)",
            zero_png(4096, 4096, 8, 6),
            "multipart",
        ),
        Case(
            "WebP 2000x2000 (budgeted at 4x its 16 MB)", make_photo(2000, 2000, "WEBP"), "multipart"
        ),
        Case(
            "JPEG 6000x4000 baseline, must be fitted",
            make_photo(6000, 4000, "JPEG", quality=90),
            "multipart",
        ),
        Case(
            "JPEG 6000x4000 progressive",
            make_photo(6000, 4000, "JPEG", quality=90, progressive=True),
            "multipart",
        ),
        Case(
            "RGBA noise PNG 1280x720, right size, JSON data URI",
            noise_png("RGBA", (1280, 720)),
            "json",
        ),
        Case(
            "RGB noise PNG 1600x900, fitted, JSON data URI", noise_png("RGB", (1600, 900)), "json"
        ),
    ]


def upstream_bytes(case: Case) -> bytes | None:
    """The image the proxy sends upstream for ``case``, or None if it refuses it."""
    try:
        return fit_image(load_image(case.data), VideoSize(1280, 720), "cover").data
    except Exception:  # refused (any reason): there is no upstream-alone baseline
        return None


def timed(sends: list[Callable[[], requests.Response]], runs: int) -> list[float]:
    """Median milliseconds of each of ``sends``, run in turn ``runs`` times (interleaved, so
    drift on the machine hits all alike) after one warm-up round."""
    for send in sends:
        send()
    times: list[list[float]] = [[] for _ in sends]
    for _ in range(runs):
        for send, kept in zip(sends, times, strict=True):
            started = time.perf_counter()
            send()
            kept.append((time.perf_counter() - started) * 1000)
    return [statistics.median(kept) for kept in times]


def error_code(response: requests.Response) -> str | None:
    """The envelope's ``code`` of an error answer."""
    if response.status_code < 400:
        return None
    try:
        code: str | None = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "?"
    return code


def measured(worker: int, run: Callable[[], object]) -> tuple[float, float, object]:
    """Peak RSS growth and RSS growth after :data:`SETTLE_S`, in MB, around ``run()``."""
    with Sampler([worker]) as sampler:
        result = run()
    time.sleep(SETTLE_S)
    rss = sampler.serving()
    return rss.growth / MB, (rss_bytes(worker) - rss.before) / MB, result


def start(work: Path) -> tuple[Service, Service]:
    """The simulator and the proxy (one gunicorn worker), both in their own processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SORA_PROXY_")}
    sim_port = free_port()
    (work / "sim.conf.py").write_text("control_socket_disable = True\n")
    simulator = Service(
        "simulator",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(work / "sim.conf.py"),
            "-b",
            f"127.0.0.1:{sim_port}",
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "16",
            "sora_proxy.simulator:create_simulator_app(seconds_per_step=0.01)",
        ],
        sim_port,
        work / "simulator.log",
        env=env,
        cwd=REPO,
    )
    port = free_port()
    proxy_env = {
        **env,
        "SORA_PROXY_UPSTREAM_URL": f"{simulator.url}/v1",
        "SORA_PROXY_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "SORA_PROXY_STORE_URL": f"sqlite:///{work / 'store.sqlite3'}",
        "SORA_PROXY_ACCESS_LOG": "",
        "SORA_PROXY_LOG_LEVEL": "warning",
    }
    proxy = Service(
        "sora_proxy",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "config/gunicorn.conf.py",
            "wsgi:app",
        ],
        port,
        work / "proxy.log",
        env=proxy_env,
        cwd=REPO,
    )
    return simulator, proxy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="timed sends per case (median)")
    args = parser.parse_args()
    all_cases = cases()
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="sora-proxy-refmem-") as tmp:
        simulator, proxy = start(Path(tmp))
        try:
            time.sleep(0.5)
            (master,) = children(proxy.process.pid)
            (worker,) = children(master)
            # Warm the worker: imports, Pillow's plugins, the upstream Session.
            for case in all_cases[-2:]:
                poster(proxy.url, case.body())()
            for case in all_cases:
                send = poster(proxy.url, case.body())
                peak, after, response = measured(worker, send)
                assert isinstance(response, requests.Response)
                status, code = response.status_code, error_code(response)
                sent = upstream_bytes(case)
                added = "-"
                if sent is not None and status == 200:
                    alone = poster(simulator.url, Case("", sent, "multipart").body())
                    proxy_ms, alone_ms = timed([send, alone], args.runs)
                    added = f"{proxy_ms - alone_ms:.0f} ({proxy_ms:.0f} vs {alone_ms:.0f})"
                else:
                    (proxy_ms,) = timed([send], args.runs)
                verdict = "accepted" if status == 200 else "refused"
                rows.append(
                    (
                        case.name,
                        f"{len(case.data) / MB:.2f}",
                        f"{verdict} ({status}{', ' + code if code else ''})",
                        f"{peak:.0f}",
                        f"{after:.0f}",
                        f"{proxy_ms:.0f}",
                        added,
                    )
                )
            for case in (all_cases[0], all_cases[2], all_cases[4], all_cases[6]):
                send = poster(proxy.url, case.body())

                def burst(once: Callable[[], requests.Response] = send) -> list[requests.Response]:
                    with ThreadPoolExecutor(CONCURRENT) as pool:
                        return list(pool.map(lambda _: once(), range(CONCURRENT)))

                started = time.perf_counter()
                peak, after, responses = measured(worker, burst)
                elapsed = (time.perf_counter() - started - SETTLE_S) * 1000
                assert isinstance(responses, list)
                statuses = sorted(
                    {
                        f"{r.status_code}{', ' + (error_code(r) or '')}".rstrip(", ")
                        for r in responses
                    }
                )
                rows.append(
                    (
                        f"{CONCURRENT} at once: {case.name}",
                        f"{CONCURRENT} x {len(case.data) / MB:.2f}",
                        "; ".join(statuses),
                        f"{peak:.0f}",
                        f"{after:.0f}",
                        f"{elapsed:.0f} (all)",
                        "-",
                    )
                )
        finally:
            proxy.stop()
            simulator.stop()
    print(
        "\nReference images through sora_proxy under gunicorn (1 gthread worker, 16 threads); "
        f"worker RSS sampled every 20 ms; 'after' is {SETTLE_S:.1f} s after the answer; "
        f"ms are medians of {args.runs}.\n"
    )
    print(
        "| case | MB sent | proxy answer | peak RSS growth MB | RSS growth after MB | "
        "proxy ms | ms added vs upstream alone |"
    )
    print("|---|---:|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
