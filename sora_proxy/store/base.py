"""The store's contract: who owns which resource on which upstream, and idempotency keys.

Two implementations pass one contract test suite (``tests/test_store_contract.py``):
:class:`~sora_proxy.store.sqlite.SQLiteStore` (embedded default, a file in the Flask instance
folder) and :class:`~sora_proxy.store.redis.RedisStore` (for several proxy hosts behind one load
balancer). Every method raises :class:`~sora_proxy.errors.ServiceUnavailable` (503) when the
backing store cannot be reached, never a driver exception.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from sora_proxy.store.ledger import Ledger

Kind = Literal["video", "character"]
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class OwnedResource:
    """One video or character and who may see it.

    :param resource_id: the upstream's id (``video_…``, ``char_…``).
    :param owner: the caller's name.
    :param upstream: the name of the upstream that holds it.
    :param kind: ``video`` or ``character``.
    :param created_at: seconds since the epoch (float), the proxy's clock.
    :param last_object: the most recent JSON object the upstream returned for it (for a
        proxy-owned video: the OpenAI ``video`` object the proxy made of it, under its own id).
    :param handle: for a proxy-owned video, how to reach the upstream's job (its id, polling
        URL, result URLs); ``None`` when the upstream's own id is the caller's.
    """

    resource_id: str
    owner: str
    upstream: str
    kind: Kind
    created_at: float
    last_object: dict[str, Any] | None = None
    handle: dict[str, Any] | None = None


@dataclass(frozen=True)
class Intent:
    """A paid request about to be sent upstream, written before it is sent.

    The store must accept it first: a store that cannot write stops the request before any
    upstream spend (503), instead of after it, when the caller could never reach what was paid.

    :param intent_id: a fresh random id.
    :param owner: the caller's name.
    :param route: the upstream path the request goes to (``/videos``, ``/videos/edits``...).
    :param created_at: seconds since the epoch.
    """

    intent_id: str
    owner: str
    route: str
    created_at: float


@dataclass(frozen=True)
class StoredResponse:
    """A complete small answer, kept to replay for a repeated idempotent request.

    :param request_digest: for a streamed upload, a digest of everything the request carried
        (known only once it was read to the end); a repeat must match it to be replayed.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    request_digest: str | None = None


@dataclass(frozen=True)
class Task:
    """One piece of background work, leased to one worker at a time (see
    :meth:`Store.claim_tasks`).

    :param key: unique per piece of work (``poll:video_…``, ``archive:video_…``,
        ``webhook:evt_…``); scheduling the same key twice is a no-op, even after it finished.
    :param kind: what to do (``poll``, ``archive``, ``webhook``).
    :param payload: the work's own data (JSON-serialisable; never a secret).
    :param created_at: when it was first scheduled (seconds since the epoch).
    :param attempts: how many times it was claimed, this claim included.
    :param token: this claim's lease token; only its holder may extend, reschedule or finish it.
    """

    key: str
    kind: str
    payload: dict[str, Any]
    created_at: float
    attempts: int = 0
    token: str = ""


class Claim(enum.Enum):
    """Outcome of :meth:`Store.claim_idempotency_key`."""

    NEW = "new"  # reserved for this request: go ahead, then finish or release
    REPLAY = "replay"  # same key and fingerprint answered before: replay the response
    MISMATCH = "mismatch"  # same key used with a different body: 409
    IN_FLIGHT = "in_flight"  # same key still being processed: 409


@dataclass(frozen=True)
class ClaimResult:
    """What :meth:`Store.claim_idempotency_key` decided, and the response to replay if any."""

    claim: Claim
    response: StoredResponse | None = field(default=None)


class Store(Ledger, ABC):
    """Ownership records, idempotency keys, background tasks and the budget ledger
    (:class:`~sora_proxy.store.ledger.Ledger`). Implementations are safe across threads and
    processes (several gunicorn workers, several hosts for Redis)."""

    @abstractmethod
    def record(self, resource: OwnedResource) -> None:
        """Record (or overwrite) who owns ``resource``."""

    @abstractmethod
    def get(self, resource_id: str) -> OwnedResource | None:
        """The record for ``resource_id``, or ``None``."""

    @abstractmethod
    def update_object(self, resource_id: str, last_object: dict[str, Any]) -> None:
        """Replace the last known object of an existing record (no-op if there is none)."""

    @abstractmethod
    def claim_poll(self, resource_id: str, *, interval: float) -> bool:
        """True for at most one caller per ``interval`` seconds per resource, across every
        worker and host: that caller asks the upstream, the others answer from the store."""

    @abstractmethod
    def forget(self, resource_id: str) -> None:
        """Delete the record (no-op if there is none)."""

    @abstractmethod
    def list_owned(
        self, owner: str, kind: Kind, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[OwnedResource], bool]:
        """A page of ``owner``'s resources of ``kind``, ordered by (created_at, resource_id).

        :param after: the id to start after (exclusive), in the given order; it must be one of
            ``owner``'s own resources of ``kind``, else :class:`KeyError`.
        :returns: the page and whether more follow.
        """

    @abstractmethod
    def claim_idempotency_key(
        self, scope: str, fingerprint: str, *, in_flight_ttl: float, token: str = ""
    ) -> ClaimResult:
        """Atomically claim ``scope`` (a hash of caller and Idempotency-Key) for a request.

        NEW when the scope is free (or its record expired); the claim is held for
        ``in_flight_ttl`` seconds unless :meth:`finish_idempotency_key` or
        :meth:`release_idempotency_key` comes first. REPLAY with the stored response when a
        finished record has the same ``fingerprint``; MISMATCH when it has another; IN_FLIGHT
        while a claim is held (whatever the fingerprint).

        :param token: identifies this claim, so that a late release (replayed from the spool)
            can only end the claim it was meant for, never a newer one.
        """

    @abstractmethod
    def finish_idempotency_key(
        self, scope: str, fingerprint: str, response: StoredResponse, *, ttl: float
    ) -> None:
        """Store the response for ``scope``, kept ``ttl`` seconds (24 h in production)."""

    @abstractmethod
    def release_idempotency_key(self, scope: str, token: str = "") -> None:
        """Drop an in-flight claim (the request failed before reaching the upstream).

        With a ``token``, only the claim made with that token is dropped.
        """

    @abstractmethod
    def begin_intent(self, intent: Intent, *, ttl: float) -> None:
        """Write ``intent`` (kept at most ``ttl`` seconds); raises 503 if the store cannot."""

    @abstractmethod
    def end_intent(self, intent_id: str) -> None:
        """Drop an intent whose outcome is known (no-op if there is none)."""

    @abstractmethod
    def open_intents(self, *, older_than: float) -> int:
        """How many intents older than ``older_than`` seconds were never ended: requests that
        may have been paid for without a record (a worker died mid-request)."""

    # -- background work: leased tasks (the tracker, archive copies, webhook deliveries) --------

    @abstractmethod
    def schedule(
        self, key: str, kind: str, payload: dict[str, Any], *, due_at: float, keep_done: float
    ) -> bool:
        """Add a pending task, due at ``due_at``, unless a task with ``key`` exists (pending,
        leased, or finished less than ``keep_done`` seconds ago). True when it was added."""

    @abstractmethod
    def claim_tasks(
        self, *, now: float, lease: float, limit: int, kinds: tuple[str, ...] | None = None
    ) -> list[Task]:
        """Atomically lease up to ``limit`` pending tasks due at or before ``now`` (earliest
        first; of ``kinds`` when given): each gets a fresh token, one more attempt, and is held
        until ``now + lease``, so across workers and hosts one claimer holds a task at a time.
        A lease that runs out (its holder died) makes the task due again."""

    @abstractmethod
    def claim_task(self, key: str, *, now: float, lease: float) -> Task | None:
        """Lease the one task ``key`` if it is pending and due at or before ``now`` (as
        :meth:`claim_tasks`); ``None`` when it is not (held by another, not due, finished, or
        unknown)."""

    @abstractmethod
    def extend_lease(self, key: str, token: str, *, until: float) -> bool:
        """Keep holding a task (a long copy): False when ``token`` no longer holds it."""

    @abstractmethod
    def reschedule(
        self, key: str, token: str, *, due_at: float, payload: dict[str, Any] | None = None
    ) -> bool:
        """Give a held task back, due again at ``due_at`` (its payload replaced when given):
        False when ``token`` no longer holds it (nothing changed)."""

    @abstractmethod
    def finish_task(self, key: str, token: str, *, keep_done: float) -> bool:
        """Mark a held task done (kept ``keep_done`` seconds so it is not scheduled again):
        False when ``token`` no longer holds it (nothing changed)."""

    @abstractmethod
    def pending_tasks(self) -> dict[str, int]:
        """How many tasks are pending (leased or not), per kind."""

    def warnings(self) -> list[str]:
        """Problems that do not stop the store from working but lose data on a restart."""
        return []

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~sora_proxy.errors.ServiceUnavailable` if the store is unreachable."""

    def close(self) -> None:
        """Release connections (tests, shutdown)."""
