"""The spool keeps must-land writes while the store is down and replays them when it is back."""

from __future__ import annotations

import json
import logging
import os
import time

from redis_server import RedisServer

from sora_proxy.store import OwnedResource, StoredResponse, open_store
from sora_proxy.store.durable import DurableWrites
from sora_proxy.store.spool import Spool

RESPONSE = StoredResponse(200, [("Content-Type", "application/json")], b'{"id": "video_1"}')


def _resource(resource_id: str) -> OwnedResource:
    return OwnedResource(resource_id, "alice", "default", "video", time.time(), {"id": resource_id})


def test_writes_land_in_the_spool_while_redis_is_down_and_replay_in_order(tmp_path):
    with RedisServer() as server:
        store = open_store(server.url)
        writes = DurableWrites(store, Spool(tmp_path / "spool"))
        assert (
            store.claim_idempotency_key("scope", "fp", in_flight_ttl=900, token="t").claim.value
            == "new"
        )
        server.stop()
        writes.record(_resource("video_1"))
        writes.finish_idempotency_key("scope", "fp", RESPONSE, ttl=3600)
        writes.end_intent("intent-1")
        assert writes.pending() == 3
        entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "spool").glob("*.json"))]
        assert [e["op"] for e in entries] == ["record", "finish", "end_intent"]
        assert writes.replay() == 0  # still down: nothing lost, nothing applied
        assert writes.pending() == 3
        server.start()
        assert writes.replay() == 3
        assert writes.pending() == 0
        assert store.get("video_1").owner == "alice"
        replayed = store.claim_idempotency_key("scope", "fp", in_flight_ttl=900)
        assert replayed.response == RESPONSE


def test_background_replayer_drains_the_spool(tmp_path):
    with RedisServer() as server:
        store = open_store(server.url)
        writes = DurableWrites(store, Spool(tmp_path / "spool"))
        server.stop()
        writes.record(_resource("video_9"))  # starts the replayer thread
        server.start()
        deadline = time.monotonic() + 10
        while writes.pending() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert writes.pending() == 0
        assert store.get("video_9") is not None


def test_an_entry_claimed_by_a_dead_process_is_taken_back(tmp_path):
    spool = Spool(tmp_path)
    assert spool.keep({"op": "record", "n": 1})
    (entry,) = tmp_path.glob("*.json")
    entry.rename(entry.with_name(entry.name + ".replaying-999999999"))  # no such pid
    applied: list[dict] = []
    assert spool.replay(applied.append) == 1
    assert applied == [{"op": "record", "n": 1}]
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_entry_is_set_aside_not_blocking(tmp_path, caplog):
    spool = Spool(tmp_path)
    (tmp_path / "00000000000000000001-1-x.json").write_text("{not json")
    assert spool.keep({"op": "record", "n": 2})
    applied: list[dict] = []
    assert spool.replay(applied.append) == 1
    assert [p.name.endswith(".bad") for p in tmp_path.iterdir()] == [True]


def test_when_store_and_spool_both_fail_the_log_line_keeps_the_record(tmp_path, caplog):
    caplog.set_level(logging.ERROR, "sora_proxy.store")
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")
    with RedisServer() as server:
        store = open_store(server.url)
        server.stop()
        writes = DurableWrites(store, Spool(blocked / "spool"))
        writes.record(_resource("video_lost"))
    lines = [r.getMessage() for r in caplog.records]
    assert any("video_lost" in line and "restore by hand" in line for line in lines)
    assert not os.path.exists(blocked / "spool")
