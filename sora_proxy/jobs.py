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
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import Any

import requests
from flask import Response
from werkzeug.datastructures import Headers

from .catalog import Upstream
from .client import UpstreamClient, forwarded_headers
from .dialects import JobState
from .errors import Conflict, NotFound, ProxyError, ReferenceFetchFailed, UpstreamUnreachable
from .extension import Records
from .fetch import FetchPolicy, open_url
from .store import OwnedResource
from .streaming import (
    CHUNK_SIZE,
    RelayedResponse,
    StreamedBody,
    read_answer,
    small_answer,
    stream_back,
)

log = logging.getLogger("sora_proxy.jobs")

POLL_AFTER_HEADER = "openai-poll-after-ms"
#: Response headers of a result URL worth passing on (the rest is the result host's business).
_RESULT_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)
_UNFINISHED = ("queued", "in_progress")


def new_video_id() -> str:
    """A fresh id in OpenAI's form (``video_`` and 32 hex digits)."""
    return f"video_{secrets.token_hex(16)}"


def video_object(
    video_id: str,
    job: JobState,
    caller_model: str | None,
    known: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The caller's ``video`` object for ``job``: the proxy's id, the caller's model name, and
    what is ``known`` already (the request's prompt, size, seconds; the last state) wherever
    the upstream's answer is silent."""
    video = {"id": video_id, "object": "video", **job.video}
    for name, value in (known or {}).items():
        # The error is the job's to say: a stale one must not outlive a retry upstream.
        if video.get(name) is None and name != "error":
            video[name] = value
    video["id"] = video_id
    if caller_model is not None:
        video["model"] = caller_model
    return video


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


def retrieve(
    records: Records,
    client: UpstreamClient,
    record: OwnedResource,
    upstream: Upstream,
    incoming: Headers,
    *,
    interval: float,
) -> Response:
    """The video as the store knows it, refreshed from the upstream at most every
    ``interval`` seconds (and never once it is finished)."""
    video = dict(record.last_object or {})
    poll_after = interval
    if video.get("status") in _UNFINISHED and record.handle is not None:
        if records.store.claim_poll(record.resource_id, interval=interval):
            video, poll_after = _poll(records, client, record, upstream, incoming, interval)
    return _json(video, headers={POLL_AFTER_HEADER: str(int(poll_after * 1000))})


def _poll(
    records: Records,
    client: UpstreamClient,
    record: OwnedResource,
    upstream: Upstream,
    incoming: Headers,
    interval: float,
) -> tuple[dict[str, Any], float]:
    """Ask the upstream once; keep what it said. A failed poll leaves the stored state."""
    assert record.handle is not None and record.last_object is not None
    video = dict(record.last_object)
    headers = forwarded_headers(incoming, read_whole=True)
    path = upstream.dialect.poll_path(upstream, record.handle)
    try:
        response = client.send(upstream, "GET", path, headers=headers)
        status, answer_headers, body = read_answer(response, method="GET")
    except ProxyError as error:
        log.warning("polling a %s job failed (%s); answering from the store", upstream.name, error)
        return video, interval
    if status == 429:
        retry_after = dict(answer_headers).get("Retry-After", "")
        return video, float(retry_after) if retry_after.isdigit() else interval
    job = upstream.dialect.read_poll(upstream, status, body)
    if job is None:
        return video, interval
    video = video_object(record.resource_id, job, video.get("model"), known=video)
    handle = {**record.handle, **{k: v for k, v in job.handle().items() if v}}
    try:
        records.store.record(dataclasses.replace(record, last_object=video, handle=handle))
    except ProxyError:
        log.warning("could not keep a polled job's state; answered anyway")
    return video, interval


def content(
    client: UpstreamClient,
    record: OwnedResource,
    upstream: Upstream,
    incoming: Headers,
    *,
    method: str,
    variant: str,
    allow_private: bool,
) -> Response:
    """A finished video's bytes (Range passed on): from the upstream's content endpoint with
    its credentials, or from a result URL with none."""
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
        return _from_result_url(source.url, incoming, method=method, allow_private=allow_private)
    assert source.path is not None
    headers = forwarded_headers(incoming, read_whole=True)
    response = client.send(upstream, method, source.path, headers=headers)
    if response.status_code >= 400 and response.status_code != 416:
        # The upstream's refusal (gone, not ready) in the caller's envelope, not its own words.
        status, answer_headers, body = read_answer(response, method="GET")
        error = upstream.dialect.read_error(upstream, status, body)
        if error is not None:
            raise error
        return small_answer(status, answer_headers, body)
    return _checked_video(response, method)


def _checked_video(response: requests.Response, method: str) -> Response:
    """Refuse a "video" that is a JSON error document (a gateway's not-ready answer served as
    a 200 labelled ``video/mp4``): its first byte tells, before anything reaches the caller."""
    answer = stream_back(response, method=method)
    body = answer.response
    if method != "HEAD" and response.status_code < 300 and isinstance(body, StreamedBody):
        if body.peek(1)[:1] in (b"{", b"["):
            body.close()
            raise UpstreamUnreachable(
                "The upstream answered the video with an error document.",
                code="upstream_bad_content",
            )
    return answer


def _from_result_url(url: str, incoming: Headers, *, method: str, allow_private: bool) -> Response:
    """Stream a result URL (no credentials, SSRF rules) with the caller's Range."""
    policy = FetchPolicy(max_bytes=1 << 40, allow_private=allow_private, deadline=3600.0)
    wanted = {name: incoming[name] for name in ("Range", "If-Range") if name in incoming}
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
