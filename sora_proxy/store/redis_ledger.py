"""The Redis store's budget ledger: its Lua scripts and the methods that run them."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import redis

from sora_proxy.store import ledger
from sora_proxy.store.ledger import Amount, BudgetHold, Cap, Ledger, Refusal, Usage, UsageRow
from sora_proxy.store.redis_values import ms, text

#: How long an ended hold (and its video's pointer to it) is kept: long enough for a late
#: duplicate end or bind to find it ended, not forever.
ENDED_HOLD_KEEP = 40 * 86400.0

# Amounts travel as decimal strings and only ever meet HINCRBY, so they stay exact integers
# (Lua's numbers are doubles and its tostring keeps 14 digits). Only the cap check compares
# in Lua numbers, exact up to 2**53. Times are the callers' clocks in whole milliseconds.

# Shared by the scripts that end holds. ARGV[1] is always the prefix.
_FINISH = """
local function neg(n)
  if n == '0' then return '0' end
  if string.sub(n, 1, 1) == '-' then return string.sub(n, 2) end
  return '-' .. n
end

-- End the open hold `id` as `state` ('settled' or 'released'), spending sms/smu (strings).
local function finish(id, state, sms, smu, now, keep_ended, keep_usage)
  local prefix = ARGV[1]
  local hold = prefix .. 'hold:' .. id
  local f = redis.call('HMGET', hold, 'digest', 'model', 'periods', 'est_ms', 'est_micros',
    'video_id')
  redis.call('HSET', hold, 'state', state, 'ended_at', now)
  redis.call('PEXPIRE', hold, keep_ended)
  if f[6] and f[6] ~= '' then
    redis.call('PEXPIRE', prefix .. 'hold:video:' .. f[6], keep_ended)
  end
  redis.call('ZREM', prefix .. 'holds:open:' .. f[1], id)
  local settled, released = '1', '0'
  if state == 'released' then settled, released = '0', '1' end
  local m = f[2] .. '|'
  for _, period in ipairs(cjson.decode(f[3])) do
    local usage = prefix .. 'usage:' .. f[1] .. ':' .. period
    redis.call('HINCRBY', usage, m .. 'held_ms', neg(f[4]))
    redis.call('HINCRBY', usage, m .. 'held_micros', neg(f[5]))
    redis.call('HINCRBY', usage, m .. 'spent_ms', sms)
    redis.call('HINCRBY', usage, m .. 'spent_micros', smu)
    redis.call('HINCRBY', usage, m .. 'holding', '-1')
    redis.call('HINCRBY', usage, m .. 'settled', settled)
    redis.call('HINCRBY', usage, m .. 'released', released)
    redis.call('HINCRBY', usage, 'total_ms', neg(f[4]))
    redis.call('HINCRBY', usage, 'total_ms', sms)
    redis.call('HINCRBY', usage, 'total_micros', neg(f[5]))
    redis.call('HINCRBY', usage, 'total_micros', smu)
    redis.call('PEXPIRE', usage, keep_usage)
  end
end
"""

# Release the owner's expired unbound holds, count, check every cap, then add: one script.
# KEYS: the hold, the owner's open set. ARGV: prefix, owner digest, now, expiry, keep ended,
# keep usage, hold id, owner, model, periods JSON, est ms, est micros, terms JSON, created_at,
# concurrent or '', then (period, cap ms or '', cap micros or '') per cap.
_TAKE_HOLD = (
    _FINISH
    + """
-- Checked before any write: a script's error does not undo what it already wrote.
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('ERR hold id taken') end
local prefix = ARGV[1]
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])) do
  if redis.call('HGET', prefix .. 'hold:' .. id, 'state') == 'open' then
    finish(id, 'released', '0', '0', ARGV[3], ARGV[5], ARGV[6])
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
if ARGV[15] ~= '' and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[15]) then
  return {'concurrency'}
end
for i = 16, #ARGV, 3 do
  local used = redis.call('HMGET', prefix .. 'usage:' .. ARGV[2] .. ':' .. ARGV[i],
    'total_ms', 'total_micros')
  if (ARGV[i + 1] ~= '' and (tonumber(used[1]) or 0) + tonumber(ARGV[11]) > tonumber(ARGV[i + 1]))
    or (ARGV[i + 2] ~= '' and (tonumber(used[2]) or 0) + tonumber(ARGV[12]) > tonumber(ARGV[i + 2]))
  then
    return {'budget', ARGV[i]}
  end
end
redis.call('HSET', KEYS[1], 'owner', ARGV[8], 'digest', ARGV[2], 'model', ARGV[9],
  'periods', ARGV[10], 'est_ms', ARGV[11], 'est_micros', ARGV[12], 'terms', ARGV[13],
  'created_at', ARGV[14], 'state', 'open', 'video_id', '')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[7])
local m = ARGV[9] .. '|'
for _, period in ipairs(cjson.decode(ARGV[10])) do
  local usage = prefix .. 'usage:' .. ARGV[2] .. ':' .. period
  redis.call('HINCRBY', usage, m .. 'held_ms', ARGV[11])
  redis.call('HINCRBY', usage, m .. 'held_micros', ARGV[12])
  redis.call('HINCRBY', usage, m .. 'holding', '1')
  redis.call('HINCRBY', usage, 'total_ms', ARGV[11])
  redis.call('HINCRBY', usage, 'total_micros', ARGV[12])
  redis.call('PEXPIRE', usage, ARGV[6])
end
return false
"""
)

# The open hold found by id or by its video, as BudgetHold's fields (or false).
# KEYS[1]: the hold, or the video's pointer to it. ARGV: prefix, 'id' | 'video', the id.
_FIND = """
local function find()
  local id = ARGV[3]
  if ARGV[2] == 'video' then
    id = redis.call('GET', KEYS[1])
    if not id then return false end
  end
  local f = redis.call('HMGET', ARGV[1] .. 'hold:' .. id, 'state', 'video_id', 'owner',
    'model', 'periods', 'est_ms', 'est_micros', 'terms', 'created_at')
  if f[1] ~= 'open' then return false end
  if ARGV[2] == 'video' and f[2] ~= ARGV[3] then return false end
  return {id, f[3], f[4], f[5], f[6], f[7], f[8], f[9]}
end
"""

# ARGV: as _FIND's, then state, spent ms, spent micros, now, keep ended, keep usage.
_END_HOLD = (
    _FINISH
    + _FIND
    + """
local found = find()
if found then finish(found[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]) end
return found
"""
)

_OPEN_HOLD = (
    _FIND
    + """
return find()
"""
)

# KEYS: the hold, the video's pointer. ARGV: prefix, hold id, video id.
_BIND_HOLD = """
local f = redis.call('HMGET', KEYS[1], 'state', 'video_id', 'digest')
if f[1] ~= 'open' then return 0 end
local bound = redis.call('GET', KEYS[2])
if bound and bound ~= ARGV[2] then
  return redis.error_reply('ERR video already bound to another hold')
end
if f[2] ~= '' and f[2] ~= ARGV[3] then redis.call('DEL', ARGV[1] .. 'hold:video:' .. f[2]) end
redis.call('HSET', KEYS[1], 'video_id', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', ARGV[1] .. 'holds:open:' .. f[3], '+inf', ARGV[2])
return 1
"""

# One snapshot: the open count, the expired unbound holds (model, periods, est ms, est
# micros), then each period's usage hash. KEYS: the open set, then the usage hashes.
# ARGV: prefix, now.
_USAGE = """
local stale = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])) do
  local f = redis.call('HMGET', ARGV[1] .. 'hold:' .. id, 'state', 'model', 'periods',
    'est_ms', 'est_micros')
  if f[1] == 'open' then stale[#stale + 1] = {f[2], f[3], f[4], f[5]} end
end
local result = {redis.call('ZCARD', KEYS[1]), stale}
for i = 2, #KEYS do result[#result + 1] = redis.call('HGETALL', KEYS[i]) end
return result
"""


class RedisLedger(Ledger):
    """The ledger methods of :class:`~sora_proxy.store.redis.RedisStore`, as a mixin: each
    write is one Lua script, so workers on every host see one order.

    Keys, under ``prefix`` (an owner appears as the SHA-256 of its name, so a ``:`` in it
    cannot forge another's key):

    * ``hold:{hold_id}``: a hash (owner, digest, model, periods as JSON, est_ms, est_micros,
      terms as JSON, created_at, state ``open``/``settled``/``released``, video_id, and
      ended_at once ended, when it gets an expiry of :data:`ENDED_HOLD_KEEP`);
    * ``holds:open:{digest}``: the owner's open hold ids scored by when an unbound one
      expires, in milliseconds (a bound one: ``+inf``);
    * ``hold:video:{video_id}``: the id of the hold bound to the video (expires with the
      ended hold);
    * ``usage:{digest}:{period}``: a hash of ``{model}|spent_ms``, ``|spent_micros``,
      ``|held_ms``, ``|held_micros``, ``|settled``, ``|released``, ``|holding`` per model,
      and ``total_ms``, ``total_micros`` (spent + held over every model, for the cap check);
      it expires :data:`~sora_proxy.store.ledger.USAGE_KEEP` after its last change.

    The store provides ``client``, ``prefix`` and ``_guard`` (driver errors as 503), and
    calls :meth:`_register_ledger_scripts` from its constructor.
    """

    client: redis.Redis
    prefix: str

    if TYPE_CHECKING:

        def _guard(self, operation: str) -> AbstractContextManager[None]: ...

    def _register_ledger_scripts(self) -> None:
        self._take_hold = self.client.register_script(_TAKE_HOLD)
        self._bind_hold = self.client.register_script(_BIND_HOLD)
        self._end_hold = self.client.register_script(_END_HOLD)
        self._open_hold = self.client.register_script(_OPEN_HOLD)
        self._usage = self.client.register_script(_USAGE)

    def _hold_key(self, hold_id: str) -> str:
        return f"{self.prefix}hold:{hold_id}"

    def _video_key(self, video_id: str) -> str:
        return f"{self.prefix}hold:video:{video_id}"

    def take_hold(
        self, hold: BudgetHold, *, concurrent: int | None, caps: Mapping[str, Cap]
    ) -> Refusal | None:
        """Release expired unbound holds, count, check and add in one script."""
        now = _now_ms()
        digest = _digest(hold.owner)
        args: list[str | int] = [
            self.prefix,
            digest,
            now,
            now + ms(ledger.UNBOUND_HOLD_TTL),
            ms(ENDED_HOLD_KEEP),
            ms(ledger.USAGE_KEEP),
            hold.hold_id,
            hold.owner,
            hold.model,
            json.dumps(list(hold.periods)),
            str(int(hold.amount.ms)),
            str(int(hold.amount.micros)),
            json.dumps(hold.terms),
            repr(float(hold.created_at)),
            "" if concurrent is None else str(int(concurrent)),
        ]
        for period, cap in caps.items():
            args += [period, _limit(cap.ms), _limit(cap.micros)]
        keys = [self._hold_key(hold.hold_id), f"{self.prefix}holds:open:{digest}"]
        with self._guard("take_hold"):
            refused = self._take_hold(keys=keys, args=args)
        if refused is None:
            return None
        reason = text(refused[0])
        return Refusal(reason, text(refused[1]) if len(refused) > 1 else None)

    def bind_hold(self, hold_id: str, video_id: str) -> None:
        """Set the video and drop the expiry (an open hold only), in one script."""
        keys = [self._hold_key(hold_id), self._video_key(video_id)]
        with self._guard("bind_hold"):
            self._bind_hold(keys=keys, args=[self.prefix, hold_id, video_id])

    def end_hold(
        self, *, hold_id: str | None = None, video_id: str | None = None, actual: Amount | None
    ) -> BudgetHold | None:
        """Settle or release in one script; only an open hold changes."""
        if hold_id is not None:
            keys, args = [self._hold_key(hold_id)], [self.prefix, "id", hold_id]
        elif video_id is not None:
            keys, args = [self._video_key(video_id)], [self.prefix, "video", video_id]
        else:
            return None
        spent = actual or Amount()
        args += [
            "released" if actual is None else "settled",
            str(int(spent.ms)),
            str(int(spent.micros)),
            str(_now_ms()),
            str(ms(ENDED_HOLD_KEEP)),
            str(ms(ledger.USAGE_KEEP)),
        ]
        with self._guard("end_hold"):
            ended = self._end_hold(keys=keys, args=args)
        return None if ended is None else BudgetHold.from_stored([text(v) for v in ended])

    def open_hold(self, video_id: str) -> BudgetHold | None:
        """The open hold bound to ``video_id`` (one script: pointer and hold read together)."""
        with self._guard("open_hold"):
            found = self._open_hold(
                keys=[self._video_key(video_id)], args=[self.prefix, "video", video_id]
            )
        return None if found is None else BudgetHold.from_stored([text(v) for v in found])

    def usage(self, owner: str, periods: tuple[str, ...]) -> Usage:
        """One script: the usage hashes, and the open holds not past their time."""
        digest = _digest(owner)
        keys = [f"{self.prefix}holds:open:{digest}"]
        keys += [f"{self.prefix}usage:{digest}:{period}" for period in periods]
        with self._guard("usage"):
            reply = self._usage(keys=keys, args=[self.prefix, _now_ms()])
        open_count, stale, hashes = int(reply[0]), reply[1], reply[2:]
        found: dict[str, dict[str, UsageRow]] = {period: {} for period in periods}
        for period, flat in zip(periods, hashes, strict=True):
            found[period] = _rows(flat)
        for model, held_periods, est_ms, est_micros in stale:
            # Released by the next take_hold; shown as released now, as SQLite does.
            amount = Amount(int(est_ms), int(est_micros))
            for period in json.loads(held_periods):
                row = found.get(period, {}).get(text(model))
                if row is not None:
                    row.held -= amount
                    row.holding -= 1
                    row.released += 1
        return Usage(found, open_count - len(stale))


def _now_ms() -> int:
    return round(time.time() * 1000)


def _digest(owner: str) -> str:
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()


def _limit(value: int | None) -> str:
    return "" if value is None else str(int(value))


_FIELDS = ("spent_ms", "spent_micros", "held_ms", "held_micros", "settled", "released", "holding")


def _rows(flat: list[Any]) -> dict[str, UsageRow]:
    """A usage hash's per-model fields (``{model}|{field}``) as rows; totals are skipped."""
    values: dict[str, dict[str, int]] = {}
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        model, sep, field_name = text(name).rpartition("|")
        if sep and field_name in _FIELDS:
            values.setdefault(model, dict.fromkeys(_FIELDS, 0))[field_name] = int(value)
    return {
        model: UsageRow(
            Amount(v["spent_ms"], v["spent_micros"]),
            Amount(v["held_ms"], v["held_micros"]),
            v["settled"],
            v["released"],
            v["holding"],
        )
        for model, v in values.items()
    }
