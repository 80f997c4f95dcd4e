"""Load generators: ``wrk`` for retrieve, small Python clients for create, download, upload.

The download and upload clients use ``http.client`` with 1 MiB buffers (``readinto`` into one
preallocated buffer, ``send`` of one repeated block), so on loopback the client is not what
limits the figure (see the upstream-alone row). Every request has a timeout, every loop a
bound.
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

MIB = 1024 * 1024
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms), and how many answers were not 2xx."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    total = re.search(r"(\d+) requests in", output)
    if not (rps and p50 and p99 and total):
        raise ValueError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def run_wrk(
    url: str, headers: dict[str, str], *, connections: int, seconds: int, threads: int = 2
) -> WrkResult:
    """``wrk -t{threads} -c{connections} -d{seconds}s --latency`` against ``url``."""
    argv = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    return parse_wrk(done.stdout)


@dataclass(frozen=True)
class Timed:
    """A series of timed requests: latencies (ms) and the status codes seen."""

    latencies_ms: list[float]
    statuses: list[int]
    detail: str = ""

    @property
    def median_ms(self) -> float:
        """Median latency."""
        return statistics.median(self.latencies_ms)

    @property
    def ok(self) -> bool:
        """Every request answered 2xx."""
        return all(200 <= status < 300 for status in self.statuses)


def timed_posts(url: str, headers: dict[str, str], count: int, **kwargs: object) -> Timed:
    """POST ``count`` times with one ``requests`` session; ``kwargs`` go to ``post``."""
    latencies, statuses, detail = [], [], ""
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            response = session.post(url, headers=headers, timeout=120, **kwargs)  # type: ignore[arg-type]
            latencies.append((time.perf_counter() - started) * 1000)
            statuses.append(response.status_code)
            if not response.ok and not detail:
                detail = response.text[:300]
    return Timed(latencies, statuses, detail)


def create_video(base: str, headers: dict[str, str], *, attempts: int = 120) -> str:
    """Create a text-only video through ``base`` and return its id (as that system names it).

    Retried for up to ``attempts`` x 1 s: multi-worker servers listen before their workers
    can answer.
    """
    body = {"prompt": "A paper boat in the rain", "model": "sora-2", "size": "1280x720"}
    last = ""
    for _ in range(attempts):
        try:
            response = requests.post(f"{base}/v1/videos", json=body, headers=headers, timeout=30)
            if response.ok:
                video_id: str = response.json()["id"]
                return video_id
            last = f"{response.status_code} {response.text[:300]}"
        except requests.RequestException as error:
            last = str(error)
        time.sleep(1)
    raise RuntimeError(f"could not create a video through {base}: {last}")


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=timeout
    )
    return connection, parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass(frozen=True)
class Transfer:
    """One big transfer: status, bytes moved, seconds taken, the first bytes of any answer."""

    status: int
    nbytes: int
    seconds: float
    detail: str = ""

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10^6 bytes)."""
        return self.nbytes / 1e6 / self.seconds if self.seconds else 0.0


def download(url: str, headers: dict[str, str], *, timeout: float = 600) -> Transfer:
    """GET ``url`` and read the body into one reused 1 MiB buffer; time to last byte."""
    connection, path = _connection(url, timeout)
    buffer = memoryview(bytearray(MIB))
    started = time.perf_counter()
    try:
        connection.request("GET", path, headers={**headers, "Accept": "application/binary"})
        response = connection.getresponse()
        received = 0
        head = b""
        while True:
            count = response.readinto(buffer)
            if not count:
                break
            if received < 300:
                head += bytes(buffer[: min(count, 300)])
            received += count
        elapsed = time.perf_counter() - started
        detail = "" if 200 <= response.status < 300 else head[:300].decode(errors="replace")
        return Transfer(response.status, received, elapsed, detail)
    finally:
        connection.close()


def multipart_video(
    boundary: str, size: int, block: bytes, fields: dict[str, str]
) -> tuple[bytes, bytes, int]:
    """Head and tail of a multipart body with text ``fields`` and a ``size``-byte video part."""
    head = (
        b"".join(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
            for name, value in fields.items()
        )
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; '
            'filename="bench.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        ).encode()
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, len(head) + size + len(tail)


def _blocks(size: int, block: bytes) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        piece = block if size - sent >= len(block) else block[: size - sent]
        yield piece
        sent += len(piece)


def upload(
    url: str,
    headers: dict[str, str],
    size: int,
    block: bytes,
    fields: dict[str, str],
    *,
    timeout: float = 600,
) -> Transfer:
    """POST a multipart body with a ``size``-byte video made of ``block`` and a Content-Length;
    time from the first byte sent to the whole answer read."""
    boundary = "sora-bench-boundary-7d1f"
    head, tail, length = multipart_video(boundary, size, block, fields)
    connection, path = _connection(url, timeout)
    started = time.perf_counter()
    try:
        connection.putrequest("POST", path)
        for name, value in {
            **headers,
            "Content-Length": str(length),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }.items():
            connection.putheader(name, value)
        connection.endheaders()
        sent_all = True
        try:
            connection.send(head)
            for piece in _blocks(size, block):
                connection.send(piece)
            connection.send(tail)
        except OSError:
            sent_all = False  # the server answered early (an error) and closed: read it
        response = connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        detail = "" if sent_all else "server closed the connection before the body was sent: "
        if not 200 <= response.status < 300:
            detail += answer[:300].decode(errors="replace")
        else:
            json.loads(answer)  # a Video object, or the figure means nothing
        return Transfer(response.status, size, elapsed, detail)
    finally:
        connection.close()
