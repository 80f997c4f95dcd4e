"""The four workloads, run against one system at a time; each returns plain figures.

A figure set is a flat ``dict`` (numbers and short strings) so it goes to JSON and to the
report as is. A workload a system cannot do is still measured: its status codes say what
happened (LiteLLM uploads a data URI's text as the image, nginx forwards a JSON string the
upstream refuses), and nothing here raises for a non-2xx answer.
"""

from __future__ import annotations

import base64
import http.client
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from load import MIB, Timed, Transfer, download, run_wrk, timed_posts, upload
from PIL import Image
from rss import Sampler
from systems import System
from videos import mp4_head

from sora_proxy.simulator.media import load as load_asset

Figures = dict[str, Any]
SIZE = (1280, 720)


@dataclass(frozen=True)
class Plan:
    """How much of each workload to run (``--quick`` shrinks everything)."""

    wrk_seconds: int = 5
    wrk_runs: int = 3
    wrk_warmup_seconds: int = 2
    connections: tuple[int, ...] = (8, 64)
    create_count: int = 15
    create_warmup: int = 2
    download_bytes: int = 1024 * MIB
    upload_bytes: int = 200 * 1000 * 1000
    #: Transfers are repeated (median reported) when one takes less than ``repeat_below_s``.
    transfer_runs: int = 3
    repeat_below_s: float = 10.0


QUICK = Plan(
    wrk_seconds=3,
    wrk_runs=1,
    wrk_warmup_seconds=1,
    create_count=4,
    create_warmup=1,
    download_bytes=128 * MIB,
    upload_bytes=32 * 1000 * 1000,
    transfer_runs=1,
)


@dataclass(frozen=True)
class Images:
    """The reference images: noise, so PNG cannot shrink them below ~4 MB."""

    exact: bytes  # RGBA 1280x720: the video's size, sent as is
    larger: bytes  # RGB 1600x900: needs a fit (cover) to 1280x720
    fitted: bytes  # ``larger`` fitted by Pillow the way the proxy does, for the upstream


def make_images() -> Images:
    """Generate the PNGs (about 3.7 MB and 4.3 MB) with Pillow."""

    def png(image: Image.Image, level: int = 6) -> bytes:
        out = io.BytesIO()
        image.save(out, "PNG", compress_level=level)
        return out.getvalue()

    exact = Image.frombytes("RGBA", SIZE, os.urandom(SIZE[0] * SIZE[1] * 4))
    larger = Image.frombytes("RGB", (1600, 900), os.urandom(1600 * 900 * 3))
    fitted = larger.resize(SIZE, Image.Resampling.LANCZOS)
    return Images(png(exact), png(larger), png(fitted, 3))


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def retrieve(system: System, video_id: str, plan: Plan) -> Figures:
    """wrk on ``GET /v1/videos/{id}`` at each concurrency, ``wrk_runs`` times after a short
    warm-up; the run with the median req/s is reported, with the range of all runs (how
    connections spread over a server's worker processes varies from run to run)."""
    url = f"{system.url}/v1/videos/{video_id}"
    run_wrk(url, system.headers, connections=plan.connections[0], seconds=plan.wrk_warmup_seconds)
    figures: Figures = {}
    for connections in plan.connections:
        runs = sorted(
            (
                run_wrk(url, system.headers, connections=connections, seconds=plan.wrk_seconds)
                for _ in range(plan.wrk_runs)
            ),
            key=lambda run: run.requests_per_s,
        )
        median = runs[len(runs) // 2]
        figures[f"c{connections}"] = {
            "rps": median.requests_per_s,
            "p50_ms": median.p50_ms,
            "p99_ms": median.p99_ms,
            "rps_min": runs[0].requests_per_s,
            "rps_max": runs[-1].requests_per_s,
            "requests": sum(run.requests for run in runs),
            "non_2xx": sum(run.non_2xx for run in runs),
            "socket_errors": sum(run.socket_errors for run in runs),
        }
    return figures


def _timed_figures(timed: Timed) -> Figures:
    return {
        "median_ms": timed.median_ms,
        "min_ms": min(timed.latencies_ms),
        "max_ms": max(timed.latencies_ms),
        "statuses": sorted(set(timed.statuses)),
        "ok": timed.ok,
        "detail": timed.detail,
    }


def create(system: System, images: Images, plan: Plan) -> Figures:
    """Median create latency, three ways of sending a ~4 MB reference.

    ``json``: JSON with the image as a data-URI string (the proxy's primary form); the upstream
    alone gets the equivalent multipart body instead (the only form it takes).
    ``multipart``: multipart with the image as a file part, for every system.
    ``json_fit``: JSON data URI of a 1600x900 image the proxy must fit to 1280x720; the
    upstream alone gets the already-fitted image as multipart.
    """
    url = f"{system.url}/v1/videos"
    fields = {"prompt": "A paper boat in the rain", "model": "sora-2", "size": "1280x720"}
    total = plan.create_warmup + plan.create_count

    def multipart(png: bytes) -> Timed:
        return timed_posts(
            url,
            system.headers,
            total,
            data=fields,
            files={"input_reference": ("reference.png", png, "image/png")},
        )

    def json_body(png: bytes) -> Timed:
        return timed_posts(
            url, system.headers, total, json={**fields, "input_reference": data_uri(png)}
        )

    if system.key == "upstream":
        runs = {
            "json": multipart(images.exact),
            "multipart": multipart(images.exact),
            "json_fit": multipart(images.fitted),
        }
    else:
        runs = {
            "json": json_body(images.exact),
            "multipart": multipart(images.exact),
            "json_fit": json_body(images.larger),
        }
    return {
        form: _timed_figures(
            Timed(t.latencies_ms[plan.create_warmup :], t.statuses[plan.create_warmup :], t.detail)
        )
        for form, t in runs.items()
    }


def _sampled(system: System, run: Callable[[], Transfer]) -> Figures:
    """Run one transfer while sampling RSS; a dropped connection is a result, not an error,
    and a server process that exits meanwhile is named."""
    pids = system.service.pids()
    started = time.perf_counter()
    with Sampler(pids) as sampler:
        try:
            transfer = run()
        except (OSError, http.client.HTTPException) as error:
            transfer = Transfer(
                0, 0, time.perf_counter() - started, f"{type(error).__name__}: {error}"
            )
    rss = sampler.serving()
    gone = sorted(set(pids) - set(system.service.pids()))
    detail = transfer.detail
    if gone:
        peaks = ", ".join(f"pid {pid} (peak RSS {sampler.peak[pid] / 1e6:,.0f} MB)" for pid in gone)
        detail = f"server process exited during the transfer: {peaks}; {detail}"
    return {
        "status": transfer.status,
        "bytes": transfer.nbytes,
        "seconds": transfer.seconds,
        "mb_per_s": transfer.mb_per_s,
        "rss_before_mb": rss.before / 1e6,
        "rss_peak_mb": rss.peak / 1e6,
        "rss_growth_mb": rss.growth / 1e6,
        "ok": 200 <= transfer.status < 300 and not gone,
        "detail": detail,
        "workers_died": len(gone),
    }


def _repeated(plan: Plan, once: Callable[[], Figures]) -> Figures:
    """Up to ``plan.transfer_runs`` transfers: the median by MB/s, with the range, and the
    largest RSS peak and growth of any run. A failed or slow first run is not repeated."""
    runs = [once()]
    if runs[0]["ok"] and runs[0]["seconds"] < plan.repeat_below_s:
        for _ in range(plan.transfer_runs - 1):
            runs.append(once())
            if not runs[-1]["ok"]:
                return runs[-1]
    ordered = sorted(runs, key=lambda run: run["mb_per_s"])
    figures = dict(ordered[len(ordered) // 2])
    worst = max(runs, key=lambda run: run["rss_growth_mb"])
    figures.update(
        runs=len(runs),
        mb_per_s_min=ordered[0]["mb_per_s"],
        mb_per_s_max=ordered[-1]["mb_per_s"],
        rss_before_mb=worst["rss_before_mb"],
        rss_peak_mb=worst["rss_peak_mb"],
        rss_growth_mb=worst["rss_growth_mb"],
    )
    return figures


def download_content(system: System, video_id: str, plan: Plan) -> Figures:
    """Download the large body, the serving process's RSS sampled meanwhile."""

    def once() -> Figures:
        figures = _sampled(
            system, lambda: download(f"{system.url}/v1/videos/{video_id}/content", system.headers)
        )
        if figures["ok"] and figures["bytes"] != plan.download_bytes:
            figures.update(
                ok=False,
                detail=f"{figures['bytes']} bytes received, {plan.download_bytes} expected",
            )
        return figures

    return _repeated(plan, once)


def upload_video(system: System, plan: Plan) -> Figures:
    """``POST /v1/videos/edits`` of a whole ``plan.upload_bytes`` MP4: the simulator's sample
    with one ``mdat`` running to the last byte (the proxy walks the container to its end)."""
    mp4, _, _ = load_asset("video")
    # The upload repeats one block from its first byte; the block's head makes the file's
    # ``mdat`` run to its last byte, so the copies after it are media data.
    head = mp4_head(plan.upload_bytes)
    block = (head + mp4 * (MIB // len(mp4) + 1))[:MIB]
    # LiteLLM routes an uploaded video by `model` (without it, it calls api.openai.com);
    # the others get what the openai SDK sends: prompt and video.
    fields = {"prompt": "Make it snow"}
    if system.key == "litellm":
        fields["model"] = "sora-2"
    return _repeated(
        plan,
        lambda: _sampled(
            system,
            lambda: upload(
                f"{system.url}/v1/videos/edits", system.headers, plan.upload_bytes, block, fields
            ),
        ),
    )
