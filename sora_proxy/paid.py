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
from collections.abc import Callable
from contextlib import ExitStack

import requests
from flask import Response, request

from . import idempotency
from .auth import Caller
from .errors import UpstreamTimeout, UpstreamUnreachable
from .exchange import answer, is_owned, owner_name, present_model, proxy_state, send
from .idempotency import Ticket
from .observability import current_info
from .store import Intent, Kind, StoredResponse
from .streaming import read_answer, relay_response
from .uploads import StreamedUpload
from .upstreams import Upstream

log = logging.getLogger("sora_proxy.paid")

#: Sends a prepared POST: gets the cleanup stack and the upstream Idempotency-Key.
Dispatch = Callable[[ExitStack, str | None], tuple[Upstream, requests.Response]]
#: How long an intent is kept if its request never ends (a worker killed mid-request).
INTENT_TTL = 86400.0


def post(
    path: str,
    caller: Caller,
    kind: Kind | None,
    fingerprint: Callable[[], str],
    dispatch: Dispatch,
    *,
    upload: StreamedUpload | None = None,
    caller_model: str | None = None,
) -> Response:
    """Send a paid POST; record what it created; honour ``Idempotency-Key``.

    :param fingerprint: what the request asks for, computed only if a key is given. For a
        streamed ``upload`` it covers only what came before the video; the whole request's
        digest is kept with the answer and a repeat must match it too.
    """
    if not is_owned():
        with ExitStack() as stack:
            _, response = dispatch(stack, None)
        return relay_response(response, method="POST")
    state = proxy_state()
    owner = owner_name(caller)
    ticket: Ticket | None = None
    key = request.headers.get(idempotency.HEADER)
    if key is not None:
        claimed = state.idempotency.claim(owner, key, fingerprint())
        if isinstance(claimed, StoredResponse):
            return _replay(claimed, path, upload)
        ticket = claimed
    intent = _begin_intent(owner, path, ticket)
    try:
        with ExitStack() as stack:
            upstream_key = state.idempotency.upstream_key(ticket) if ticket else None
            upstream, response = dispatch(stack, upstream_key)
        status, headers, data = read_answer(response, method="POST")
    except (UpstreamUnreachable, UpstreamTimeout) as error:
        # The upstream may have acted on it: the failure is the answer, kept for retries.
        if ticket:
            envelope = json.dumps(error.envelope()).encode()
            kept = [("Content-Type", "application/json"), *error.headers.items()]
            state.idempotency.finish(ticket, StoredResponse(error.status, kept, envelope))
        state.writes.end_intent(intent.intent_id)
        raise
    except BaseException:
        if ticket:
            state.idempotency.release(ticket)
        state.writes.end_intent(intent.intent_id)
        raise
    return _settle(path, owner, kind, upstream, (status, headers, data), ticket, intent,
                   upload=upload, caller_model=caller_model)


def dispatch_to(
    upstream: Upstream, path: str, caller: Caller, body: object, content_type: str | None
) -> Dispatch:
    """A dispatch of a prepared body to one known upstream (by-id routes, uploads)."""

    def dispatch(_: ExitStack, key: str | None) -> tuple[Upstream, requests.Response]:
        response = send(upstream, "POST", path, caller, body=body, content_type=content_type,
                        idempotency_key=key)
        return upstream, response

    return dispatch


def _replay(stored: StoredResponse, path: str, upload: StreamedUpload | None) -> Response:
    if upload is not None and stored.request_digest is not None:
        upload.drain()
        if upload.digest(path) != stored.request_digest:
            raise idempotency.reused()
    return idempotency.replay(stored)


def _begin_intent(owner: str, path: str, ticket: Ticket | None) -> Intent:
    """Write the intent, or end the request with 503 before anything is sent upstream."""
    state = proxy_state()
    intent = Intent(uuid.uuid4().hex, owner, path, time.time())
    try:
        state.store.begin_intent(intent, ttl=INTENT_TTL)
    except BaseException:
        if ticket:
            state.idempotency.release(ticket)
        raise
    return intent


def _settle(
    path: str,
    owner: str,
    kind: Kind | None,
    upstream: Upstream,
    answered: tuple[int, list[tuple[str, str]], bytes],
    ticket: Ticket | None,
    intent: Intent,
    *,
    upload: StreamedUpload | None,
    caller_model: str | None,
) -> Response:
    """Make the upstream's answer reachable and return it; never raises."""
    state = proxy_state()
    status, headers, data = answered
    try:
        if upload is not None and (info := current_info()) is not None:
            info.extra["bytes_in"] = upload.bytes_read
        data = present_model(upstream, data, caller_model)
        if kind is not None and 200 <= status < 300:
            state.ownership.record_created(owner, kind, data, upstream.name)
        if ticket:
            digest = upload.digest(path) if upload is not None else None
            state.idempotency.finish(ticket, StoredResponse(status, headers, data, digest))
        state.writes.end_intent(intent.intent_id)
    except Exception:
        # A bug here must not turn a paid answer into a 500 the SDK would retry.
        log.exception("recording the answer to a paid %s failed; answered anyway", path)
    return answer(status, headers, data)

