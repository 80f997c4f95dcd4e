"""Slow clients: N readers at 1 KB/s and M uploaders at 1 byte/s, while a probe retrieves.

For each mode a deployment is started (and stopped) on 127.0.0.1:

* ``nginx``: the documented deployment, the shipped site (``config/nginx/sora-proxy.conf``,
  substituted as ``tests/nginx.py`` does) in front of gunicorn with ``SORA_PROXY_HANDOFF=nginx``
  and ``SORA_PROXY_TRUSTED_PROXIES=1``;
* ``direct-gthread``: gunicorn alone, the default gthread worker;
* ``direct-gevent``: gunicorn alone with ``SORA_PROXY_WORKER_CLASS=gevent`` (the worker class
  actually running is read from gunicorn's ``Using worker:`` line and shown).

Every deployment is keyed (caller key, upstream key, SQLite store, local archive) in front of
the repo's simulator (``bench/large_upstream.py``). Each makes a 64 MiB video through its own
API and waits until its tracker archived it; a second 64 MiB video exists only upstream (added
to the simulator, its ownership recorded in the store). Half the readers read each
(``--grid`` can pick one source).

Each scenario (N readers, M uploaders) ramps the slow clients up (asyncio raw sockets, one
process), probes with ``GET /v1/videos/{id}`` 10 times a second on fresh connections (a
failure: not 200, or no whole answer within 5 s), reads each gunicorn worker's RSS and
threads from /proc, counts the slow clients still connected, then closes everything and
waits for the deployment to answer again before the next scenario.

Writes ``bench/results/slow_clients.{md,json}`` (``--name`` changes the stem).

    .venv/bin/python bench/slow_clients.py [--quick] [--modes nginx,direct-gevent]
        [--grid "nginx=1024x256,64x0:archive;direct-gthread=24x0"] [--probe-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))  # this tree's sora_proxy, also when it is a copy

import systems  # noqa: E402
from nginx_sites import documented_site  # noqa: E402
from procs import Service, ServiceGroup, free_port  # noqa: E402

from sora_proxy.archive import open_archive  # noqa: E402
from sora_proxy.store import OwnedResource, open_store  # noqa: E402

RESULTS = BENCH / "results"
MIB = 1 << 20
VIDEO_BYTES = 64 * MIB
#: What a slow reader takes per second, and the receive buffer it asks for (the kernel
#: doubles it): a phone on a bad network, not a loopback socket with megabytes of window.
READ_BYTES, RCVBUF = 1024, 4096
#: Segment size of the slow clients' connections: a real network's, so the server's send
#: buffers do not grow to loopback's (64 KiB segments, megabytes of buffer per connection).
MSS = 1448
#: The uploads announce this much (under SORA_PROXY_MAX_VIDEO_BYTES and nginx's 210m).
UPLOAD_BYTES = 100 * 1000 * 1000
PROBE_PER_S = 10
PROBE_TIMEOUT_S = 5.0
RAMP_PER_S = 256
SETTLE_S = 2.0
#: Targets of issue 16: mode -> (N, M) that must show 0 failures and p99 under 100 ms.
TARGETS = {"nginx": (1024, 256), "direct-gevent": (256, 0)}
TARGET_P99_MS = 100.0

MODES: dict[str, dict[str, str]] = {
    "nginx": {"SORA_PROXY_HANDOFF": "nginx", "SORA_PROXY_TRUSTED_PROXIES": "1"},
    "direct-gthread": {},
    "direct-gevent": {"SORA_PROXY_WORKER_CLASS": "gevent"},
}
Grid = dict[str, list[tuple[int, int, str]]]
DEFAULT_GRID: Grid = {
    "nginx": [
        (64, 0, "mixed"),
        (0, 32, "mixed"),
        (1024, 0, "mixed"),
        (0, 256, "mixed"),
        (1024, 256, "mixed"),
    ],
    "direct-gthread": [(24, 0, "mixed"), (64, 0, "mixed")],
    "direct-gevent": [(256, 0, "mixed"), (1024, 0, "mixed"), (0, 64, "mixed")],
}
QUICK_GRID: Grid = {
    "nginx": [(64, 0, "mixed"), (1024, 256, "mixed")],
    "direct-gthread": [(24, 0, "mixed")],
    "direct-gevent": [(256, 0, "mixed")],
}
SOURCES = ("mixed", "archive", "upstream")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def raise_nofile() -> int:
    """Raise this process's (and so its children's) open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the deployments ------------------------------------------------------------------------


@dataclass
class Deployment:
    """One mode's servers, its videos and where its gunicorn workers are."""

    mode: str
    gunicorn: Service
    front: Service | None
    archive_dir: Path
    store_url: str
    archived_id: str = ""
    upstream_id: str = ""

    @property
    def port(self) -> int:
        """Where clients connect: nginx, or gunicorn itself."""
        return (self.front or self.gunicorn).port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return systems.gunicorn_workers(self.gunicorn)

    def worker_class(self) -> str:
        return systems.gunicorn_worker_class(self.gunicorn)

    def stop(self) -> None:
        ServiceGroup(self.mode, [s for s in (self.front, self.gunicorn) if s]).stop()


def _connections(grid: list[tuple[int, int, str]]) -> int:
    """nginx connections per worker for the largest scenario: every slow client may hold
    two (the client's, the proxied one), and all may land on one worker."""
    most = max((n + m for n, m, _ in grid), default=0)
    return max(1024, 2 * most + 512)


def start_deployment(
    mode: str, work: Path, upstream_url: str, grid: list[tuple[int, int, str]]
) -> Deployment:
    directory = work / mode
    settings = {
        **systems.keyed_settings(upstream_url, directory),
        # The tracker notices the archived video's end sooner; retrieves answer from the store.
        "SORA_PROXY_POLL_INTERVAL": "0.5",
        **MODES[mode],
    }
    gunicorn = systems.start_gunicorn(f"gunicorn ({mode})", directory / "gunicorn.log", settings)
    front = None
    if mode == "nginx":
        try:
            front = documented_site(
                directory / "nginx",
                gunicorn.port,
                directory / "archive",
                connections=_connections(grid),
            )
        except BaseException:
            gunicorn.stop()
            raise
    return Deployment(
        mode, gunicorn, front, directory / "archive", settings["SORA_PROXY_STORE_URL"]
    )


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {systems.CALLER_KEY}"}


def prepare_videos(deployment: Deployment, upstream_only: str, timeout: float = 120.0) -> None:
    """Create the archived video through the deployment and wait for its archive copy; record
    the upstream-only video as the bench caller's."""
    url = deployment.url
    body = {
        "prompt": f"bench-large {VIDEO_BYTES} 7",
        "model": "sora-2",
        "size": "1280x720",
        "seconds": "4",
    }
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:  # workers may still be booting
        try:
            answer = requests.post(f"{url}/v1/videos", json=body, headers=_auth(), timeout=30)
            if answer.ok:
                deployment.archived_id = answer.json()["id"]
                break
            last = f"{answer.status_code} {answer.text[:300]}"
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{deployment.mode}: could not create a video: {last}")
    archive = open_archive(f"file://{deployment.archive_dir}", str(deployment.archive_dir))
    video_id = deployment.archived_id
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/v1/videos/{video_id}", headers=_auth(), timeout=30)
        kept = archive.stat(f"videos/{video_id}/video")
        if status.ok and status.json().get("status") == "completed" and kept is not None:
            break
        time.sleep(0.25)
    else:
        raise RuntimeError(f"{deployment.mode}: video {video_id} not archived in {timeout:.0f} s")
    store = open_store(deployment.store_url)
    try:
        store.record(OwnedResource(upstream_only, "bench", "default", "video", time.time(), None))
    finally:
        store.close()
    deployment.upstream_id = upstream_only


def upstream_archived(deployment: Deployment) -> bool:
    """Whether the upstream-only video was archived after all (its readers then read that)."""
    archive = open_archive(f"file://{deployment.archive_dir}", str(deployment.archive_dir))
    return archive.stat(f"videos/{deployment.upstream_id}/video") is not None


def worker_status(pids: list[int]) -> list[dict[str, Any]]:
    """VmRSS (MiB) and Threads of each pid, from /proc/<pid>/status."""
    out = []
    for pid in pids:
        rss, threads = 0.0, 0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        except OSError:
            continue
        out.append({"pid": pid, "rss_mib": rss, "threads": threads})
    return out


# --- the clients ----------------------------------------------------------------------------


@dataclass
class Client:
    """One slow client's fate."""

    kind: str  # "reader" or "uploader"
    source: str  # "archive", "upstream", or "" (uploaders)
    connected: bool = False
    closed: bool = False  # by the server (EOF or reset)
    error: str = ""
    status: int | None = None
    received: int = 0
    sent: int = 0
    head: bytes = b""

    @property
    def open(self) -> bool:
        return self.connected and not self.closed and not self.error

    def note(self, data: bytes) -> None:
        self.received += len(data)
        if self.status is None and len(self.head) < 64:
            self.head += data[:64]
            parts = self.head.split(b" ", 2)
            if len(parts) >= 2 and parts[1][:3].isdigit() and len(parts[1]) >= 3:
                self.status = int(parts[1][:3])


def _slow_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
    sock.setblocking(False)
    return sock


async def _connected(port: int, client: Client, sockets: list, first: bytes) -> socket.socket:
    """A slow client's socket (kept in ``sockets`` for closing), connected, ``first`` sent."""
    loop = asyncio.get_running_loop()
    sock = _slow_socket()
    sockets.append(sock)
    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 10)
    client.connected = True
    await loop.sock_sendall(sock, first)
    return sock


async def slow_reader(port: int, request: bytes, client: Client, sockets: list) -> None:
    """GET the content, then take 1 KB a second until the server ends it or we are cancelled."""
    loop = asyncio.get_running_loop()
    try:
        sock = await _connected(port, client, sockets, request)
        while True:
            data = await loop.sock_recv(sock, READ_BYTES)
            if not data:
                client.closed = True
                return
            client.note(data)
            await asyncio.sleep(1.0)
    except (OSError, TimeoutError) as error:
        client.error = f"{type(error).__name__}: {error}"[:120]


def multipart_head(boundary: str) -> bytes:
    """The body's first bytes: a prompt part, then the video part's headers and an MP4 box."""
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nMake it snow\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="slow.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode() + b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


async def slow_uploader(port: int, head: bytes, body: bytes, client: Client, sockets: list) -> None:
    """POST the headers at once, then the body a byte a second, watching for an answer."""
    loop = asyncio.get_running_loop()
    try:
        sock = await _connected(port, client, sockets, head)
        for index in range(len(body)):
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                data = None
            if data == b"":
                client.closed = True
                return
            if data:
                client.note(data)
            await loop.sock_sendall(sock, body[index : index + 1])
            client.sent += 1
            await asyncio.sleep(1.0)
    except (OSError, TimeoutError) as error:
        client.error = f"{type(error).__name__}: {error}"[:120]


@dataclass
class Probe:
    started: float
    ms: float
    status: int  # 0: no answer (timeout or connection error)
    error: str = ""


async def probe_once(port: int, request: bytes) -> Probe:
    """One retrieve on a fresh connection: time to the last byte of the answer."""
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            else:
                await reader.read()
        return Probe(started, (time.perf_counter() - started) * 1000, status)
    except TimeoutError:
        return Probe(started, (time.perf_counter() - started) * 1000, 0, "timeout")
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
        return Probe(started, (time.perf_counter() - started) * 1000, 0, type(error).__name__)
    finally:
        if writer is not None:
            writer.close()


def _percentile(values: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


@dataclass
class Scenario:
    """One row of the table."""

    mode: str
    worker_class: str
    readers: int
    uploaders: int
    source: str
    probes: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    failures: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    workers_peak: list[dict[str, Any]] = field(default_factory=list)
    readers_open: int = 0
    readers_served: int = 0
    readers_open_by_source: dict[str, str] = field(default_factory=dict)
    uploaders_open: int = 0
    uploaders_answered: dict[str, int] = field(default_factory=dict)
    reader_statuses: dict[str, int] = field(default_factory=dict)
    ramp_s: float = 0.0
    recovered_s: float | None = None
    upstream_video_archived: bool = False
    error: str = ""


async def run_scenario(deployment: Deployment, row: Scenario, probe_seconds: float) -> None:
    """Ramp up the slow clients, probe, sample the workers, then close everything."""
    clients: list[Client] = []
    sockets: list[socket.socket] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await _ramp(deployment, row, clients, sockets, tasks)
        await asyncio.sleep(SETTLE_S)
        done = await _probe(deployment, row, clients, probe_seconds)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in sockets:
            sock.close()
    row.probes = len(done)
    # A failed probe counts as the timeout: slower than any answer.
    latencies = [p.ms if p.status == 200 else PROBE_TIMEOUT_S * 1000 for p in done]
    if latencies:
        row.p50_ms = statistics.median(latencies)
        row.p99_ms = _percentile(latencies, 0.99)
        row.max_ms = max(latencies)
    kinds_failed: dict[str, int] = {}
    for p in done:
        if p.status != 200:
            key = p.error or str(p.status)
            kinds_failed[key] = kinds_failed.get(key, 0) + 1
    row.failures = sum(kinds_failed.values())
    row.failure_kinds = kinds_failed


async def _ramp(
    deployment: Deployment,
    row: Scenario,
    clients: list[Client],
    sockets: list[socket.socket],
    tasks: list[asyncio.Task[None]],
) -> None:
    """Start the slow clients at RAMP_PER_S, readers and uploaders interleaved."""
    port = deployment.port
    auth = f"Authorization: Bearer {systems.CALLER_KEY}\r\n"
    ids = {"archive": deployment.archived_id, "upstream": deployment.upstream_id}
    sources = ["archive", "upstream"] if row.source == "mixed" else [row.source]
    boundary = "slow-bench-boundary"
    body = multipart_head(boundary)
    upload_head = (
        f"POST /v1/videos/edits HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {UPLOAD_BYTES}\r\n\r\n"
    ).encode()
    total = row.readers + row.uploaders
    started = time.monotonic()
    readers = 0
    for index in range(total):
        # Readers spread evenly among uploaders: reader number k goes at k * total / N.
        is_reader = (index + 1) * row.readers // total > index * row.readers // total
        if is_reader:
            source = sources[readers % len(sources)]
            readers += 1
            client = Client("reader", source)
            request = (
                f"GET /v1/videos/{ids[source]}/content HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n"
            ).encode()
            coro = slow_reader(port, request, client, sockets)
        else:
            client = Client("uploader", "")
            coro = slow_uploader(port, upload_head, body, client, sockets)
        clients.append(client)
        tasks.append(asyncio.create_task(coro))
        pause = started + (index + 1) / RAMP_PER_S - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
    row.ramp_s = time.monotonic() - started


async def _probe(
    deployment: Deployment, row: Scenario, clients: list[Client], probe_seconds: float
) -> list[Probe]:
    """Probe for ``probe_seconds``, sampling the workers each second; at the end, count the
    slow clients still connected and read the workers again. Returns every probe."""
    port = deployment.port
    request = (
        f"GET /v1/videos/{deployment.archived_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {systems.CALLER_KEY}\r\nConnection: close\r\n\r\n"
    ).encode()
    probes: list[asyncio.Task[Probe]] = []
    peak: dict[int, dict[str, Any]] = {}

    def sample() -> list[dict[str, Any]]:
        statuses = worker_status(deployment.workers())
        for status in statuses:
            best = peak.setdefault(status["pid"], dict(status))
            best["rss_mib"] = max(best["rss_mib"], status["rss_mib"])
            best["threads"] = max(best["threads"], status["threads"])
        return statuses

    began = time.monotonic()
    for index in range(int(probe_seconds * PROBE_PER_S)):
        probes.append(asyncio.create_task(probe_once(port, request)))
        if index % PROBE_PER_S == 0:
            sample()
        pause = began + (index + 1) / PROBE_PER_S - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
    # The end of the probing window: who is still there, what the workers hold.
    row.workers = sample()
    row.workers_peak = [peak[pid] for pid in sorted(peak)]
    readers = [c for c in clients if c.kind == "reader"]
    uploaders = [c for c in clients if c.kind == "uploader"]
    row.readers_open = sum(c.open for c in readers)
    row.readers_served = sum(c.open and c.status == 200 for c in readers)
    for source in sorted({c.source for c in readers}):
        mine = [c for c in readers if c.source == source]
        row.readers_open_by_source[source] = f"{sum(c.open for c in mine)}/{len(mine)}"
    row.uploaders_open = sum(c.open for c in uploaders)
    for c in readers:
        key = str(c.status) if c.status else ("error" if c.error else "no answer")
        row.reader_statuses[key] = row.reader_statuses.get(key, 0) + 1
    for c in uploaders:
        if c.status:
            row.uploaders_answered[str(c.status)] = row.uploaders_answered.get(str(c.status), 0) + 1
    return list(await asyncio.gather(*probes))


async def wait_recovered(deployment: Deployment, timeout: float = 60.0) -> float | None:
    """Seconds until a probe answers 200 again after the clients left (None: never)."""
    request = (
        f"GET /v1/videos/{deployment.archived_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {systems.CALLER_KEY}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        probe = await probe_once(deployment.port, request)
        if probe.status == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return None


# --- the report -----------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _per_worker(statuses: list[dict[str, Any]], key: str, digits: int = 0) -> str:
    return " / ".join(f"{s[key]:.{digits}f}" for s in statuses) or "n/a"


def verdict(row: Scenario) -> tuple[bool, str]:
    """Whether ``row`` meets its target, and why not."""
    why = []
    if row.error:
        why.append("did not run")
    if row.failures:
        why.append(f"{row.failures} probe failures")
    if row.p99_ms is None or row.p99_ms >= TARGET_P99_MS:
        why.append(f"p99 {_fmt(row.p99_ms)} ms")
    if row.readers_open < row.readers or row.uploaders_open < row.uploaders:
        why.append("slow clients dropped")
    if row.mode == "direct-gevent" and row.worker_class != "gevent":
        why.append(f"worker is {row.worker_class}, not gevent")
    return not why, ", ".join(why)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    rows = [Scenario(**r) for r in results["scenarios"]]
    lines = [
        "# Slow clients",
        "",
        f"Generated by `bench/slow_clients.py{' --quick' if meta['quick'] else ''}` on "
        f"{meta['date']}, wall time {meta['wall_s']:.0f} s; sora_proxy {meta['commit']}.",
        "",
        f"Machine: {meta['machine']}. Servers, slow clients and probe share these cores.",
        "",
        f"Readers: `GET /v1/videos/{{id}}/content` (authenticated), {READ_BYTES} bytes a "
        f"second, SO_RCVBUF {RCVBUF}, MSS {MSS}; half read a {VIDEO_BYTES >> 20} MiB video the "
        "proxy archived (`archive`), half one only the upstream has (`upstream`), unless the "
        "source says otherwise. Uploaders: `POST /v1/videos/edits` (authenticated, multipart, "
        f"Content-Length {UPLOAD_BYTES:,}), the body at 1 byte a second. Ramp: "
        f"{RAMP_PER_S} clients/s, then {SETTLE_S:.0f} s, then the probe: "
        f"`GET /v1/videos/{{id}}` {PROBE_PER_S}/s, each on a fresh connection, for "
        f"{meta['probe_seconds']:g} s; a failure is not 200 or no whole answer within "
        f"{PROBE_TIMEOUT_S:g} s, counted as {PROBE_TIMEOUT_S * 1000:.0f} ms in p50/p99. "
        "Workers: gunicorn's, RSS MiB and threads from /proc/<pid>/status at the end of the "
        "probe (peak over the probe in the JSON). Open: slow clients whose connection the "
        "server had not closed at the end of the probe (readers served: open and answered 200).",
        "",
    ]
    for mode, info in meta["modes"].items():
        lines.append(f"- `{mode}`: {info}")
    lines += [
        "",
        "| mode | worker | N | M | source | probes | p50 ms | p99 ms | failures | RSS MiB "
        "per worker | threads per worker | readers open (served) | uploaders open |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.error:
            lines.append(
                f"| {row.mode} | {row.worker_class} | {row.readers} | {row.uploaders} | "
                f"{row.source} | error: {row.error[:120]} |  |  |  |  |  |  |  |"
            )
            continue
        by_source = ", ".join(f"{k} {v}" for k, v in row.readers_open_by_source.items())
        lines.append(
            f"| {row.mode} | {row.worker_class} | {row.readers} | {row.uploaders} | "
            f"{row.source} | {row.probes} | {_fmt(row.p50_ms)} | {_fmt(row.p99_ms)} | "
            f"{row.failures} | {_per_worker(row.workers, 'rss_mib')} | "
            f"{_per_worker(row.workers, 'threads')} | "
            f"{row.readers_open}/{row.readers} ({row.readers_served})"
            f"{f'; {by_source}' if row.readers else ''} | {row.uploaders_open}/{row.uploaders} |"
        )
    lines += [
        "",
        "## Targets (issue 16)",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for mode, (n, m) in TARGETS.items():
        label = (
            f"{'through nginx' if mode == 'nginx' else 'gunicorn alone, gevent worker'}: "
            f"N = {n}, M = {m}: 0 probe failures, p99 < {TARGET_P99_MS:.0f} ms, every slow "
            "client still connected"
        )
        found = [r for r in rows if r.mode == mode and (r.readers, r.uploaders) == (n, m)]
        if not found:
            lines.append(f"| {label} | not run | n/a |")
            continue
        for row in found:
            ok, why = verdict(row)
            measured = (
                f"{row.failures} failures, p99 {_fmt(row.p99_ms)} ms, readers "
                f"{row.readers_open}/{n}, uploaders {row.uploaders_open}/{m} ({row.source}, "
                f"{row.worker_class})"
            )
            lines.append(f"| {label} | {measured} | {'PASS' if ok else f'**FAIL** ({why})'} |")
    notes = []
    for row in rows:
        bits = []
        if row.failure_kinds:
            bits.append(
                "probe failures: " + ", ".join(f"{k} {v}" for k, v in row.failure_kinds.items())
            )
        if row.readers and row.reader_statuses:
            bits.append(
                "reader answers: " + ", ".join(f"{k} {v}" for k, v in row.reader_statuses.items())
            )
        if row.uploaders_answered:
            bits.append(
                "uploaders answered early: "
                + ", ".join(f"{k} {v}" for k, v in row.uploaders_answered.items())
            )
        if row.recovered_s is None and not row.error:
            bits.append("**did not answer again within 60 s after the clients left**")
        elif row.recovered_s is not None and row.recovered_s > 1:
            bits.append(f"answered again {row.recovered_s:.1f} s after the clients left")
        if row.upstream_video_archived:
            bits.append("the upstream-only video was archived meanwhile")
        if bits:
            notes.append(
                f"- {row.mode} N={row.readers} M={row.uploaders}: " + "; ".join(bits) + "."
            )
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines.append("")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def save_logs(work: Path, target: Path) -> None:
    """Keep every server's output (the work directory is removed) in ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for log in [*work.glob("*.log"), *work.glob("*/*.log"), *work.glob("*/nginx/*.log")]:
        if log.name == "access.log" or log.name.endswith("access.log"):
            continue
        name = "-".join(log.relative_to(work).parts)
        shutil.copyfile(log, target / name)


def parse_grid(text: str) -> Grid:
    """``mode=NxM[:source],NxM;mode=...``."""
    grid: Grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        mode, _, cells = part.partition("=")
        mode = mode.strip()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        for cell in filter(None, (c.strip() for c in cells.split(","))):
            size, _, source = cell.partition(":")
            n, _, m = size.partition("x")
            source = source or "mixed"
            if source not in SOURCES:
                raise ValueError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")
            grid.setdefault(mode, []).append((int(n), int(m or 0), source))
    return grid


def _commit() -> str:
    import subprocess

    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=BENCH.parent,
            timeout=10,
        )
        return done.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_mode(
    mode: str,
    cells: list[tuple[int, int, str]],
    work: Path,
    upstream: Service,
    upstream_only: str,
    probe_seconds: float,
    results: dict[str, Any],
    stack: ExitStack,
) -> None:
    print(f"[{mode}] starting the deployment", flush=True)
    try:
        deployment = start_deployment(mode, work, f"{upstream.url}/v1", cells)
    except Exception as error:
        traceback.print_exc()
        for n, m, source in cells:
            results["scenarios"].append(
                asdict(Scenario(mode, "?", n, m, source, error=str(error).strip()[:300]))
            )
        return
    stack.callback(deployment.stop)
    try:
        prepare_videos(deployment, upstream_only)
        worker = deployment.worker_class()
        nginx = "the shipped nginx site (2 workers) in front of " if deployment.front else ""
        settings = ", ".join(f"{k}={v}" for k, v in MODES[mode].items()) or "defaults"
        results["meta"]["modes"][mode] = (
            f"{nginx}gunicorn 2 workers, worker class {worker} (from its log), {settings}"
        )
        print(f"[{mode}] worker class {worker}; video {deployment.archived_id} archived")
        for n, m, source in cells:
            row = Scenario(mode, worker, n, m, source)
            print(f"[{mode}] N={n} M={m} ({source}) ...", flush=True)
            try:
                asyncio.run(run_scenario(deployment, row, probe_seconds))
                row.recovered_s = asyncio.run(wait_recovered(deployment))
                row.upstream_video_archived = upstream_archived(deployment)
            except Exception as error:
                traceback.print_exc()
                row.error = f"{type(error).__name__}: {error}"[:300]
            results["scenarios"].append(asdict(row))
            print(
                f"[{mode}] N={n} M={m}: {row.probes} probes, p50 {_fmt(row.p50_ms)} ms, "
                f"p99 {_fmt(row.p99_ms)} ms, {row.failures} failures, readers open "
                f"{row.readers_open}/{n}, uploaders open {row.uploaders_open}/{m}, workers "
                f"RSS {_per_worker(row.workers, 'rss_mib')} MiB, threads "
                f"{_per_worker(row.workers, 'threads')}",
                flush=True,
            )
            if row.recovered_s is None and not row.error:
                print(f"[{mode}] the deployment no longer answers; skipping the rest")
                break
    except Exception as error:
        traceback.print_exc()
        done = {(r["readers"], r["uploaders"], r["source"]) for r in results["scenarios"]}
        for n, m, source in cells:
            if (n, m, source) not in done:
                results["scenarios"].append(
                    asdict(Scenario(mode, "?", n, m, source, error=str(error).strip()[:300]))
                )
    finally:
        logs = results["meta"].setdefault("logs", {})
        logs[mode] = deployment.gunicorn.log_tail(15)
        deployment.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid, 5 s of probing")
    parser.add_argument("--modes", default="", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument(
        "--grid",
        default="",
        help='scenarios per mode, e.g. "nginx=1024x256,64x0:archive;direct-gevent=256x0" '
        "(source: mixed, archive or upstream; default mixed)",
    )
    parser.add_argument("--probe-seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="slow_clients", help="file stem of the .md and .json")
    parser.add_argument("--label", default="", help="what tree this is, for the report's header")
    args = parser.parse_args()
    try:
        grid = parse_grid(args.grid) if args.grid else (QUICK_GRID if args.quick else DEFAULT_GRID)
    except ValueError as error:
        parser.error(str(error))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] or list(grid)
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    probe_seconds = args.probe_seconds or (5.0 if args.quick else 15.0)
    signal.signal(signal.SIGTERM, _interrupt)
    limit = raise_nofile()
    most = max((n + m for cells in grid.values() for n, m, _ in cells), default=0)
    if limit < most + 256:
        print(f"warning: open-file limit {limit} is below {most + 256}", flush=True)
    began = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": args.quick,
            "machine": _machine(),
            "commit": args.label or _commit(),
            "probe_seconds": probe_seconds,
            "nofile": limit,
            "modes": {},
        },
        "scenarios": [],
    }
    work = Path(tempfile.mkdtemp(prefix="sora-slow-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        stack.callback(save_logs, work, args.out / "logs" / args.name)
        ids_file = work / "upstream-ids.json"
        port = free_port()
        upstream = Service(
            "simulator (large videos)",
            [
                sys.executable,
                str(BENCH / "large_upstream.py"),
                "--port",
                str(port),
                "--api-key",
                systems.UPSTREAM_KEY,
                "--large",
                str(VIDEO_BYTES),
                "--ids",
                str(ids_file),
            ],
            port,
            work / "upstream.log",
            env=systems._env({}),
        )
        stack.callback(upstream.stop)
        deadline = time.monotonic() + 30
        while not ids_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        upstream_only = json.loads(ids_file.read_text())["upstream_only"]
        for mode in modes:
            cells = grid.get(mode, [])
            if cells:
                run_mode(mode, cells, work, upstream, upstream_only, probe_seconds, results, stack)
    results["meta"]["wall_s"] = time.monotonic() - began
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / f"{args.name}.md").write_text(text)
    print("\n" + text)
    print(f"wrote {args.out / (args.name + '.md')} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
