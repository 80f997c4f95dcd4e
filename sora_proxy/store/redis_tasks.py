"""The Redis store's leased-task queue: its Lua scripts and the methods that run them."""

from __future__ import annotations

import json
import secrets
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import redis

from sora_proxy.store.base import Task
from sora_proxy.store.redis_values import ms, text

# A task is a hash (its payload stays JSON text that Lua never re-encodes: cjson would round
# floats to 14 digits and turn [] into {}); a pending one is also a member of its kind's due
# set, scored by when it is due or, leased, by its lease's end. Every value that becomes a
# score or a time is passed as Python's repr of a float and stored as given.

# Add the task unless one is pending, or finished less than keep_done ago (a finished one
# expires by itself once finish_task's keep_done passed).
_SCHEDULE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' then return 0 end
if state == 'done' then
  local finished = tonumber(redis.call('HGET', KEYS[1], 'finished_at'))
  if finished + tonumber(ARGV[5]) > tonumber(ARGV[6]) then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'payload', ARGV[3], 'created_at', ARGV[6],
  'attempts', 0, 'token', '', 'state', 'pending')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

# Shared by both claims: lease one pending task (ARGV[1] is the prefix).
_LEASE = """
local function lease(key, kind, lease_end, token)
  local task = ARGV[1] .. 'task:' .. key
  local attempts = redis.call('HINCRBY', task, 'attempts', 1)
  redis.call('HSET', task, 'token', token)
  redis.call('ZADD', ARGV[1] .. 'tasks:due:' .. kind, lease_end, key)
  local fields = redis.call('HMGET', task, 'payload', 'created_at')
  return {key, kind, fields[1], fields[2], attempts, token}
end
"""

# The earliest due of each wanted kind (every kind in KEYS[1] when ARGV[4] is empty), merged:
# the overall first `limit` are among each kind's first `limit`, so no set is scanned further.
# ARGV: prefix, now, lease end, JSON list of kinds or '', then one fresh token per task wanted.
_CLAIM_TASKS = (
    _LEASE
    + """
local limit = #ARGV - 4
local kinds
if ARGV[4] == '' then kinds = redis.call('SMEMBERS', KEYS[1]) else kinds = cjson.decode(ARGV[4]) end
local due = {}
for _, kind in ipairs(kinds) do
  local found = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'tasks:due:' .. kind, '-inf', ARGV[2],
    'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #found, 2 do due[#due + 1] = {found[i], tonumber(found[i + 1]), kind} end
end
table.sort(due, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[1] < b[1]
end)
local claimed = {}
for i = 1, math.min(limit, #due) do
  claimed[i] = lease(due[i][1], due[i][3], ARGV[3], ARGV[4 + i])
end
return claimed
"""
)

# ARGV: prefix, key, now, lease end, token.
_CLAIM_TASK = (
    _LEASE
    + """
local fields = redis.call('HMGET', KEYS[1], 'state', 'kind')
if fields[1] ~= 'pending' then return false end
local due = redis.call('ZSCORE', ARGV[1] .. 'tasks:due:' .. fields[2], ARGV[2])
if not due or tonumber(due) > tonumber(ARGV[3]) then return false end
return lease(ARGV[2], fields[2], ARGV[4], ARGV[5])
"""
)

# Change a task only if ARGV[3] (never empty) is its token. ARGV: prefix, key, token, then
# 'extend', until | 'reschedule', due_at, payload or '' | 'finish', finished_at, keep_done ms.
_HELD = """
local fields = redis.call('HMGET', KEYS[1], 'state', 'token', 'kind')
if fields[1] ~= 'pending' or fields[2] ~= ARGV[3] then return 0 end
local due = ARGV[1] .. 'tasks:due:' .. fields[3]
if ARGV[4] == 'extend' then
  redis.call('ZADD', due, ARGV[5], ARGV[2])
elseif ARGV[4] == 'reschedule' then
  redis.call('ZADD', due, ARGV[5], ARGV[2])
  redis.call('HSET', KEYS[1], 'token', '')
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'payload', ARGV[6]) end
else
  redis.call('ZREM', due, ARGV[2])
  redis.call('HSET', KEYS[1], 'state', 'done', 'token', '', 'finished_at', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return 1
"""

# Pending tasks per kind, as a flat [kind, count, ...] list.
_PENDING = """
local counts = {}
for _, kind in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local n = redis.call('ZCARD', ARGV[1] .. 'tasks:due:' .. kind)
  if n > 0 then counts[#counts + 1] = kind; counts[#counts + 1] = n end
end
return counts
"""


class RedisTaskQueue:
    """The task methods of :class:`~sora_proxy.store.redis.RedisStore`, as a mixin.

    Keys, under ``prefix``: ``task:{key}`` is a hash (kind, payload as JSON text, created_at,
    attempts, token, state, and finished_at once done, when it gets a ``PX`` expiry of
    ``keep_done``); ``tasks:due:{kind}`` is a sorted set of the kind's pending keys scored by
    due time (a leased task by its lease's end); ``tasks:kinds`` is the set of kinds ever
    scheduled. One due set per kind lets a claim of some kinds skip the others without
    scanning past them.

    The store provides ``client``, ``prefix`` and ``_guard`` (driver errors as 503), and calls
    :meth:`_register_task_scripts` from its constructor.
    """

    client: redis.Redis
    prefix: str

    if TYPE_CHECKING:

        def _guard(self, operation: str) -> AbstractContextManager[None]: ...

    def _register_task_scripts(self) -> None:
        self._schedule = self.client.register_script(_SCHEDULE)
        self._claim_tasks = self.client.register_script(_CLAIM_TASKS)
        self._claim_task = self.client.register_script(_CLAIM_TASK)
        self._held = self.client.register_script(_HELD)
        self._pending = self.client.register_script(_PENDING)

    def _task(self, key: str) -> str:
        return f"{self.prefix}task:{key}"

    def schedule(
        self, key: str, kind: str, payload: dict[str, Any], *, due_at: float, keep_done: float
    ) -> bool:
        """Add a pending task unless ``key`` is pending or finished too recently (one script)."""
        keys = [self._task(key), f"{self.prefix}tasks:due:{kind}", f"{self.prefix}tasks:kinds"]
        args = [key, kind, json.dumps(payload), _float(due_at), _float(keep_done)]
        with self._guard("schedule"):
            return bool(self._schedule(keys=keys, args=[*args, _float(time.time())]))

    def claim_tasks(
        self, *, now: float, lease: float, limit: int, kinds: tuple[str, ...] | None = None
    ) -> list[Task]:
        """Lease the earliest due tasks with one script (fresh tokens made here)."""
        if limit <= 0 or (kinds is not None and not kinds):
            return []
        wanted = "" if kinds is None else json.dumps(list(kinds))
        tokens = [secrets.token_hex(16) for _ in range(limit)]
        args = [self.prefix, _float(now), _float(now + lease), wanted, *tokens]
        with self._guard("claim_tasks"):
            leased = self._claim_tasks(keys=[f"{self.prefix}tasks:kinds"], args=args)
        return [_task(fields) for fields in leased]

    def claim_task(self, key: str, *, now: float, lease: float) -> Task | None:
        """Lease the task ``key`` if it is pending and due (one script)."""
        args = [self.prefix, key, _float(now), _float(now + lease), secrets.token_hex(16)]
        with self._guard("claim_task"):
            leased = self._claim_task(keys=[self._task(key)], args=args)
        return None if leased is None else _task(leased)

    def extend_lease(self, key: str, token: str, *, until: float) -> bool:
        """Move the lease's end to ``until`` if ``token`` still holds the task."""
        return self._if_held("extend_lease", key, token, "extend", _float(until))

    def reschedule(
        self, key: str, token: str, *, due_at: float, payload: dict[str, Any] | None = None
    ) -> bool:
        """Give a held task back (its token cleared), due at ``due_at``."""
        data = "" if payload is None else json.dumps(payload)
        return self._if_held("reschedule", key, token, "reschedule", _float(due_at), data)

    def finish_task(self, key: str, token: str, *, keep_done: float) -> bool:
        """Mark a held task done; its hash expires ``keep_done`` seconds from now."""
        finished = _float(time.time())
        return self._if_held("finish_task", key, token, "finish", finished, ms(keep_done))

    def _if_held(self, operation: str, key: str, token: str, *args: str | int) -> bool:
        if not token:  # an unclaimed task has the empty token; nobody holds it
            return False
        with self._guard(operation):
            changed = self._held(keys=[self._task(key)], args=[self.prefix, key, token, *args])
        return bool(changed)

    def pending_tasks(self) -> dict[str, int]:
        """How many tasks are pending (leased or not), per kind."""
        with self._guard("pending_tasks"):
            flat = self._pending(keys=[f"{self.prefix}tasks:kinds"], args=[self.prefix])
        return {text(kind): int(count) for kind, count in zip(flat[::2], flat[1::2], strict=True)}


def _float(value: float) -> str:
    """``value`` as Redis and Lua read it back exactly (Lua's own tostring keeps 14 digits)."""
    return repr(float(value))


def _task(fields: list[Any]) -> Task:
    key, kind, payload, created_at, attempts, token = fields
    return Task(
        key=text(key),
        kind=text(kind),
        payload=json.loads(payload),
        created_at=float(text(created_at)),
        attempts=int(attempts),
        token=text(token),
    )
