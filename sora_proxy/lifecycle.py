"""A video's way to its end: one poll of its upstream, and what follows a terminal state.

Both the background tracker and a retrieve that finds the tracker behind call :func:`advance`,
always while holding the video's ``poll:`` task lease (:mod:`sora_proxy.tracker`), so one
worker at a time asks the upstream about a video and one writes its terminal state. Reaching
``completed`` or ``failed`` (or the job timeout) schedules the follow-ups once: the archive copy
and the webhook event (the store's ``schedule`` ignores a key it already has).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import Headers

from .client import forwarded_headers
from .errors import ProxyError
from .store import OwnedResource, Task
from .streaming import parse_object, read_answer, retry_after_seconds
from .videos import POLL_AFTER_HEADER, UNFINISHED, video_object

if TYPE_CHECKING:
    from .catalog import Upstream
    from .extension import ProxyState

log = logging.getLogger("sora_proxy.tracker")

#: Finished tasks are remembered this long, so a follow-up is never scheduled twice.
KEEP_DONE = 30 * 86400.0
#: Polls answered "not found" in a row before a job counts as lost upstream.
LOST_AFTER = 3
#: Longest pause between two polls after failed ones.
MAX_BACKOFF = 60.0


def poll_key(video_id: str) -> str:
    """The tracker task that polls ``video_id``."""
    return f"poll:{video_id}"


@dataclass(frozen=True)
class PollOutcome:
    """What one poll said.

    :param video: the video object to keep (``None``: nothing new, the stored one stands).
    :param handle: the upstream handle to keep (proxy-owned videos).
    :param wait: seconds before the next poll is worth making (the upstream's hint, a
        ``Retry-After``, or the poll interval).
    :param failed: the poll itself failed (network, 5xx, a 429): back off.
    :param missing: the upstream answered 404: it does not know the job (any more).
    """

    video: dict[str, Any] | None
    handle: dict[str, Any] | None
    wait: float
    failed: bool = False
    missing: bool = False


def poll_once(
    state: ProxyState, record: OwnedResource, upstream: Upstream, *, interval: float
) -> PollOutcome:
    """Ask ``upstream`` once about ``record``'s video, with the upstream's own credentials."""
    dialect = upstream.dialect
    handle = record.handle
    path = dialect.poll_path(upstream, handle) if handle else f"/videos/{record.resource_id}"
    try:
        response = state.client.send(
            upstream, "GET", path, headers=forwarded_headers(Headers(), read_whole=True)
        )
        status, headers, body = read_answer(response, method="GET")
    except ProxyError as error:
        log.warning("polling %s on %s failed (%s)", record.resource_id, upstream.name, error.code)
        return PollOutcome(None, None, interval, failed=True)
    said = Headers(headers)
    if status == 429:
        return PollOutcome(None, None, _retry_after(said, interval), failed=True)
    wait = max(interval, _poll_after(said))
    if handle is None:  # the upstream speaks OpenAI's shape: its object is the video
        if status >= 500:
            return PollOutcome(None, None, _retry_after(said, interval), failed=True)
        latest = parse_object(dialect.present(upstream, body)) if status == 200 else None
        if latest is None or latest.get("id") != record.resource_id:
            return PollOutcome(None, None, wait, failed=status != 404, missing=status == 404)
        return PollOutcome(latest, None, wait)
    # The dialect reads its own error answers first (Gemini's 404 is an expired operation,
    # vLLM-Omni answers a failed job with a 500 that carries it).
    job = dialect.read_poll(upstream, status, body)
    if job is None:
        if status >= 500:
            return PollOutcome(None, None, _retry_after(said, interval), failed=True)
        return PollOutcome(None, None, wait, failed=status != 404, missing=status == 404)
    known = record.last_object or {}
    video = video_object(record.resource_id, job, known.get("model"), known=known)
    merged = {**handle, **{k: v for k, v in job.handle().items() if v}}
    return PollOutcome(video, merged, wait)


def advance(state: ProxyState, task: Task) -> float | None:
    """One step of ``task``'s video: poll it (unless it is finished or timed out), keep what
    the upstream said, and on a terminal state schedule the follow-ups.

    :returns: when to poll again (seconds since the epoch), or ``None`` when the video needs
        no more polling (finished, timed out, deleted, lost). Counts of failed polls are kept
        in ``task.payload``, which the tracker stores with the task.
    """
    assert state.records is not None
    records = state.records
    video_id = task.payload["video_id"]
    record = records.store.get(video_id)
    if record is None:
        return None  # deleted meanwhile
    now = time.time()
    deadline = record.created_at + state.settings.job_timeout + 0.01
    stored = record.last_object or {}
    if stored.get("status") not in UNFINISHED:
        finished(state, record)  # a step that died after writing it: the follow-ups remain
        return None
    upstream = state.catalog.upstreams.get(record.upstream)
    if upstream is None:
        log.error("video %s is on upstream %r, no longer configured", video_id, record.upstream)
        return None
    if now > deadline:
        _end(state, record, _failed(stored, "timeout", _timeout_message(state)))
        return None
    outcome = poll_once(state, record, upstream, interval=state.settings.poll_interval)
    _count_poll(state, upstream.name, outcome)
    if outcome.missing:
        misses = int(task.payload.get("misses", 0)) + 1
        if misses >= LOST_AFTER:
            message = "The upstream no longer knows this video."
            _end(state, record, _failed(stored, "upstream_job_lost", message))
            return None
        task.payload["misses"] = misses
        return min(now + outcome.wait, deadline)
    task.payload.pop("misses", None)
    if outcome.video is None:
        failures = int(task.payload.get("failures", 0)) + 1 if outcome.failed else 0
        task.payload["failures"] = failures
        backoff = min(MAX_BACKOFF, outcome.wait * 2.0 ** max(failures - 1, 0))
        return min(now + max(outcome.wait, backoff), deadline)
    task.payload.pop("failures", None)
    updated = dataclasses.replace(record, last_object=outcome.video, handle=outcome.handle)
    if outcome.video.get("status") in UNFINISHED:
        try:
            records.store.record(updated)
        except ProxyError:
            log.warning("could not keep a polled video's state; polling again later")
        # Never past the moment it times out, whatever pause the upstream asked for.
        return min(now + outcome.wait, deadline)
    _end(state, record, outcome.video, handle=outcome.handle)
    return None


def _end(
    state: ProxyState,
    record: OwnedResource,
    video: dict[str, Any],
    *,
    handle: dict[str, Any] | None = None,
) -> None:
    """Keep the terminal ``video`` (durably) and schedule what follows it."""
    assert state.records is not None
    ended = dataclasses.replace(record, last_object=video, handle=handle or record.handle)
    state.records.writes.record(ended)
    log.info(
        "video %s ended %s%s",
        record.resource_id,
        video.get("status"),
        f" ({(video.get('error') or {}).get('code')})" if video.get("error") else "",
    )
    if state.metrics is not None:
        state.metrics.videos_ended.labels(record.upstream, str(video.get("status"))).inc()
    finished(state, ended)


def finished(state: ProxyState, record: OwnedResource) -> None:
    """Settle ``record``'s budget hold, and schedule its follow-ups (all idempotent): its
    archive copy when it completed, its webhook event when its caller has an endpoint."""
    assert state.records is not None
    state.budgets.ended(record)
    video = record.last_object or {}
    status = video.get("status")
    now = time.time()
    writes = state.records.writes
    if status == "completed" and state.archive is not None:
        key, copy = f"archive:{record.resource_id}", {"video_id": record.resource_id}
        writes.schedule(key, "archive", copy, due_at=now, keep_done=KEEP_DONE)
    if status in ("completed", "failed") and state.profiles.webhook_for(record.owner):
        event_type = f"video.{status}"
        event: dict[str, Any] = {
            "video_id": record.resource_id,
            "owner": record.owner,
            "type": event_type,
            "created_at": int(now),
        }
        key = f"webhook:{record.resource_id}:{event_type}"
        writes.schedule(key, "webhook", event, due_at=now, keep_done=KEEP_DONE)


def _failed(stored: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {**stored, "status": "failed", "error": {"code": code, "message": message}}


def _timeout_message(state: ProxyState) -> str:
    return f"The video did not finish within {state.settings.job_timeout:g} seconds."


def _count_poll(state: ProxyState, upstream: str, outcome: PollOutcome) -> None:
    if state.metrics is None:
        return
    result = "missing" if outcome.missing else "failed" if outcome.failed else "ok"
    state.metrics.tracker_polls.labels(upstream, result).inc()


def _poll_after(headers: Headers) -> float:
    """The upstream's ``openai-poll-after-ms`` hint, in seconds (0 without one)."""
    value = headers.get(POLL_AFTER_HEADER, "")
    return int(value) / 1000 if value.isdigit() else 0.0


def _retry_after(headers: Headers, default: float) -> float:
    """A ``Retry-After`` in seconds (at least ``default``, at most an hour)."""
    seconds = retry_after_seconds(headers.get("Retry-After"), time.time())
    return default if seconds is None else max(default, min(seconds, 3600.0))
