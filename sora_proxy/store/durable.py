"""Writes that must land: made at once, retried, else kept in the spool and replayed.

Once an upstream accepted a paid request, the caller gets the upstream's answer whatever the
store does, so the writes that make it reachable (the ownership record, the idempotent answer,
the end of an idempotency claim) cannot be allowed to fail with the request. They go through
:class:`DurableWrites`: a few quick attempts, then the local :class:`~.spool.Spool`, replayed
by a background thread of each worker process once the store answers again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Any

from sora_proxy.errors import ServiceUnavailable
from sora_proxy.store.base import OwnedResource, Store, StoredResponse
from sora_proxy.store.codec import decode_response, encode_response
from sora_proxy.store.ledger import Amount, BudgetHold
from sora_proxy.store.spool import Spool

log = logging.getLogger("sora_proxy.store")

#: Pauses between the attempts made before a write is spooled.
RETRY_PAUSES = (0.05, 0.25)
#: Seconds between two replay attempts of the background thread.
REPLAY_INTERVAL = 1.0


class DurableWrites:
    """The store's must-land writes, with the spool behind them.

    :param store: where the writes belong.
    :param spool: where they wait while the store cannot take them.
    """

    def __init__(self, store: Store, spool: Spool) -> None:
        self.store = store
        self.spool = spool
        self._replay_lock = threading.Lock()
        self._thread_pid = -1
        self._thread_lock = threading.Lock()

    def record(self, resource: OwnedResource) -> None:
        """Record who owns ``resource``; never raises."""
        entry = {"op": "record", "resource": asdict(resource)}
        self._write(entry, lambda: self.store.record(resource))

    def finish_idempotency_key(
        self, scope: str, fingerprint: str, response: StoredResponse, *, ttl: float
    ) -> None:
        """Keep ``response`` as the answer for ``scope``; never raises."""
        entry = {
            "op": "finish",
            "scope": scope,
            "fingerprint": fingerprint,
            "response": encode_response(response),
            "expires_at": time.time() + ttl,
        }
        self._write(
            entry,
            lambda: self.store.finish_idempotency_key(scope, fingerprint, response, ttl=ttl),
        )

    def release_idempotency_key(self, scope: str, token: str) -> None:
        """End the claim made with ``token``; never raises."""
        entry = {"op": "release", "scope": scope, "token": token}
        self._write(entry, lambda: self.store.release_idempotency_key(scope, token))

    def end_intent(self, intent_id: str) -> None:
        """Drop an intent whose outcome is known; never raises."""
        entry = {"op": "end_intent", "intent_id": intent_id}
        self._write(entry, lambda: self.store.end_intent(intent_id))

    def schedule(
        self, key: str, kind: str, payload: dict[str, Any], *, due_at: float, keep_done: float
    ) -> None:
        """Schedule background work (see :meth:`Store.schedule`); never raises."""
        entry = {
            "op": "schedule",
            "key": key,
            "kind": kind,
            "payload": payload,
            "due_at": due_at,
            "keep_done": keep_done,
        }
        self._write(
            entry,
            lambda: self.store.schedule(key, kind, payload, due_at=due_at, keep_done=keep_done),
        )

    def bind_hold(self, hold_id: str, video_id: str) -> None:
        """Tie a budget hold to the video it paid for; never raises."""
        entry = {"op": "bind_hold", "hold_id": hold_id, "video_id": video_id}
        self._write(entry, lambda: self.store.bind_hold(hold_id, video_id))

    def end_hold(
        self, *, hold_id: str | None = None, video_id: str | None = None, actual: Amount | None
    ) -> BudgetHold | None:
        """Settle (``actual``) or release a budget hold; never raises. The hold this call
        ended, or ``None`` (already ended, unknown, or spooled to end later)."""
        entry = {
            "op": "end_hold",
            "hold_id": hold_id,
            "video_id": video_id,
            "actual": None if actual is None else asdict(actual),
        }
        ended: list[BudgetHold | None] = [None]

        def end() -> None:
            ended[0] = self.store.end_hold(hold_id=hold_id, video_id=video_id, actual=actual)

        self._write(entry, end)
        return ended[0]

    def replay(self) -> int:
        """Replay pending writes now (one thread per process at a time); how many landed."""
        if not self._replay_lock.acquire(blocking=False):
            return 0
        try:
            applied = self.spool.replay(self._apply)
        except ServiceUnavailable:
            return 0
        except Exception:
            log.exception("replaying the spool failed")
            return 0
        finally:
            self._replay_lock.release()
        if applied:
            log.warning("replayed %d spooled store write(s)", applied)
        return applied

    def pending(self) -> int:
        """Writes waiting in the spool."""
        return self.spool.pending()

    def ensure_replayer(self) -> None:
        """Start this process's background replayer if it is not running (fork-safe)."""
        pid = os.getpid()
        if self._thread_pid == pid:
            return
        with self._thread_lock:
            if self._thread_pid == pid:
                return
            self._thread_pid = pid
            thread = threading.Thread(
                target=self._replay_forever, name="sora-proxy-spool", daemon=True
            )
            thread.start()

    def _replay_forever(self) -> None:
        while True:
            time.sleep(REPLAY_INTERVAL)
            if self.spool.pending():
                self.replay()

    def _write(self, entry: dict[str, Any], write: Any) -> None:
        for pause in (*RETRY_PAUSES, None):
            try:
                write()
                return
            except ServiceUnavailable:
                if pause is not None:
                    time.sleep(pause)
        if self.spool.keep(entry):
            log.warning("store unavailable: a %s write is kept in the spool", entry["op"])
            self.ensure_replayer()
            return
        # Neither the store nor the spool took it: the line itself is the last copy.
        log.error("store and spool both failed; record to restore by hand: %s", _describe(entry))

    def _apply(self, entry: dict[str, Any]) -> None:
        operation = entry.get("op")
        if operation == "record":
            self.store.record(OwnedResource(**entry["resource"]))
        elif operation == "finish":
            ttl = max(1.0, float(entry["expires_at"]) - time.time())
            self.store.finish_idempotency_key(
                entry["scope"], entry["fingerprint"], decode_response(entry["response"]), ttl=ttl
            )
        elif operation == "release":
            self.store.release_idempotency_key(entry["scope"], entry["token"])
        elif operation == "end_intent":
            self.store.end_intent(entry["intent_id"])
        elif operation == "schedule":
            self.store.schedule(
                entry["key"],
                entry["kind"],
                entry["payload"],
                due_at=float(entry["due_at"]),
                keep_done=float(entry["keep_done"]),
            )
        elif operation == "bind_hold":
            self.store.bind_hold(entry["hold_id"], entry["video_id"])
        elif operation == "end_hold":
            actual = entry["actual"]
            self.store.end_hold(
                hold_id=entry["hold_id"],
                video_id=entry["video_id"],
                actual=None if actual is None else Amount(**actual),
            )
        else:
            log.error("spool entry with unknown op %r skipped", operation)


def _describe(entry: dict[str, Any]) -> str:
    """The entry for a log line: ids and names only (an answer body could be large)."""
    if entry["op"] == "record":
        resource = entry["resource"]
        shown = {
            key: resource[key] for key in ("resource_id", "owner", "upstream", "kind", "created_at")
        }
        return json.dumps({"op": "record", **shown})
    if entry["op"] == "finish":
        return json.dumps(
            {"op": "finish", "scope": entry["scope"], "status": entry["response"]["status"]}
        )
    if entry["op"] == "schedule":
        return json.dumps({"op": "schedule", "key": entry["key"]})
    if entry["op"] in ("bind_hold", "end_hold"):
        shown = {key: entry.get(key) for key in ("hold_id", "video_id", "actual")}
        return json.dumps({"op": entry["op"], **shown})
    return json.dumps(
        {"op": entry["op"], "scope": entry.get("scope"), "intent_id": entry.get("intent_id")}
    )
