"""Idempotency keys: a repeated POST gets the first answer, never a second paid generation.

The key is scoped by caller (two callers may pick the same key) and stored only as a digest.
A request is identified by a fingerprint of what it asks for (its fields and the digests of its
files), not its raw bytes: an SDK retry of a multipart body has a new boundary but asks for the
same thing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response

from .errors import Conflict, InvalidRequest
from .store import Claim, Store, StoredResponse
from .store.durable import DurableWrites

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "idempotent-replayed"


def fingerprint(route: str, fields: Any, file_digests: Mapping[str, str] | None = None) -> str:
    """A digest of what a request asks for: its route, fields and file contents."""
    try:
        canonical = json.dumps(
            {"route": route, "fields": fields, "files": dict(file_digests or {})},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
    except (RecursionError, ValueError):
        # Bodies are depth-checked when read; this is the last guard, never a 500.
        raise InvalidRequest(
            "The request body is nested too deeply.", code="invalid_json"
        ) from None
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Ticket:
    """A claimed idempotency key, to finish with the answer or release on an early failure."""

    scope: str
    fingerprint: str
    token: str


class Idempotency:
    """Claims, finishes and replays idempotency keys in a :class:`~sora_proxy.store.Store`.

    A claim is made directly (a store that cannot take it answers 503 before anything is
    sent); its end, the answer or the release, goes through :class:`DurableWrites`, so a
    store failure after the upstream answered cannot leave the key in flight.
    """

    def __init__(
        self, store: Store, writes: DurableWrites, *, ttl: float, in_flight_ttl: float
    ) -> None:
        self.store = store
        self.writes = writes
        self.ttl = ttl
        self.in_flight_ttl = in_flight_ttl

    def claim(self, owner: str, key: str, request_fingerprint: str) -> Ticket | StoredResponse:
        """Claim ``key`` for ``owner``: a :class:`Ticket` to go ahead, or the answer to replay.

        :raises Conflict: the key is in flight, or was used with a different request (409).
        """
        if not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
            raise InvalidRequest(
                f"{HEADER} must be 1 to 255 printable ASCII characters.", param=HEADER
            )
        scope = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()
        token = uuid.uuid4().hex
        result = self.store.claim_idempotency_key(
            scope, request_fingerprint, in_flight_ttl=self.in_flight_ttl, token=token
        )
        if result.claim is Claim.NEW:
            return Ticket(scope, request_fingerprint, token)
        if result.claim is Claim.REPLAY and result.response is not None:
            return result.response
        if result.claim is Claim.IN_FLIGHT:
            raise Conflict(
                f"A request with this {HEADER} is still being processed; retry later.",
                param=HEADER,
                code="idempotency_key_in_flight",
                headers={"retry-after": "1"},
            )
        raise reused()

    def finish(self, ticket: Ticket, response: StoredResponse) -> None:
        """Keep ``response`` as the answer for ``ticket``'s key (durably; never raises)."""
        self.writes.finish_idempotency_key(ticket.scope, ticket.fingerprint, response, ttl=self.ttl)

    def release(self, ticket: Ticket) -> None:
        """Free the key: the request failed before the upstream could have acted on it
        (durably; never raises)."""
        self.writes.release_idempotency_key(ticket.scope, ticket.token)

    def upstream_key(self, ticket: Ticket) -> str:
        """The key to send upstream: scoped, so two callers' keys never collide there."""
        return ticket.scope


def reused() -> Conflict:
    """The 409 for a key already used with a different request."""
    return Conflict(
        f"This {HEADER} was already used with a different request.",
        param=HEADER,
        code="idempotency_key_reused",
    )


def replay(stored: StoredResponse) -> Response:
    """The stored answer again, marked as a replay."""
    response = Response(stored.body, status=stored.status, headers=stored.headers)
    response.headers[REPLAYED_HEADER] = "true"
    return response
