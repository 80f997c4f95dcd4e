"""A paid POST (create, remix, edit, extend, character): never lost, never bought twice.

The order is the whole point:

1. the ``Idempotency-Key`` is claimed, and the request's *intent* written to the store; if the
   store cannot take either, the answer is 503 and nothing goes upstream;
2. the request is sent; a failure that may have reached the upstream (a timeout, a broken
   connection) is kept as the key's answer and carries ``x-should-retry: false``;
3. once the upstream answered, the caller gets that answer whatever happens next: the
   ownership record, the key's answer and the end of the intent go through
   :class:`~sora_proxy.store.durable.DurableWrites` (retried, else spooled and replayed).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from flask import Response, request

from . import idempotency, jobs, tracker
from .auth import Caller
from .budgets import Charge
from .catalog import Upstream
from .client import forwarded_headers
from .dialects import EncodedBody
from .errors import UpstreamTimeout, UpstreamUnreachable
from .extension import ProxyState, Records, proxy_state
from .idempotency import Ticket
from .observability import current_request_id, note_bytes_in, note_upstream
from .store import Intent, Kind, StoredResponse
from .store.ledger import BudgetHold
from .streaming import parse_object, read_answer, small_answer, stream_back
from .uploads import StreamedUpload

log = logging.getLogger("sora_proxy.paid")

#: How long an intent is kept if its request never ends (a worker killed mid-request).
INTENT_TTL = 86400.0


@dataclass(frozen=True)
class PaidRequest:
    """A POST that may start a paid generation.

    :param path: the upstream path (``/videos``, ``/videos/{id}/remix``...).
    :param kind: what a 2xx answer creates, recorded for its caller.
    :param candidates: the upstreams to try in order (one for a by-id route); the next is
        tried only when the connection to one failed before a byte was sent.
    :param body: the body, or how to encode it for each candidate.
    :param fingerprint: what the request asks for, computed only when a key is given. For a
        streamed ``upload`` it covers only what came before the video; the whole request's
        digest is kept with the answer and a repeat must match it too.
    :param caller_model: the model name the caller used, shown in the answer.
    """

    path: str
    kind: Kind
    candidates: list[Upstream]
    body: EncodedBody | Callable[[Upstream], EncodedBody]
    fingerprint: Callable[[], str]
    upload: StreamedUpload | None = None
    caller_model: str | None = None
    #: What the caller asked for (``prompt``, ``size``, ``seconds``), for proxy-owned videos
    #: whose upstream does not echo it.
    asked: Mapping[str, Any] | None = None
    #: What a new video would cost, held against the caller's budget before it is sent
    #: (``None``: not a video, nothing held; the rate still counts).
    charge: Charge | None = None


def post(caller: Caller, paid: PaidRequest) -> Response:
    """Send ``paid``; record what it created; honour ``Idempotency-Key``; hold its cost
    against the caller's budget first (a replay costs nothing)."""
    state = proxy_state()
    records = state.records
    if records is None:
        # No store means no identified callers (pass-through, anonymous): nobody to limit.
        upstream, response = _send(state, caller, paid, read_whole=False)
        return stream_back(response, method="POST")
    ticket: Ticket | None = None
    key = request.headers.get(idempotency.HEADER)
    if key is not None:
        claimed = records.idempotency.claim(caller.owner, key, paid.fingerprint())
        if isinstance(claimed, StoredResponse):
            return _replay(claimed, paid)
        ticket = claimed
    try:
        hold = state.budgets.admit(caller.owner, paid.charge)
    except BaseException:
        if ticket:
            records.idempotency.release(ticket)
        raise
    try:
        intent = _begin_intent(records, caller.owner, paid.path, ticket)
    except BaseException:
        state.budgets.refused(hold)
        raise
    try:
        upstream_key = records.idempotency.upstream_key(ticket) if ticket else None
        upstream, response = _send(state, caller, paid, read_whole=True, key=upstream_key)
        answered = read_answer(response, method="POST")
    except (UpstreamUnreachable, UpstreamTimeout) as error:
        # The upstream may have acted on it: the failure is the answer, kept for retries.
        if ticket:
            envelope = json.dumps(error.envelope()).encode()
            kept = [("Content-Type", "application/json"), *error.headers.items()]
            records.idempotency.finish(ticket, StoredResponse(error.status, kept, envelope))
        records.writes.end_intent(intent.intent_id)
        if error.code == "upstream_connect_timeout":  # never connected: nothing was bought
            state.budgets.refused(hold)
        else:
            state.budgets.uncertain(hold)
        raise
    except BaseException:
        if ticket:
            records.idempotency.release(ticket)
        records.writes.end_intent(intent.intent_id)
        state.budgets.refused(hold)
        raise
    return _settle(state, caller, paid, upstream, answered, ticket, intent, hold)


def _send(
    state: ProxyState,
    caller: Caller,
    paid: PaidRequest,
    *,
    read_whole: bool,
    key: str | None = None,
) -> tuple[Upstream, requests.Response]:
    headers = forwarded_headers(
        request.headers,
        read_whole=read_whole,
        idempotency_key=key,
        request_id=current_request_id(),
    )
    upstream, response = state.client.send_first(
        paid.candidates,
        "POST",
        paid.path,
        paid.body,
        headers=headers,
        caller_authorization=caller.upstream_authorization,
    )
    note_upstream(upstream.name, response)
    return upstream, response


def _replay(stored: StoredResponse, paid: PaidRequest) -> Response:
    if paid.upload is not None and stored.request_digest is not None:
        paid.upload.drain()
        if paid.upload.digest(paid.path) != stored.request_digest:
            raise idempotency.reused()
    return idempotency.replay(stored)


def _begin_intent(records: Records, owner: str, path: str, ticket: Ticket | None) -> Intent:
    """Write the intent, or end the request with 503 before anything is sent upstream."""
    intent = Intent(uuid.uuid4().hex, owner, path, time.time())
    try:
        records.store.begin_intent(intent, ttl=INTENT_TTL)
    except BaseException:
        if ticket:
            records.idempotency.release(ticket)
        raise
    return intent


def _settle(
    state: ProxyState,
    caller: Caller,
    paid: PaidRequest,
    upstream: Upstream,
    answered: tuple[int, list[tuple[str, str]], bytes],
    ticket: Ticket | None,
    intent: Intent,
    hold: BudgetHold | None,
) -> Response:
    """Make the upstream's answer reachable, and its cost followed; return it; never raises."""
    assert state.records is not None
    records = state.records
    status, headers, data = answered
    try:
        if paid.upload is not None:
            note_bytes_in(paid.upload.bytes_read)
        if upstream.dialect.proxy_owned:
            status, headers, data = _own_answer(records, caller, paid, upstream, answered)
        else:
            data = upstream.dialect.present(upstream, data, paid.caller_model)
        if 200 <= status < 300 and not upstream.dialect.proxy_owned:
            records.ownership.record_created(caller.owner, paid.kind, data, upstream.name)
        if 200 <= status < 300 and paid.kind == "video":
            tracker.track(state, upstream, data)
            followed = tracker.follows(state, upstream)
            state.budgets.accepted(hold, parse_object(data) or {}, followed)
        else:
            state.budgets.refused(hold)
        if ticket:
            digest = paid.upload.digest(paid.path) if paid.upload is not None else None
            records.idempotency.finish(ticket, StoredResponse(status, headers, data, digest))
        records.writes.end_intent(intent.intent_id)
    except Exception:
        # A bug here must not turn a paid answer into a 500 the SDK would retry.
        log.exception("recording the answer to a paid %s failed; answered anyway", paid.path)
    return small_answer(status, headers, data)


def _own_answer(
    records: Records,
    caller: Caller,
    paid: PaidRequest,
    upstream: Upstream,
    answered: tuple[int, list[tuple[str, str]], bytes],
) -> tuple[int, list[tuple[str, str]], bytes]:
    """A proxy-owned upstream's answer as the caller sees it: an accepted job becomes the
    proxy's own ``video`` (recorded), an error the OpenAI envelope."""
    status, headers, data = answered
    if 200 <= status < 300:
        job = upstream.dialect.read_job(upstream, status, data)
        video = jobs.record_created(
            records, caller.owner, upstream, job, paid.caller_model, paid.asked
        )
        return 200, [("Content-Type", "application/json")], json.dumps(video).encode()
    error = upstream.dialect.read_error(upstream, status, data)
    if error is None:
        return status, headers, data
    kept = [("Content-Type", "application/json"), *error.headers.items()]
    said = {name.lower() for name, _ in kept}
    # The upstream's own pacing (a 429's Retry-After) is the caller's to honour too.
    kept += [
        (name, value)
        for name, value in headers
        if name.lower() in ("retry-after", "retry-after-ms") and name.lower() not in said
    ]
    if error.status >= 500:
        kept.append(("x-should-retry", "false"))
    return error.status, kept, json.dumps(error.envelope()).encode()
