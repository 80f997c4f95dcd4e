"""Peak resident memory of a server's processes during one transfer, sampled from /proc.

Adapted from ``bench/memory.py`` (same VmRSS reading, every 20 ms) to servers with several
worker processes: each process is sampled on its own, and the figure reported is that of the
*serving* process, the one whose RSS grew most during the transfer (for gunicorn, nginx or
uvicorn workers that is the worker that took the request; a master does not serve).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

INTERVAL_S = 0.02


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes; 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class RssResult:
    """The serving process's RSS before the transfer and at its peak, in bytes."""

    pid: int
    before: int
    peak: int

    @property
    def growth(self) -> int:
        """Peak minus before."""
        return self.peak - self.before


class Sampler:
    """Samples several processes' RSS in a thread while the ``with`` block runs."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = list(pids)
        self.before = {pid: rss_bytes(pid) for pid in self.pids}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid))
            time.sleep(INTERVAL_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def serving(self) -> RssResult:
        """The process that grew most (ties: the larger one)."""
        if not self.pids:
            return RssResult(0, 0, 0)
        pid = max(self.pids, key=lambda p: (self.peak[p] - self.before[p], self.peak[p]))
        return RssResult(pid, self.before[pid], self.peak[pid])
