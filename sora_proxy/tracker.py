"""The tracker: background work leased from the store, so every video is followed to its end.

Each gunicorn worker runs one (started by ``config/gunicorn.conf.py``'s ``post_worker_init``
hook, or on the worker's first proxy request); ``sora-proxy tracker`` runs one on its own. They
all take tasks from the same store (:meth:`~sora_proxy.store.Store.claim_tasks`): a task is
leased to one tracker at a time and the lease is renewed while it runs, so a video is polled,
archived or announced by one worker at a time across hosts, and a worker that dies mid-task
(SIGKILL) only delays it until its lease runs out.

Tasks: ``poll:<video>`` (:func:`sora_proxy.lifecycle.advance`), ``archive:<video>``
(:func:`sora_proxy.archiving.archive_video`), ``webhook:<video>:<type>``
(:func:`sora_proxy.deliveries.deliver_event`). Each returns when it wants to run again, or
``None`` when it is done.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from . import archiving, deliveries, lifecycle
from .errors import ProxyError
from .store import Task
from .streaming import parse_object
from .videos import UNFINISHED

if TYPE_CHECKING:
    from .catalog import Upstream
    from .extension import ProxyState

log = logging.getLogger("sora_proxy.tracker")

#: Seconds between two looks for due tasks when there was nothing to do.
IDLE_PAUSE = 0.25
#: Seconds between two sweeps of the archive (retention, size cap, abandoned partial files).
SWEEP_EVERY = 600.0
#: Seconds to wait after the store failed before asking it again.
STORE_DOWN_PAUSE = 2.0

Step = Callable[["ProxyState", Task], "float | None"]
_STEPS: dict[str, Step] = {
    "poll": lifecycle.advance,
    "archive": archiving.archive_video,
    "webhook": deliveries.deliver_event,
}


def follows(state: ProxyState, upstream: Upstream) -> bool:
    """True when trackers follow ``upstream``'s videos (in the workers or apart): tracking is
    on, a store keeps records, and the proxy holds the upstream's key (it cannot poll with a
    caller's own)."""
    return (
        state.settings.tracker != "off"
        and state.records is not None
        and upstream.api_key is not None
    )


def track(state: ProxyState, upstream: Upstream, video: dict[str, object] | bytes) -> None:
    """Start following a video an upstream just accepted (never raises: the write is
    durable, spooled if the store is down)."""
    if not follows(state, upstream):
        return
    assert state.records is not None
    created = parse_object(video) if isinstance(video, bytes) else video
    if not created or not isinstance(created.get("id"), str):
        return
    if created.get("status") not in UNFINISHED:
        return
    payload = {"video_id": created["id"]}
    # The first poll waits one interval: the create's answer is the state until then.
    due_at = time.time() + state.settings.poll_interval
    state.records.writes.schedule(
        lifecycle.poll_key(str(created["id"])),
        "poll",
        payload,
        due_at=due_at,
        keep_done=lifecycle.KEEP_DONE,
    )


def run_step(state: ProxyState, task: Task) -> None:
    """Run one leased task and hand it back: done, or due again when its step says."""
    assert state.records is not None
    store = state.records.store
    step = _STEPS.get(task.kind)
    try:
        due_at = step(state, task) if step is not None else None
    except Exception:
        # Counted apart from attempts, which count every claim (a poll task has many).
        errors = int(task.payload.get("errors", 0)) + 1
        task.payload["errors"] = errors
        log.exception("tracker task %s failed (%d time(s)); retrying later", task.key, errors)
        due_at = time.time() + min(600.0, 5.0 * 2 ** min(errors, 7))
    try:
        if due_at is None:
            store.finish_task(task.key, task.token, keep_done=lifecycle.KEEP_DONE)
        else:
            store.reschedule(task.key, task.token, due_at=due_at, payload=task.payload)
    except ProxyError:
        # The lease runs out and another tracker takes the task again: nothing is lost.
        log.warning("could not hand tracker task %s back to the store", task.key)


class Tracker:
    """One process's tracker: a loop that leases due tasks and runs them on a small pool,
    renewing the leases of the running ones. It lives in the :class:`ProxyState` it works
    for, which is handed to :meth:`ensure_running`."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[str, str]] = {}  # task key -> (lease token, kind)
        self._lock = threading.Lock()
        self._pid = -1
        self._stop = threading.Event()
        self._last_sweep = 0.0
        self.state: ProxyState

    def ensure_running(self, state: ProxyState) -> None:
        """Start this process's loop for ``state`` in a daemon thread unless it runs already
        (fork-safe: a forked worker starts its own)."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._pid = pid
            self.state = state
            self._running = {}
            self._stop = threading.Event()
            thread = threading.Thread(target=self.run, name="sora-proxy-tracker", daemon=True)
            thread.start()
            log.info("tracker started in process %d", pid)

    def run_in_foreground(self, state: ProxyState) -> None:
        """Run the loop for ``state`` in this thread until :meth:`stop` (``sora-proxy
        tracker``)."""
        with self._lock:
            self._pid, self.state = os.getpid(), state
        self.run()

    def stop(self) -> None:
        """Ask the loop to stop after the tasks it runs (tests, the CLI on SIGTERM)."""
        self._stop.set()

    def run(self) -> None:
        """The loop: runs until :meth:`stop`."""
        settings = self.state.settings
        with ThreadPoolExecutor(settings.tracker_concurrency, "sora-proxy-task") as pool:
            last_renewal = time.monotonic()
            while not self._stop.is_set():
                claimed = self._claim(pool)
                if time.monotonic() - last_renewal > settings.tracker_lease / 3:
                    self._renew_leases()
                    last_renewal = time.monotonic()
                self._sweep_archive()
                if not claimed:
                    self._stop.wait(IDLE_PAUSE)

    def _claim(self, pool: ThreadPoolExecutor) -> int:
        """Lease as many due tasks as there are free threads; start them. How many.

        Copies into the archive are slow (whole videos, thumbnails made), so they may take at
        most half the threads: polls and deliveries, which are quick and which callers
        wait for, always find one free.
        """
        assert self.state.records is not None
        settings = self.state.settings
        with self._lock:
            free = settings.tracker_concurrency - len(self._running)
            copying = sum(1 for _, kind in self._running.values() if kind == "archive")
        if free <= 0:
            return 0
        copy_slots = max(1, settings.tracker_concurrency // 2) - copying
        try:
            tasks = self._lease(("poll", "webhook"), free)
            if copy_slots > 0 and len(tasks) < free:
                tasks += self._lease(("archive",), min(copy_slots, free - len(tasks)))
        except ProxyError:
            log.warning("tracker: the store is unavailable; trying again shortly")
            self._stop.wait(STORE_DOWN_PAUSE)
            return 0
        for task in tasks:
            with self._lock:
                self._running[task.key] = (task.token, task.kind)
            pool.submit(self._run, task)
        return len(tasks)

    def _lease(self, kinds: tuple[str, ...], limit: int) -> list[Task]:
        assert self.state.records is not None
        return self.state.records.store.claim_tasks(
            now=time.time(), lease=self.state.settings.tracker_lease, limit=limit, kinds=kinds
        )

    def _run(self, task: Task) -> None:
        try:
            run_step(self.state, task)
        finally:
            with self._lock:
                self._running.pop(task.key, None)

    def _renew_leases(self) -> None:
        assert self.state.records is not None
        with self._lock:
            running = list(self._running.items())
        until = time.time() + self.state.settings.tracker_lease
        for key, (token, _) in running:
            try:
                if not self.state.records.store.extend_lease(key, token, until=until):
                    log.warning("tracker task %s lost its lease while running", key)
            except ProxyError:
                log.warning("could not renew the lease of tracker task %s", key)

    def _sweep_archive(self) -> None:
        """Apply the archive's retention and size cap now and then."""
        archive = self.state.archive
        now = time.time()
        if archive is None or now - self._last_sweep < SWEEP_EVERY:
            return
        self._last_sweep = now
        archiving.sweep(self.state)


#: Proxies built in this process whose trackers start in each worker after gunicorn forks it.
_REGISTERED: list[ProxyState] = []


def register(state: ProxyState) -> None:
    """Remember ``state`` for :func:`start_registered`."""
    _REGISTERED.append(state)


def stop_all() -> None:
    """Stop the trackers of every proxy built in this process and forget them (a host app's
    shutdown, a test's teardown); each finishes the tasks it is running."""
    for state in _REGISTERED:
        if state.tracker is not None:
            state.tracker.stop()
    _REGISTERED.clear()


def start_registered() -> None:
    """Start the tracker of every proxy built in this process (gunicorn's
    ``post_worker_init``), so videos are followed even in a worker no request reached."""
    for state in _REGISTERED:
        if state.tracker is not None:
            state.tracker.ensure_running(state)
