"""Proxy-owned videos: for upstreams whose answers are not OpenAI ``video`` objects.

The proxy is the source of truth: a create mints its own ``video_…`` id and keeps, in the
store, the upstream's handle (job id, polling URL, result URLs) beside the ``video`` object
the caller sees. A retrieve asks the upstream at most once per poll interval per video,
whoever polls (the store's :meth:`~sora_proxy.store.Store.claim_poll` decides across workers
and hosts); in between, the stored object answers. No upstream status word reaches a caller
(:mod:`sora_proxy.dialects.statuses`). Content comes from the upstream's content endpoint with
its credentials, or from a result URL fetched with none, under ``fetch.py``'s rules.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import Any

import requests
from flask import Response
from werkzeug.datastructures import Headers

from . import tracker
from .catalog import Upstream
from .client import UpstreamClient, forwarded_headers
from .dialects import JobState
from .errors import Conflict, NotFound, ProxyError, ReferenceFetchFailed, UpstreamUnreachable
from .extension import ProxyState, Records
from .fetch import FetchPolicy, open_url
from .handoff import PROBE_RANGE, Handoff, result_target, scrubbed
from .lifecycle import poll_key, poll_once
from .store import OwnedResource
from .streaming import (
    CHUNK_SIZE,
    RelayedResponse,
    StreamedBody,
    read_answer,
    small_answer,
    stream_back,
)
from .videos import POLL_AFTER_HEADER, UNFINISHED, new_video_id, video_object

log = logging.getLogger("sora_proxy.jobs")

#: How overdue a video's poll task must be before a retrieve polls in the tracker's place.
_TRACKER_GRACE = 1.0

#: Response headers of a result URL worth passing on (the rest is the result host's business).
_RESULT_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)


def record_created(
    records: Records,
    owner: str,
    upstream: Upstream,
    job: JobState,
    caller_model: str | None,
    asked: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Mint an id for a job the upstream accepted, record it (durably), return its object.

    :param asked: the request's ``prompt``, ``size`` and ``seconds``, shown where the
        upstream's answer does not say them.
    """
    asked = asked or {}
    known = {name: asked[name] for name in ("prompt", "size", "seconds") if name in asked}
    video = video_object(new_video_id(), job, caller_model, known)
    records.writes.record(
        OwnedResource(
            video["id"], owner, upstream.name, "video", time.time(), video, handle=job.handle()
        )
    )
    return video


def retrieve(state: ProxyState, record: OwnedResource, upstream: Upstream) -> Response:
    """The video as the store knows it, refreshed from the upstream at most every poll
    interval (and never once it is finished).

    With the tracker following the upstream, the tracker keeps the record fresh; a retrieve
    polls only when the tracker is behind (the video's ``poll:`` task is overdue), taking
    that task's lease so that the upstream is still asked by one worker at a time.
    """
    assert state.records is not None
    store = state.records.store
    video = dict(record.last_object or {})
    interval = poll_after = state.settings.poll_interval
    if video.get("status") in UNFINISHED:
        if tracker.follows(state, upstream):
            task = store.claim_task(
                poll_key(record.resource_id),
                now=time.time() - _TRACKER_GRACE,
                lease=state.settings.tracker_lease + _TRACKER_GRACE,
            )
            if task is not None:
                tracker.run_step(state, task)
                video = dict((store.get(record.resource_id) or record).last_object or video)
            elif time.time() - record.created_at > interval + state.settings.tracker_lease:
                # Made before the tracker was on, or its task lost: follow it from now on
                # (a no-op for a video whose task exists).
                tracker.track(state, upstream, video)
        elif record.handle is not None and store.claim_poll(record.resource_id, interval=interval):
            video, poll_after = _poll(state, record, upstream)
    return _json(video, headers={POLL_AFTER_HEADER: str(int(poll_after * 1000))})


def _poll(
    state: ProxyState, record: OwnedResource, upstream: Upstream
) -> tuple[dict[str, Any], float]:
    """Ask the upstream once (no tracker); keep what it said. A failed poll leaves the
    stored state. Returns the video and the seconds before polling again is worth it."""
    assert state.records is not None
    outcome = poll_once(state, record, upstream, interval=state.settings.poll_interval)
    if outcome.video is None:
        return dict(record.last_object or {}), outcome.wait
    try:
        updated = dataclasses.replace(record, last_object=outcome.video, handle=outcome.handle)
        state.records.store.record(updated)
    except ProxyError:
        log.warning("could not keep a polled job's state; answered anyway")
    return outcome.video, outcome.wait


def content(
    client: UpstreamClient,
    record: OwnedResource,
    upstream: Upstream,
    incoming: Headers,
    *,
    method: str,
    variant: str,
    allow_private: bool,
    handoff: Handoff | None = None,
) -> Response:
    """A finished video's bytes (Range passed on): from the upstream's content endpoint with
    its credentials, or from a result URL with none.

    :param handoff: this request's hand-off to nginx, if it has one. The source is then
        asked for its first byte only (a probe: its errors, redirects and the error-document
        check decided here as always), and nginx fetches the caller's bytes from it.
    """
    video = record.last_object or {}
    if video.get("status") != "completed":
        raise Conflict(
            f"Video '{record.resource_id}' is not ready: its status is {video.get('status')}.",
            param="video_id",
            code="video_not_ready",
        )
    assert record.handle is not None
    source = upstream.dialect.content_source(upstream, record.handle, variant)
    if source is None:
        raise NotFound(
            f"The upstream '{upstream.name}' makes no {variant} for its videos.",
            param="variant",
            code="variant_unavailable",
        )
    if source.url is not None:
        return _from_result_url(
            source.url, incoming, method=method, allow_private=allow_private, handoff=handoff
        )
    assert source.path is not None
    headers = forwarded_headers(incoming, read_whole=True)
    probe = {"Accept-Encoding": "identity", "Range": PROBE_RANGE}
    response = client.send(
        upstream, method, source.path, headers=headers if handoff is None else probe
    )
    if response.status_code >= 400 and response.status_code != 416:
        # The upstream's refusal (gone, not ready) in the caller's envelope, not its own words.
        status, answer_headers, body = read_answer(response, method="GET")
        error = upstream.dialect.read_error(upstream, status, body)
        if error is not None:
            raise error
        return small_answer(status, answer_headers, body)
    answer = _checked_video(response, method)
    if handoff is None:
        return answer
    answer.close()
    handed = handoff.upstream(upstream, source.path, location="fetch")
    if handed is not None:
        return handed
    # Credentials nginx cannot carry: the caller's own request after all, streamed here.
    return _checked_video(client.send(upstream, method, source.path, headers=headers), method)


def _checked_video(response: requests.Response, method: str) -> Response:
    """Refuse a "video" that is a JSON error document (a gateway's not-ready answer served as
    a 200 labelled ``video/mp4``): its first byte tells, before anything reaches the caller."""
    answer = scrubbed(stream_back(response, method=method))
    body = answer.response
    if method != "HEAD" and response.status_code < 300 and isinstance(body, StreamedBody):
        if body.peek(1)[:1] in (b"{", b"["):
            body.close()
            raise UpstreamUnreachable(
                "The upstream answered the video with an error document.",
                code="upstream_bad_content",
            )
    return answer


def _from_result_url(
    url: str,
    incoming: Headers,
    *,
    method: str,
    allow_private: bool,
    handoff: Handoff | None = None,
) -> Response:
    """Stream a result URL (no credentials, SSRF rules) with the caller's Range; with a
    hand-off, probe it and let nginx fetch the final hop's URL from the address checked."""
    policy = FetchPolicy(max_bytes=1 << 40, allow_private=allow_private, deadline=3600.0)
    wanted = {name: incoming[name] for name in ("Range", "If-Range") if name in incoming}
    if handoff is not None:
        wanted = {"Range": PROBE_RANGE}
    stack = ExitStack()
    try:
        fetched = stack.enter_context(open_url(url, policy, param="video_id", headers=wanted))
    except ReferenceFetchFailed as error:
        # Not the caller's URL: the upstream's link is gone (expired) or unreachable.
        log.warning("fetching a result URL failed (%s)", error.message)
        raise UpstreamUnreachable(
            "The upstream's copy of this video could not be fetched (it may have expired).",
            code="upstream_result_unavailable",
        ) from None
    if handoff is not None:
        with stack:
            return handoff.target(result_target(fetched.url, fetched.address), "fetch")
    headers = [(name, fetched.headers[name]) for name in _RESULT_HEADERS if name in fetched.headers]

    def body() -> Iterator[bytes]:
        with stack:
            yield from fetched.iter_chunks(CHUNK_SIZE)

    if method == "HEAD":
        stack.close()
        return RelayedResponse([], status=fetched.status, headers=headers)
    return RelayedResponse(body(), status=fetched.status, headers=headers, direct_passthrough=True)


def delete_upstream(
    client: UpstreamClient, record: OwnedResource, upstream: Upstream, incoming: Headers
) -> None:
    """Delete the job upstream where the dialect can; a failure is logged, not answered (the
    proxy forgets the video either way)."""
    if "delete" not in upstream.dialect.operations or record.handle is None:
        return
    headers = forwarded_headers(incoming, read_whole=True)
    try:
        response = client.send(
            upstream, "DELETE", f"/videos/{record.handle['id']}", headers=headers
        )
        status, _, _ = read_answer(response, method="DELETE")
    except ProxyError as error:
        log.warning("deleting a %s job upstream failed (%s)", upstream.name, error.code)
        return
    if status >= 400 and status != 404:
        log.warning("deleting a %s job upstream answered HTTP %d", upstream.name, status)


def deleted(video_id: str) -> Response:
    """OpenAI's answer to a delete."""
    return _json({"id": video_id, "object": "video.deleted", "deleted": True})


def _json(data: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    response = Response(json.dumps(data), mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
