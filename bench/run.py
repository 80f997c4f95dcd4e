"""Benchmarks side by side: sora_proxy, nginx and LiteLLM's proxy in front of one fast upstream.

Starts everything on 127.0.0.1 (see :mod:`systems`), then for each system in turn, the
upstream alone first as the baseline: retrieve under wrk, create with a ~4 MB reference image,
download a 1 GiB body and upload a 200 MB video while sampling the serving process's RSS. The
documented deployment (``sora_proxy_nginx``: the shipped nginx site in front of gunicorn with
the hand-off) downloads the video it archived, against nginx serving the same bytes itself
(the upstream alone). ``bench/slow_clients.py`` (run after this by ``make bench``) measures
slow clients.
Writes ``bench/results/latest.{md,png,json}`` and prints the tables. Every server is stopped
at the end, on error and on Ctrl-C too.

    .venv/bin/python bench/run.py [--quick] [--only sora_proxy,nginx,litellm]

``make bench`` installs what it needs first (``bench/install.sh``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH.parent / "tests"))  # videos.py: the upload's whole MP4

import report  # noqa: E402
import systems  # noqa: E402
import workloads  # noqa: E402
from load import create_video, download  # noqa: E402
from nginx_sites import nginx_binary  # noqa: E402
from procs import Service  # noqa: E402

from sora_proxy.simulator import large_body_chunks  # noqa: E402

RESULTS = BENCH / "results"
CHOICES = ("sora_proxy", "sora_proxy_keyed", "sora_proxy_nginx", "nginx", "litellm")
#: The documented deployment's download is of an archived video of at least 200 MB, so
#: ``--quick`` downloads 256 MiB (not workloads.QUICK's 128 MiB).
QUICK_DOWNLOAD_BYTES = 256 * 2**20


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _version(argv: list[str], pattern: str = "") -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    line = next((t for t in text if pattern in t), text[0] if text else "?")
    return line.strip()


def versions() -> dict[str, str]:
    """Versions of everything measured and measuring."""
    import gunicorn
    import PIL

    import sora_proxy

    return {
        "Python": platform.python_version(),
        "sora_proxy": sora_proxy.__version__,
        "gunicorn": gunicorn.__version__,
        "Pillow": PIL.__version__,
        "nginx": _version([nginx_binary(), "-v"]).removeprefix("nginx version: "),
        "wrk": _version(["wrk", "-v"], "wrk").split(" [")[0].removeprefix("wrk "),
        "LiteLLM": systems.litellm_version() or "not installed",
    }


def machine() -> str:
    """CPU model, cores, memory, OS and kernel."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    debian = Path("/etc/debian_version")
    distro = f"Debian {debian.read_text().strip()}" if debian.exists() else platform.system()
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem / 2**20:.0f} GiB RAM, {distro}, "
        f"Linux {platform.release()}"
    )


def write_large_file(path: Path, size: int) -> None:
    """The content the upstream serves: an MP4 ``ftyp`` box then noise (simulator pattern)."""
    with path.open("wb") as out:
        for chunk in large_body_chunks(size, seed=5):
            out.write(chunk)


def wait_archived(system: systems.System, video_id: str, timeout: float = 180.0) -> float:
    """Wait until ``system`` (whose ``archive`` is a local folder) has archived ``video_id``'s
    video; the seconds it took after the create."""
    from sora_proxy.archive import open_archive

    assert system.archive is not None
    archive = open_archive(f"file://{system.archive}", str(system.archive))
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if archive.stat(f"videos/{video_id}/video") is not None:
            return time.monotonic() - started
        if system.service.exited():
            break
        time.sleep(0.2)
    raise RuntimeError(f"video {video_id} not archived after {time.monotonic() - started:.0f} s")


#: Downloads of each side in the paired comparison (alternating, so drift hits both alike).
PAIRED_RUNS = 7


def _quiet_download(
    system: systems.System,
    video_id: str,
    plan: workloads.Plan,
    results: dict[str, Any],
    baseline: systems.System | None,
) -> Any:
    """The download workload, once a system with an archive has finished copying; for it,
    also downloads alternating with nginx's own static file (``baseline``), the ratio of
    their medians being the documented deployment's figure."""
    if system.archive is None:
        return workloads.download_content(system, video_id, plan)
    wait_tracker_idle(system)
    figures = workloads.download_content(system, video_id, plan)
    if baseline is not None and figures.get("ok"):
        ours, static = [], []
        for _ in range(PAIRED_RUNS):
            for side, into in ((system, ours), (baseline, static)):
                done = download(f"{side.url}/v1/videos/{video_id}/content", side.headers)
                if done.status == 200 and done.nbytes == plan.download_bytes:
                    into.append(done.nbytes / done.seconds / 1e6)
        if ours and static:
            results["download_paired"] = {
                "runs": PAIRED_RUNS,
                "ours": ours,
                "static": static,
                "ours_median": statistics.median(ours),
                "static_median": statistics.median(static),
            }
    return figures


def wait_tracker_idle(system: systems.System, timeout: float = 300.0) -> float:
    """Wait until ``system``'s tracker has nothing pending (its ``/readyz`` backlog): the
    videos the create step made are archived too, each a copy of the large body, and a copy
    running during the download would measure the copy, not the download."""
    import requests

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            ready = requests.get(f"{system.url}/readyz", timeout=10).json()
        except (requests.RequestException, ValueError):
            ready = {}
        pending = (ready.get("tracker") or {}).get("pending")
        if pending is not None and not any(pending.values()):
            return time.monotonic() - started
        time.sleep(1.0)
    raise RuntimeError(f"tracker still busy after {time.monotonic() - started:.0f} s")


def measure(
    system: systems.System,
    images: workloads.Images,
    plan: workloads.Plan,
    results: dict[str, Any],
    baseline: systems.System | None = None,
) -> None:
    """Run every workload against ``system``; a failing workload is recorded, not fatal.
    ``baseline``: the upstream alone, for the documented deployment's paired download."""
    try:
        video_id = create_video(system.url, system.headers)
        if system.archive is not None:
            took = wait_archived(system, video_id)
            results["systems"][system.key]["note"] += f" (archived {took:.1f} s after create)"
    except Exception as error:
        for workload in ("retrieve", "create", "download", "upload"):
            results[workload][system.key] = {"error": f"no video to work with: {error}"}
        return
    steps = [
        ("retrieve", lambda: workloads.retrieve(system, video_id, plan)),
        ("create", lambda: workloads.create(system, images, plan)),
        ("download", lambda: _quiet_download(system, video_id, plan, results, baseline)),
        ("upload", lambda: workloads.upload_video(system, plan)),
    ]
    if system.archive is not None:
        # Its download is of the video it archived: before the create step, whose videos
        # (the large file each) would be copied meanwhile and push it out of the archive.
        steps[1], steps[2] = steps[2], steps[1]
    for name, step in steps:
        print(f"  {system.label}: {name} ...", flush=True)
        started = time.monotonic()
        try:
            results[name][system.key] = step()
        except Exception as error:
            traceback.print_exc()
            results[name][system.key] = {"error": f"{type(error).__name__}: {error}"[:300]}
        print(f"  {system.label}: {name} done in {time.monotonic() - started:.1f}s", flush=True)


def download_single_worker(
    work: Path,
    upstream: systems.System,
    plan: workloads.Plan,
    results: dict[str, Any],
    started: Any,
) -> None:
    """The download again on a one-process LiteLLM (its default), which has no supervisor
    to kill a worker that stops answering its health pings while it buffers the body."""
    print("LiteLLM's download failed; measuring it on a 1-worker LiteLLM", flush=True)
    try:
        system = systems.start_litellm(work, upstream, workers=1)
    except Exception as error:
        results["systems"]["litellm_1w"] = {"unavailable": str(error).strip()[:400]}
        return
    started(system.service)
    results["systems"]["litellm_1w"] = {
        "note": system.note + "; download only, run because the 2-worker download failed"
    }
    try:
        video_id = create_video(system.url, system.headers)
        results["download"]["litellm_1w"] = workloads.download_content(system, video_id, plan)
    except Exception as error:
        results["download"]["litellm_1w"] = {"error": f"{type(error).__name__}: {error}"[:300]}
    system.service.stop()


def save_logs(work: Path, target: Path) -> None:
    """Keep every server's output (the work directory is removed) in ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for log in [*work.glob("*.log"), *work.glob("*/error.log")]:
        name = log.name if log.parent == work else f"{log.parent.name}-{log.name}"
        shutil.copyfile(log, target / name)


def _notes(results: dict[str, Any]) -> list[str]:
    """Plain-language notes on what did not answer 2xx, for the report."""
    notes = []
    for key, info in results["systems"].items():
        label = systems.LABELS[key]
        if info.get("unavailable"):
            notes.append(f"{label}: not measured: {info['unavailable']}")
            continue
        for form, title in report.CREATE_FORMS.items():
            fig = results["create"].get(key, {}).get(form)
            if isinstance(fig, dict) and not fig.get("ok"):
                notes.append(
                    f"{label}, create ({title}): status {fig['statuses']}: {fig['detail'][:200]!r}"
                )
        for workload in ("retrieve", "create", "download", "upload"):
            entry = results[workload].get(key)
            if isinstance(entry, dict) and "error" in entry:
                notes.append(f"{label}, {workload}: {entry['error']}")
            elif (
                workload in ("download", "upload")
                and isinstance(entry, dict)
                and not entry.get("ok")
            ):
                notes.append(
                    f"{label}, {workload}: status {entry.get('status')}, "
                    f"{entry.get('bytes')} bytes: {entry.get('detail', '')[:300]!r}"
                )
                if key == "litellm" and entry.get("workers_died"):
                    notes.append(
                        f"{label}, {workload}: with --num_workers > 1, uvicorn's supervisor "
                        "kills a worker that does not answer its health ping within 5 s "
                        "(timeout_worker_healthcheck), and a LiteLLM worker reading the whole "
                        "body into memory stops answering; the client's connection drops."
                    )
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run (3 s wrk, 4 creates, 256 MiB / 32 MB bodies)",
    )
    parser.add_argument(
        "--only",
        default=",".join(CHOICES),
        help=f"comma-separated systems besides the upstream: {', '.join(CHOICES)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.* go")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(CHOICES)
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    plan = (
        dataclasses.replace(workloads.QUICK, download_bytes=QUICK_DOWNLOAD_BYTES)
        if args.quick
        else workloads.Plan()
    )
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sora-bench-"))
    results: dict[str, Any] = {
        "systems": {},
        "retrieve": {},
        "create": {},
        "download": {},
        "upload": {},
    }
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        print(
            f"work directory {work}; writing the {plan.download_bytes >> 20} MiB body", flush=True
        )
        write_large_file(work / "large.mp4", plan.download_bytes)
        images = workloads.make_images()

        def started(service: Service) -> Service:
            stack.callback(service.stop)
            return service

        simulator = started(systems.start_simulator(work))
        sink = started(systems.start_sink(work))
        upstream = systems.start_upstream(work, simulator, sink, work / "large.mp4")
        started(upstream.service)
        running = [upstream]
        for key in chosen:
            print(f"starting {systems.LABELS[key]} ...", flush=True)
            try:
                system = systems.STARTERS[key](work, upstream)
            except Exception as error:
                results["systems"][key] = {"unavailable": str(error).strip()[:400]}
                print(f"  {systems.LABELS[key]} unavailable: {error}", flush=True)
                continue
            started(system.service)
            running.append(system)
        for system in running:
            results["systems"][system.key] = {"note": system.note}
        for system in running:
            print(f"measuring {system.label}", flush=True)
            measure(system, images, plan, results, baseline=upstream)
        for system in running:
            if system.service.exited():
                results["systems"][system.key]["note"] += " (exited during the run!)"
        litellm = next((s for s in running if s.key == "litellm"), None)
        if litellm is not None and not results["download"].get("litellm", {}).get("ok"):
            litellm.service.stop()  # frees its memory and cores for the next one
            download_single_worker(work, upstream, plan, results, started)
        save_logs(work, args.out / "logs")
    results["meta"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "plan": dataclasses.asdict(plan),
        "images": {"exact": len(images.exact), "larger": len(images.larger)},
        "upstream": upstream.note + " (gunicorn, 2 gthread workers x 8 threads)",
        "wall_s": time.monotonic() - began,
    }
    results["meta"]["notes"] = _notes(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    text = report.markdown(results)
    (args.out / "latest.md").write_text(text)
    report.chart(results, args.out / "latest.png")
    print("\n" + text)
    print(f"wrote {args.out / 'latest.md'}, latest.png, latest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
