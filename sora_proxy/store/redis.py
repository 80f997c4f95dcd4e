"""The shared store: Redis, for several proxy hosts behind one load balancer."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from sora_proxy.errors import ServiceUnavailable
from sora_proxy.store.base import (
    Claim,
    ClaimResult,
    Intent,
    Kind,
    Order,
    OwnedResource,
    Store,
    StoredResponse,
)
from sora_proxy.store.codec import UNAVAILABLE, decide, encode_response
from sora_proxy.store.redis_ledger import RedisLedger
from sora_proxy.store.redis_tasks import RedisTaskQueue
from sora_proxy.store.redis_values import ms, text

log = logging.getLogger("sora_proxy.store")

# Reserve the scope if free, else return what holds it: one round trip, no gap in which the
# key could expire between a failed SET NX and the GET that follows it.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# Delete only a claim still in flight (and, given a token, only that claim): a finished
# answer, or a newer claim, must survive a late release.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local held = cjson.decode(current)
if held['state'] ~= 'in_flight' then return 0 end
if ARGV[1] ~= '' and held['token'] ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# Rank of `after` and the slice after it, read together so a concurrent write cannot shift them.
_PAGE = """
local start = 0
if ARGV[1] == '1' then
  local rank
  if ARGV[4] == 'asc' then rank = redis.call('ZRANK', KEYS[1], ARGV[2])
  else rank = redis.call('ZREVRANK', KEYS[1], ARGV[2]) end
  if not rank then return false end
  start = rank + 1
end
local stop = start + tonumber(ARGV[3]) - 1
if ARGV[4] == 'asc' then return redis.call('ZRANGE', KEYS[1], start, stop) end
return redis.call('ZREVRANGE', KEYS[1], start, stop)
"""

_WATCH_ATTEMPTS = 16


def client_from_url(url: str) -> redis.Redis:
    """A client for ``url`` that connects lazily and fails fast.

    2 s to connect or to answer; one immediate retry on a broken connection (a pooled socket
    to a Redis that restarted) and none on a timeout, so a down Redis costs a caller about
    2 s rather than the library's default backoff of several retries.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


class RedisStore(RedisLedger, RedisTaskQueue, Store):
    """:class:`~sora_proxy.store.base.Store` in Redis.

    Keys, all under ``prefix``: ``res:{id}`` holds a record as JSON; ``own:{sha256(owner)}:{kind}``
    is a sorted set of the owner's ids scored by ``created_at`` (equal scores order by id, as
    SQLite's ``(created_at, resource_id)`` does); ``idem:{scope}`` holds an idempotency record
    as JSON with a ``PX`` expiry. Owner names are hashed so a ``:`` in one cannot forge a key.

    The leased tasks' keys are described in
    :class:`~sora_proxy.store.redis_tasks.RedisTaskQueue`, the ledger's in
    :class:`~sora_proxy.store.redis_ledger.RedisLedger`.

    :param client: a ``redis.Redis`` (see :func:`client_from_url`); nothing connects until the
        first call.
    :param prefix: prepended to every key, so one Redis can serve several deployments.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "sora_proxy:") -> None:
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._page = client.register_script(_PAGE)
        self._register_task_scripts()
        self._register_ledger_scripts()

    def _res(self, resource_id: str) -> str:
        return f"{self.prefix}res:{resource_id}"

    def _own(self, owner: str, kind: str) -> str:
        digest = hashlib.sha256(owner.encode("utf-8")).hexdigest()
        return f"{self.prefix}own:{digest}:{kind}"

    def _idem(self, scope: str) -> str:
        return f"{self.prefix}idem:{scope}"

    @contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as error:
            # Socket errors describe the connection; others could quote a command, so only
            # their type is logged.
            socket_error = isinstance(error, redis.ConnectionError | redis.TimeoutError)
            detail = f": {error}" if socket_error else ""
            log.warning("Redis store %s failed: %s%s", operation, type(error).__name__, detail)
            raise ServiceUnavailable(UNAVAILABLE) from None

    def _rewrite(
        self, resource_id: str, change: Callable[[Pipeline, dict[str, Any] | None], None]
    ) -> None:
        """Run ``change(pipe, current_record)`` as a MULTI/EXEC guarded by WATCH on the record."""
        key = self._res(resource_id)
        with self.client.pipeline() as pipe:
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    pipe.multi()
                    change(pipe, None if raw is None else json.loads(raw))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        log.warning("Redis store: record kept changing under WATCH; giving up")
        raise redis.RedisError("contention")

    def record(self, resource: OwnedResource) -> None:
        """Record (or overwrite) who owns ``resource``, moving it between owners' sets."""
        rid = resource.resource_id
        data = json.dumps(
            {
                "owner": resource.owner,
                "upstream": resource.upstream,
                "kind": resource.kind,
                "created_at": float(resource.created_at),
                "last_object": resource.last_object,
                "handle": resource.handle,
            }
        )
        new_set = self._own(resource.owner, resource.kind)

        def change(pipe: Pipeline, old: dict[str, Any] | None) -> None:
            if old is not None and self._own(old["owner"], old["kind"]) != new_set:
                pipe.zrem(self._own(old["owner"], old["kind"]), rid)
            pipe.set(self._res(rid), data)
            pipe.zadd(new_set, {rid: float(resource.created_at)})

        with self._guard("record"):
            self._rewrite(rid, change)

    def get(self, resource_id: str) -> OwnedResource | None:
        """The record for ``resource_id``, or ``None``."""
        with self._guard("get"):
            raw = self.client.get(self._res(resource_id))
        return None if raw is None else _resource(resource_id, json.loads(raw))

    def update_object(self, resource_id: str, last_object: dict[str, Any]) -> None:
        """Replace the last known object of an existing record (no-op if there is none)."""

        def change(pipe: Pipeline, old: dict[str, Any] | None) -> None:
            if old is not None:
                pipe.set(self._res(resource_id), json.dumps({**old, "last_object": last_object}))

        with self._guard("update_object"):
            self._rewrite(resource_id, change)

    def claim_poll(self, resource_id: str, *, interval: float) -> bool:
        """``SET poll:{id} NX PX interval``: set only by the first caller of each interval."""
        with self._guard("claim_poll"):
            taken = self.client.set(
                f"{self.prefix}poll:{resource_id}", "1", nx=True, px=ms(interval)
            )
        return bool(taken)

    def forget(self, resource_id: str) -> None:
        """Delete the record and its entry in the owner's set (no-op if there is none)."""

        def change(pipe: Pipeline, old: dict[str, Any] | None) -> None:
            if old is not None:
                pipe.delete(self._res(resource_id), f"{self.prefix}poll:{resource_id}")
                pipe.zrem(self._own(old["owner"], old["kind"]), resource_id)

        with self._guard("forget"):
            self._rewrite(resource_id, change)

    def list_owned(
        self, owner: str, kind: Kind, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[OwnedResource], bool]:
        """A page of ``owner``'s resources of ``kind`` by (created_at, resource_id).

        Raises :class:`KeyError` if ``after`` is not one of ``owner``'s resources of ``kind``.
        """
        count = max(limit, 0) + 1
        args = ["1" if after is not None else "0", after or "", count, order]
        with self._guard("list_owned"):
            ids = self._page(keys=[self._own(owner, kind)], args=args)
            if ids is None:
                raise KeyError(after)
            ids = [member.decode("utf-8") for member in ids]
            raws = self.client.mget([self._res(rid) for rid in ids]) if ids else []
        # A record forgotten between the two reads is simply left out of the page.
        found = [_resource(rid, json.loads(raw)) for rid, raw in zip(ids, raws, strict=True) if raw]
        return found[:limit], len(ids) > limit

    def claim_idempotency_key(
        self, scope: str, fingerprint: str, *, in_flight_ttl: float, token: str = ""
    ) -> ClaimResult:
        """Atomically claim ``scope`` with one Lua script (read-or-reserve)."""
        claim = json.dumps(
            {"fingerprint": fingerprint, "state": "in_flight", "response": None, "token": token}
        )
        with self._guard("claim_idempotency_key"):
            current = self._claim(keys=[self._idem(scope)], args=[claim, ms(in_flight_ttl)])
        if current is None:
            return ClaimResult(Claim.NEW)
        held = json.loads(current)
        return decide(fingerprint, held["state"], held["fingerprint"], held["response"])

    def finish_idempotency_key(
        self, scope: str, fingerprint: str, response: StoredResponse, *, ttl: float
    ) -> None:
        """Store the response for ``scope``, kept ``ttl`` seconds (overwrites the claim)."""
        data = json.dumps(
            {"fingerprint": fingerprint, "state": "done", "response": encode_response(response)}
        )
        with self._guard("finish_idempotency_key"):
            self.client.set(self._idem(scope), data, px=ms(ttl))

    def release_idempotency_key(self, scope: str, token: str = "") -> None:
        """Drop an in-flight claim (only ``token``'s, when given); a finished record stays."""
        with self._guard("release_idempotency_key"):
            self._release(keys=[self._idem(scope)], args=[token])

    def begin_intent(self, intent: Intent, *, ttl: float) -> None:
        """Write ``intent`` (details under ``intent:{id}``, its time in the ``intents`` set)."""
        details = json.dumps(
            {"owner": intent.owner, "route": intent.route, "created_at": intent.created_at}
        )
        with self._guard("begin_intent"):
            pipe = self.client.pipeline()
            pipe.set(f"{self.prefix}intent:{intent.intent_id}", details, px=ms(ttl))
            pipe.zadd(f"{self.prefix}intents", {intent.intent_id: intent.created_at})
            pipe.zremrangebyscore(f"{self.prefix}intents", "-inf", intent.created_at - ttl)
            pipe.execute()

    def end_intent(self, intent_id: str) -> None:
        """Drop an intent whose outcome is known."""
        with self._guard("end_intent"):
            pipe = self.client.pipeline()
            pipe.delete(f"{self.prefix}intent:{intent_id}")
            pipe.zrem(f"{self.prefix}intents", intent_id)
            pipe.execute()

    def open_intents(self, *, older_than: float) -> int:
        """Intents older than ``older_than`` seconds that were never ended."""
        with self._guard("open_intents"):
            ids = self.client.zrangebyscore(
                f"{self.prefix}intents", "-inf", time.time() - older_than
            )
            if not ids:
                return 0
            alive = self.client.exists(*(f"{self.prefix}intent:{text(member)}" for member in ids))
        return int(alive)

    def warnings(self) -> list[str]:
        """A warning when this Redis keeps nothing across a restart (no AOF, no RDB saves).

        ``CONFIG`` may be disabled on a managed Redis; then nothing can be said.
        """
        try:
            config = self.client.config_get("appendonly") | self.client.config_get("save")
        except redis.RedisError:
            return []
        if config.get("appendonly") == "no" and not str(config.get("save", "")).strip():
            return [
                "redis persistence is off (appendonly no, no save points): every ownership "
                "record is lost when Redis restarts"
            ]
        return []

    def ping(self) -> None:
        """Raise :class:`~sora_proxy.errors.ServiceUnavailable` if Redis does not answer."""
        with self._guard("ping"):
            self.client.ping()

    def close(self) -> None:
        """Close the client's pooled connections."""
        self.client.close()


def _resource(resource_id: str, data: dict[str, Any]) -> OwnedResource:
    return OwnedResource(
        resource_id=resource_id,
        owner=data["owner"],
        upstream=data["upstream"],
        kind=data["kind"],
        created_at=float(data["created_at"]),
        last_object=data["last_object"],
        handle=data.get("handle"),
    )
