"""One contract, two stores: every test here runs against SQLite and a real redis-server."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from redis_server import RedisServer
from servers import free_port

from sora_proxy.errors import ServiceUnavailable
from sora_proxy.store import (
    Claim,
    OwnedResource,
    RedisStore,
    SQLiteStore,
    Store,
    StoredResponse,
    open_store,
)


def video(
    resource_id: str, owner: str = "alice", created_at: float = 1000.0, **extra
) -> OwnedResource:
    fields = {
        "upstream": "default",
        "kind": "video",
        "last_object": {"id": resource_id, "status": "queued"},
    }
    fields.update(extra)
    return OwnedResource(resource_id=resource_id, owner=owner, created_at=created_at, **fields)


def all_ids(store: Store, owner: str, kind: str = "video", order: str = "asc") -> list[str]:
    page, has_more = store.list_owned(owner, kind, after=None, limit=100, order=order)
    assert not has_more
    return [r.resource_id for r in page]


# -- records ---------------------------------------------------------------------------------


def test_record_and_get_round_trip(store):
    resource = video(
        "video_1",
        owner="team:alice",
        created_at=1712345678.123456,
        last_object={"id": "video_1", "progress": 0.5, "note": "é✓", "nested": {"a": [1, None]}},
    )
    store.record(resource)
    assert store.get("video_1") == resource
    assert store.get("video_unknown") is None


def test_record_without_last_object(store):
    store.record(video("video_1", last_object=None))
    assert store.get("video_1").last_object is None


def test_update_object_replaces_only_the_object(store):
    store.record(video("video_1", created_at=5.5))
    store.update_object("video_1", {"id": "video_1", "status": "completed"})
    assert store.get("video_1") == video(
        "video_1", created_at=5.5, last_object={"id": "video_1", "status": "completed"}
    )
    store.update_object("video_missing", {"id": "video_missing"})
    assert store.get("video_missing") is None
    assert all_ids(store, "alice") == ["video_1"]


def test_forget_removes_record_and_listing(store):
    store.record(video("video_1"))
    store.record(video("video_2"))
    store.forget("video_1")
    store.forget("video_never")
    assert store.get("video_1") is None
    assert all_ids(store, "alice") == ["video_2"]


def test_record_overwrite_moves_to_new_owner_and_kind(store):
    store.record(video("res_1", owner="alice"))
    store.record(video("res_1", owner="bob", created_at=2000.0))
    assert store.get("res_1").owner == "bob"
    assert all_ids(store, "alice") == []
    assert all_ids(store, "bob") == ["res_1"]
    store.record(video("res_1", owner="bob", kind="character"))
    assert all_ids(store, "bob") == []
    assert all_ids(store, "bob", "character") == ["res_1"]


def test_raw_record_holds_exactly_the_given_fields(store):
    store.record(
        video("video_raw", owner="alice", created_at=12.25, last_object={"id": "video_raw"})
    )
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM resources").fetchone())
        conn.close()
        assert row.pop("resource_id") == "video_raw"
        row["last_object"] = json.loads(row["last_object"])
    else:
        assert isinstance(store, RedisStore)
        row = json.loads(store.client.get(f"{store.prefix}res:video_raw"))
    assert row == {
        "owner": "alice",
        "upstream": "default",
        "kind": "video",
        "created_at": 12.25,
        "last_object": {"id": "video_raw"},
        "handle": None,
    }


def test_a_proxy_owned_record_keeps_its_upstream_handle(store):
    handle = {"id": "task_abc", "polling_url": None, "result_urls": ["https://r/1.mp4"]}
    store.record(video("video_own", handle=handle))
    assert store.get("video_own").handle == handle
    store.update_object("video_own", {"id": "video_own", "status": "completed"})
    assert store.get("video_own").handle == handle


def test_one_poll_per_interval_across_threads(store):
    store.record(video("video_poll"))
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda: wins.append(store.claim_poll("video_poll", interval=0.5)))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1
    assert store.claim_poll("video_poll", interval=0.5) is False
    time.sleep(0.6)
    assert store.claim_poll("video_poll", interval=0.5) is True
    store.forget("video_poll")
    assert store.claim_poll("video_poll", interval=0.5) is True


# -- listing ---------------------------------------------------------------------------------


@pytest.fixture
def listing(store) -> list[str]:
    """Seven of alice's videos interleaved with bob's, three sharing one created_at."""
    alice = [
        ("video_g", 10.0),
        ("video_c", 20.0),
        ("video_a", 20.0),
        ("video_e", 20.0),
        ("video_b", 30.0),
        ("video_f", 5.0),
        ("video_d", 40.5),
    ]
    for n, (resource_id, created_at) in enumerate(alice):
        store.record(video(resource_id, "alice", created_at))
        store.record(video(f"video_bob{n}", "bob", created_at))
    store.record(video("char_a1", "alice", 25.0, kind="character"))
    return [rid for rid, _ in sorted(alice, key=lambda item: (item[1], item[0]))]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_list_owned_pages_in_order(store, listing, order):
    expected = listing if order == "asc" else listing[::-1]
    pages, after = [], None
    while True:
        page, has_more = store.list_owned("alice", "video", after=after, limit=3, order=order)
        pages.append(([r.resource_id for r in page], has_more))
        if not has_more:
            break
        after = page[-1].resource_id
    assert pages == [(expected[0:3], True), (expected[3:6], True), (expected[6:], False)]
    assert all(
        r.owner == "alice"
        for r in store.list_owned("alice", "video", after=None, limit=7, order=order)[0]
    )


def test_list_owned_has_more_is_exact(store, listing):
    assert store.list_owned("alice", "video", after=None, limit=7, order="asc")[1] is False
    page, has_more = store.list_owned("alice", "video", after=None, limit=6, order="asc")
    assert has_more is True
    rest, has_more = store.list_owned(
        "alice", "video", after=page[-1].resource_id, limit=6, order="asc"
    )
    assert [r.resource_id for r in rest] == listing[6:] and has_more is False
    last, has_more = store.list_owned("alice", "video", after=listing[-1], limit=3, order="asc")
    assert last == [] and has_more is False


def test_list_owned_after_must_be_the_callers_own(store, listing):
    for after in ("video_bob0", "video_unknown", "char_a1"):
        with pytest.raises(KeyError):
            store.list_owned("alice", "video", after=after, limit=3, order="asc")


def test_list_owned_separates_kinds_and_owners(store, listing):
    assert all_ids(store, "alice", "character") == ["char_a1"]
    assert "char_a1" not in all_ids(store, "alice", "video")
    assert all_ids(store, "carol") == []
    assert all_ids(store, "bob", "character") == []


# -- idempotency -----------------------------------------------------------------------------

RESPONSE = StoredResponse(
    status=201,
    headers=[("content-type", "application/json"), ("x-b", "2"), ("x-a", "1"), ("x-b", "3")],
    body=b'{"id": "video_1"}\xff\x00\xfe',
)


def test_claim_then_in_flight_whatever_the_fingerprint(store):
    assert store.claim_idempotency_key("s1", "fp", in_flight_ttl=30).claim is Claim.NEW
    assert store.claim_idempotency_key("s1", "fp", in_flight_ttl=30).claim is Claim.IN_FLIGHT
    assert store.claim_idempotency_key("s1", "other", in_flight_ttl=30).claim is Claim.IN_FLIGHT
    assert store.claim_idempotency_key("s2", "fp", in_flight_ttl=30).claim is Claim.NEW


def test_finish_replays_the_identical_response(store):
    store.claim_idempotency_key("s1", "fp", in_flight_ttl=30)
    store.finish_idempotency_key("s1", "fp", RESPONSE, ttl=60)
    result = store.claim_idempotency_key("s1", "fp", in_flight_ttl=30)
    assert result.claim is Claim.REPLAY
    assert result.response == RESPONSE
    assert result.response.headers == RESPONSE.headers  # pairs, order and duplicates kept
    mismatch = store.claim_idempotency_key("s1", "other", in_flight_ttl=30)
    assert mismatch.claim is Claim.MISMATCH and mismatch.response is None


def test_release_frees_a_claim_but_not_a_finished_answer(store):
    store.claim_idempotency_key("s1", "fp", in_flight_ttl=30)
    store.release_idempotency_key("s1")
    assert store.claim_idempotency_key("s1", "other", in_flight_ttl=30).claim is Claim.NEW
    store.finish_idempotency_key("s1", "other", RESPONSE, ttl=60)
    store.release_idempotency_key("s1")
    store.release_idempotency_key("s_never")
    assert store.claim_idempotency_key("s1", "other", in_flight_ttl=30).claim is Claim.REPLAY


def test_claims_and_answers_expire(store):
    store.claim_idempotency_key("s1", "fp", in_flight_ttl=0.2)
    store.claim_idempotency_key("s2", "fp", in_flight_ttl=30)
    store.finish_idempotency_key("s2", "fp", RESPONSE, ttl=0.2)
    time.sleep(0.3)
    assert store.claim_idempotency_key("s1", "other", in_flight_ttl=30).claim is Claim.NEW
    assert store.claim_idempotency_key("s2", "other", in_flight_ttl=30).claim is Claim.NEW


def _race(
    store: Store, scope: str, threads: int, barrier, *, also_this_thread: bool = False
) -> list[str]:
    outcomes: list[str] = []

    def claim() -> None:
        barrier.wait()
        outcomes.append(store.claim_idempotency_key(scope, "fp", in_flight_ttl=30).claim.value)

    workers = [threading.Thread(target=claim) for _ in range(threads)]
    for worker in workers:
        worker.start()
    if also_this_thread:
        claim()
    for worker in workers:
        worker.join()
    return outcomes


def test_one_of_many_threads_wins_a_claim(store):
    outcomes = _race(store, "race", 20, threading.Barrier(20))
    assert sorted(outcomes) == ["in_flight"] * 19 + ["new"]


def _race_in_child(store: SQLiteStore, scope: str, barrier, results) -> None:
    inherited = store._local.conn
    # The main thread claims too: its connection, inherited from the parent, must be replaced.
    outcomes = _race(store, scope, 4, barrier, also_this_thread=True)
    results.put((outcomes, inherited is not None and store._local.conn is not inherited))


def test_one_of_many_processes_wins_a_sqlite_claim(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/shared.sqlite3")
    store.ping()  # the parent holds a connection when it forks, as gunicorn's master may
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(20), context.Queue()
    children = [
        context.Process(target=_race_in_child, args=(store, "race", barrier, results))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=15) for _ in children]
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0
    assert all(fresh for _, fresh in reports)
    outcomes = [outcome for report, _ in reports for outcome in report]
    assert sorted(outcomes) == ["in_flight"] * 19 + ["new"]
    assert store.claim_idempotency_key("race", "fp", in_flight_ttl=30).claim is Claim.IN_FLIGHT


def test_sqlite_sweeps_expired_idempotency_rows(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite3", cleanup_every=10)
    for n in range(9):
        store.claim_idempotency_key(f"old{n}", "fp", in_flight_ttl=0.05)
    time.sleep(0.1)
    store.claim_idempotency_key("fresh", "fp", in_flight_ttl=30)  # the 10th claim sweeps
    conn = sqlite3.connect(store.path)
    assert [row[0] for row in conn.execute("SELECT scope FROM idempotency")] == ["fresh"]
    conn.close()


# -- store down ------------------------------------------------------------------------------

CALLS = {
    "record": lambda s: s.record(video("video_1")),
    "get": lambda s: s.get("video_1"),
    "update_object": lambda s: s.update_object("video_1", {"id": "video_1"}),
    "forget": lambda s: s.forget("video_1"),
    "list_owned": lambda s: s.list_owned("alice", "video", after=None, limit=3, order="asc"),
    "claim": lambda s: s.claim_idempotency_key("scope-secret", "fp-secret", in_flight_ttl=30),
    "finish": lambda s: s.finish_idempotency_key("scope-secret", "fp-secret", RESPONSE, ttl=60),
    "release": lambda s: s.release_idempotency_key("scope-secret"),
    "ping": lambda s: s.ping(),
}


def assert_all_unavailable(store: Store, caplog, within: float) -> None:
    for name, call in CALLS.items():
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            call(store)
        assert time.monotonic() - started < within, name
        assert raised.value.status == 503
        assert raised.value.message == "The proxy's store is unavailable."
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "scope-secret" not in logged and "fp-secret" not in logged and "video_1" not in logged


def _directory_in_the_way(tmp_path: Path) -> Path:
    (tmp_path / "store.sqlite3").mkdir()
    return tmp_path / "store.sqlite3"


def _file_in_the_way(tmp_path: Path) -> Path:
    (tmp_path / "not-a-dir").write_text("x")
    return tmp_path / "not-a-dir" / "store.sqlite3"


@pytest.mark.parametrize("make_path", [_directory_in_the_way, _file_in_the_way])
def test_sqlite_unusable_path_answers_503(tmp_path, caplog, make_path):
    caplog.set_level(logging.WARNING, "sora_proxy.store")
    store = open_store(f"sqlite:///{make_path(tmp_path)}")  # does not raise
    assert_all_unavailable(store, caplog, within=3)
    assert caplog.records


def test_sqlite_removed_directory_answers_503_to_new_connections(tmp_path, caplog):
    directory = tmp_path / "data"
    store = open_store(f"sqlite:///{directory}/store.sqlite3")
    store.record(video("video_0"))
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()
    failures: list[BaseException] = []
    thread = threading.Thread(target=lambda: failures.extend(_unavailable(store)))
    thread.start()
    thread.join()
    assert len(failures) == len(CALLS)


def _unavailable(store: Store) -> list[BaseException]:
    errors = []
    for call in CALLS.values():
        try:
            call(store)
        except ServiceUnavailable as error:
            errors.append(error)
    return errors


def test_sqlite_locked_beyond_timeout_answers_503_then_recovers(tmp_path):
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path, timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(ServiceUnavailable):
        store.claim_idempotency_key("s1", "fp", in_flight_ttl=30)
    with pytest.raises(ServiceUnavailable):
        store.record(video("video_1"))
    holder.execute("COMMIT")
    holder.close()
    assert store.claim_idempotency_key("s1", "fp", in_flight_ttl=30).claim is Claim.NEW


def test_redis_down_answers_503_fast_and_recovers(caplog):
    caplog.set_level(logging.WARNING, "sora_proxy.store")
    with RedisServer() as server:
        store = open_store(server.url)
        store.record(video("video_1"))  # a pooled connection now exists, and will go stale
        server.stop()
        assert_all_unavailable(store, caplog, within=3)
        server.start()  # a restart: the data was kept
        assert store.get("video_1") == video("video_1")
        assert store.claim_idempotency_key("s", "fp", in_flight_ttl=30).claim is Claim.NEW


def test_redis_that_hangs_answers_503_within_the_socket_timeout():
    with RedisServer() as server:
        store = open_store(server.url)
        store.ping()
        server.pause()
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            store.get("video_1")
        assert time.monotonic() - started < 3.5
        server.resume()
        assert store.get("video_1") is None


# -- open_store ------------------------------------------------------------------------------


def test_open_store_sqlite_relative_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/rel.sqlite3")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == tmp_path / "data" / "rel.sqlite3" and relative.path.is_file()
    absolute = open_store(f"sqlite:///{tmp_path}/deep/er/abs.sqlite3")
    assert (
        str(tmp_path).startswith("/") and absolute.path == tmp_path / "deep" / "er" / "abs.sqlite3"
    )
    absolute.record(video("video_1"))
    assert absolute.get("video_1") is not None


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}",
        "rediss://127.0.0.1:{port}/2",
        "unix:///nonexistent/redis.sock?db=3",
    ],
)
def test_open_store_redis_does_not_connect(url):
    store = open_store(url.format(port=free_port()), prefix="p:")
    assert isinstance(store, RedisStore) and store.prefix == "p:"
    with pytest.raises(ServiceUnavailable):
        store.ping()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "video.db",
        "/abs/path.db",
        "postgres://u:pw@h/db",
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite://host/x.db",
        "sqlite:///dir/",
        "redis://:hunter2@h:port/0",
        "redis://:hunter2@h/notadb",
        "unix:///tmp/r.sock?db=x&password=hunter2",
    ],
)
def test_open_store_rejects_bad_urls_without_echoing_them(url):
    with pytest.raises(ValueError) as raised:
        open_store(url)
    message = str(raised.value)
    assert message and "\n" not in message
    assert "hunter2" not in message and "pw" not in message


def test_store_file_is_created_before_workers_fork(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.sqlite3")
    assert Path(store.path).is_file()
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert os.path.getsize(store.path) > 0


# -- intents, claim tokens, warnings ---------------------------------------------------------


def test_intents_are_written_ended_and_counted_when_stranded(store):
    from sora_proxy.store import Intent

    now = time.time()
    store.begin_intent(Intent("i-old", "alice", "/videos", now - 7200), ttl=86400)
    store.begin_intent(Intent("i-new", "alice", "/videos", now), ttl=86400)
    assert store.open_intents(older_than=3600) == 1
    assert store.open_intents(older_than=0) == 2
    store.end_intent("i-old")
    store.end_intent("i-unknown")  # no-op
    assert store.open_intents(older_than=3600) == 0
    assert store.open_intents(older_than=0) == 1


def test_release_with_a_token_ends_only_its_own_claim(store):
    assert store.claim_idempotency_key("s", "fp", in_flight_ttl=30, token="t1").claim is Claim.NEW
    store.release_idempotency_key("s", "t-other")
    assert (
        store.claim_idempotency_key("s", "fp", in_flight_ttl=30, token="t2").claim
        is Claim.IN_FLIGHT
    )
    store.release_idempotency_key("s", "t1")
    assert store.claim_idempotency_key("s", "fp", in_flight_ttl=30, token="t3").claim is Claim.NEW
    store.finish_idempotency_key("s", "fp", RESPONSE, ttl=60)
    store.release_idempotency_key("s", "t3")  # too late: the answer stays
    assert store.claim_idempotency_key("s", "fp", in_flight_ttl=30).claim is Claim.REPLAY


def test_redis_without_persistence_is_warned_about(redis_server):
    store = open_store(redis_server.url)  # the test server runs with --save "" --appendonly no
    (warning,) = store.warnings()
    assert "persistence is off" in warning
    store.client.config_set("appendonly", "yes")
    try:
        assert store.warnings() == []
    finally:
        store.client.config_set("appendonly", "no")


def test_sqlite_file_deleted_while_running_is_503_and_logged(tmp_path, caplog):
    caplog.set_level(logging.ERROR, "sora_proxy.store")
    path = tmp_path / "store.sqlite3"
    store = open_store(f"sqlite:///{path}")
    store.record(video("video_1"))
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    with pytest.raises(ServiceUnavailable):
        store.record(video("video_2"))
    with pytest.raises(ServiceUnavailable):
        store.ping()
    assert not path.exists()  # no new, empty file written in its place
    assert any("was deleted while the proxy runs" in r.getMessage() for r in caplog.records)


def test_sqlite_file_replaced_by_a_restore_is_reopened(tmp_path):
    path = tmp_path / "store.sqlite3"
    store = open_store(f"sqlite:///{path}")
    store.record(video("video_1"))
    backup = tmp_path / "backup.sqlite3"
    source = sqlite3.connect(path)
    target = sqlite3.connect(backup)
    source.backup(target)
    source.close()
    target.close()
    store.record(video("video_2"))  # written after the backup
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"store.sqlite3{suffix}").unlink(missing_ok=True)
    backup.rename(path)
    assert store.get("video_1") is not None
    assert store.get("video_2") is None  # the restored file, not the unlinked one
