"""The leased task queue of both stores: scheduling, claims, leases, tokens, and a real race."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from sora_proxy.errors import ServiceUnavailable
from sora_proxy.store import SQLiteStore, Store, Task

KEEP = 3600.0  # keep_done for tests that do not wait for a finished task to be forgotten


def add(store: Store, key: str, due_at: float, kind: str = "poll", **payload) -> bool:
    return store.schedule(key, kind, payload or {"key": key}, due_at=due_at, keep_done=KEEP)


def keys(tasks: list[Task]) -> list[str]:
    return [task.key for task in tasks]


# -- scheduling ------------------------------------------------------------------------------


def test_a_claimed_task_carries_what_was_scheduled(store):
    payload = {"video_id": "video_1", "f": 0.1 + 0.2, "big": 2**53 + 1, "empty": [], "o": {}}
    payload["text"] = 'é✓ "quoted" \\ \x00'
    before = time.time()
    assert store.schedule("poll:video_1", "poll", payload, due_at=before - 1, keep_done=KEEP)
    (task,) = store.claim_tasks(now=time.time(), lease=30, limit=10)
    assert (task.key, task.kind, task.payload, task.attempts) == (
        "poll:video_1",
        "poll",
        payload,
        1,
    )
    assert before <= task.created_at <= time.time()
    assert len(task.token) >= 32


def test_scheduling_a_pending_or_leased_key_again_is_a_no_op(store):
    now = time.time()
    assert add(store, "k", now - 10, n=1) is True
    assert add(store, "k", now - 20, n=2) is False  # pending: neither payload nor due time move
    (task,) = store.claim_tasks(now=now, lease=30, limit=5)
    assert task.payload == {"n": 1}
    assert add(store, "k", now - 30, n=3) is False  # leased
    assert store.claim_tasks(now=now + 1, lease=30, limit=5) == []
    assert store.pending_tasks() == {"poll": 1}


def test_a_finished_key_is_not_scheduled_again_until_it_is_forgotten(store):
    now = time.time()
    add(store, "k", now, n=1)
    task = store.claim_task("k", now=now, lease=30)
    assert store.finish_task("k", task.token, keep_done=0.3)
    assert store.schedule("k", "poll", {"n": 2}, due_at=now, keep_done=0.3) is False
    assert store.claim_task("k", now=now + 100, lease=30) is None
    assert store.pending_tasks() == {}
    time.sleep(0.4)
    assert store.schedule("k", "webhook", {"n": 3}, due_at=now, keep_done=0.3) is True
    again = store.claim_task("k", now=now, lease=30)
    assert (again.kind, again.payload, again.attempts) == ("webhook", {"n": 3}, 1)
    assert again.created_at > task.created_at


def test_schedule_keep_done_also_bounds_how_long_a_finished_key_blocks(store):
    """``finished less than keep_done seconds ago``, with schedule's own keep_done."""
    now = time.time()
    add(store, "k", now)
    task = store.claim_task("k", now=now, lease=30)
    store.finish_task("k", task.token, keep_done=KEEP)
    assert store.schedule("k", "poll", {}, due_at=now, keep_done=KEEP) is False
    assert store.schedule("k", "poll", {"n": 2}, due_at=now, keep_done=0) is True
    assert store.claim_task("k", now=now, lease=30).payload == {"n": 2}


# -- claims ----------------------------------------------------------------------------------


def test_claims_take_the_earliest_due_first_up_to_the_limit(store):
    now = time.time()
    for n, offset in enumerate([5, -3, -1, -7, -2, 0]):
        add(store, f"t{n}", now + offset)
    assert keys(store.claim_tasks(now=now, lease=30, limit=2)) == ["t3", "t1"]
    assert keys(store.claim_tasks(now=now, lease=30, limit=10)) == ["t4", "t2", "t5"]
    assert store.claim_tasks(now=now, lease=30, limit=10) == []  # t0 is not due yet
    assert keys(store.claim_tasks(now=now + 5, lease=30, limit=10)) == ["t0"]
    assert store.claim_tasks(now=now + 5, lease=30, limit=0) == []


def test_claims_of_some_kinds_skip_many_earlier_tasks_of_others(store):
    now = time.time()
    for n in range(60):
        add(store, f"poll:{n}", now - 1000 + n)
    for n in range(3):
        add(store, f"webhook:{n}", now - 10 + n, kind="webhook")
    add(store, "archive:0", now - 500, kind="archive")
    webhooks = store.claim_tasks(now=now, lease=30, limit=2, kinds=("webhook",))
    assert keys(webhooks) == ["webhook:0", "webhook:1"]
    assert {task.kind for task in webhooks} == {"webhook"}
    assert keys(store.claim_tasks(now=now, lease=30, limit=2, kinds=("webhook", "archive"))) == [
        "archive:0",
        "webhook:2",
    ]
    assert store.claim_tasks(now=now, lease=30, limit=5, kinds=("webhook", "nothing")) == []
    assert store.claim_tasks(now=now, lease=30, limit=5, kinds=()) == []
    assert keys(store.claim_tasks(now=now, lease=30, limit=3)) == ["poll:0", "poll:1", "poll:2"]
    assert store.pending_tasks() == {"poll": 60, "webhook": 3, "archive": 1}


def test_a_leased_task_comes_back_when_its_lease_runs_out(store):
    now = time.time()
    add(store, "k", now)
    first = store.claim_task("k", now=now, lease=10)
    assert first.attempts == 1
    assert store.claim_tasks(now=now + 9.9, lease=10, limit=5) == []
    assert store.claim_task("k", now=now + 9.9, lease=10) is None
    (second,) = store.claim_tasks(now=now + 10, lease=10, limit=5)
    assert second.attempts == 2 and second.token != first.token
    assert (second.payload, second.created_at) == (first.payload, first.created_at)
    third = store.claim_task("k", now=now + 20, lease=10)
    assert third.attempts == 3 and third.token not in (first.token, second.token)


def test_claim_task_takes_only_a_due_unheld_pending_task(store):
    now = time.time()
    add(store, "due", now - 1)
    add(store, "later", now + 60)
    add(store, "held", now - 1)
    add(store, "done", now - 1)
    store.claim_task("held", now=now, lease=30)
    done = store.claim_task("done", now=now, lease=30)
    store.finish_task("done", done.token, keep_done=KEEP)

    task = store.claim_task("due", now=now, lease=30)
    assert (task.key, task.kind, task.payload, task.attempts) == ("due", "poll", {"key": "due"}, 1)
    assert store.claim_task("due", now=now, lease=30) is None  # now held by the call above
    assert store.claim_task("later", now=now, lease=30) is None
    assert store.claim_task("held", now=now, lease=30) is None
    assert store.claim_task("done", now=now + 1e6, lease=30) is None
    assert store.claim_task("unknown", now=now, lease=30) is None
    assert store.claim_task("later", now=now + 60, lease=30).key == "later"


# -- tokens ----------------------------------------------------------------------------------


def test_only_the_current_token_extends_reschedules_or_finishes(store):
    now = time.time()
    add(store, "k", now, n=1)
    stale = store.claim_task("k", now=now, lease=10)
    current = store.claim_task("k", now=now + 10, lease=10)  # the first lease ran out
    for token in (stale.token, "", "not-a-token"):
        assert store.extend_lease("k", token, until=now + 1000) is False
        assert store.reschedule("k", token, due_at=now + 1000, payload={"n": 9}) is False
        assert store.finish_task("k", token, keep_done=KEEP) is False
    assert store.extend_lease("other", current.token, until=now + 1000) is False
    # Nothing changed: still held by `current` until now + 20, still pending, same payload.
    assert store.claim_task("k", now=now + 19.9, lease=10) is None
    assert store.pending_tasks() == {"poll": 1}
    assert store.reschedule("k", current.token, due_at=now + 30) is True
    assert store.claim_task("k", now=now + 29.9, lease=10) is None
    final = store.claim_task("k", now=now + 30, lease=10)
    assert (final.payload, final.attempts) == ({"n": 1}, 3)


def test_an_unclaimed_task_has_no_holder(store):
    now = time.time()
    add(store, "k", now + 60)
    assert store.extend_lease("k", "", until=now) is False
    assert store.reschedule("k", "", due_at=now) is False
    assert store.finish_task("k", "", keep_done=KEEP) is False
    assert store.claim_task("k", now=now, lease=10) is None


def test_extend_lease_keeps_the_task_held(store):
    now = time.time()
    add(store, "k", now)
    task = store.claim_task("k", now=now, lease=10)
    assert store.extend_lease("k", task.token, until=now + 100) is True
    assert store.claim_tasks(now=now + 99, lease=10, limit=5) == []
    assert store.finish_task("k", task.token, keep_done=KEEP) is True
    assert store.claim_tasks(now=now + 1000, lease=10, limit=5) == []


def test_reschedule_gives_the_task_back_with_a_new_payload_and_due_time(store):
    now = time.time()
    add(store, "k", now, n=1)
    add(store, "j", now + 50, n=0)
    task = store.claim_task("k", now=now, lease=10)
    assert store.reschedule("k", task.token, due_at=now + 100, payload={"n": 2, "x": [1.5]})
    # Given back: its old token holds nothing any more.
    assert store.finish_task("k", task.token, keep_done=KEEP) is False
    assert keys(store.claim_tasks(now=now + 99, lease=10, limit=5)) == ["j"]
    (again,) = store.claim_tasks(now=now + 100, lease=10, limit=5)
    assert (again.key, again.payload, again.attempts) == ("k", {"n": 2, "x": [1.5]}, 2)
    assert again.created_at == task.created_at


def test_finish_takes_the_task_off_the_queue(store):
    now = time.time()
    add(store, "k", now)
    task = store.claim_task("k", now=now, lease=10)
    assert store.finish_task("k", task.token, keep_done=KEEP) is True
    assert store.finish_task("k", task.token, keep_done=KEEP) is False
    assert store.extend_lease("k", task.token, until=now + 100) is False
    assert store.reschedule("k", task.token, due_at=now) is False
    assert store.claim_tasks(now=now + 1e6, lease=10, limit=5) == []
    assert store.pending_tasks() == {}


def test_pending_tasks_counts_pending_and_leased_per_kind(store):
    now = time.time()
    assert store.pending_tasks() == {}
    for n in range(3):
        add(store, f"poll:{n}", now)
    add(store, "webhook:0", now, kind="webhook")
    add(store, "archive:0", now + 100, kind="archive")
    leased = store.claim_tasks(now=now, lease=10, limit=2, kinds=("poll",))
    assert store.pending_tasks() == {"poll": 3, "webhook": 1, "archive": 1}
    store.finish_task(leased[0].key, leased[0].token, keep_done=KEEP)
    webhook = store.claim_task("webhook:0", now=now, lease=10)
    store.finish_task("webhook:0", webhook.token, keep_done=KEEP)
    assert store.pending_tasks() == {"poll": 2, "archive": 1}


# -- SQLite specifics ------------------------------------------------------------------------


def test_sqlite_forgets_finished_tasks_now_and_then(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite3", cleanup_every=5)
    now = time.time()
    for n in range(5):
        add(store, f"k{n}", now)
    tasks = store.claim_tasks(now=now, lease=10, limit=5)
    for task in tasks[:4]:
        store.finish_task(task.key, task.token, keep_done=0.05)
    time.sleep(0.1)
    store.finish_task(tasks[4].key, tasks[4].token, keep_done=KEEP)  # the 5th finish sweeps
    conn = sqlite3.connect(store.path)
    assert [row[0] for row in conn.execute("SELECT key FROM tasks")] == ["k4"]
    conn.close()


def test_sqlite_adds_the_tasks_table_to_an_existing_file(tmp_path):
    path = tmp_path / "old.sqlite3"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE tasks")  # as a file made before tasks existed
    conn.close()
    store = SQLiteStore(path)
    assert add(store, "k", time.time())
    assert store.pending_tasks() == {"poll": 1}


def test_sqlite_keeps_payloads_as_json_text(tmp_path):
    store = SQLiteStore(Path(tmp_path) / "s.sqlite3")
    add(store, "k", time.time(), video_id="video_1")
    conn = sqlite3.connect(store.path)
    (payload,) = conn.execute("SELECT payload FROM tasks").fetchone()
    conn.close()
    assert json.loads(payload) == {"video_id": "video_1"}


# -- store down ------------------------------------------------------------------------------

TASK_CALLS = {
    "schedule": lambda s: add(s, "k", 0.0),
    "claim_tasks": lambda s: s.claim_tasks(now=0.0, lease=1, limit=5),
    "claim_tasks_of_kinds": lambda s: s.claim_tasks(now=0.0, lease=1, limit=5, kinds=("poll",)),
    "claim_task": lambda s: s.claim_task("k", now=0.0, lease=1),
    "extend_lease": lambda s: s.extend_lease("k", "token", until=1.0),
    "reschedule": lambda s: s.reschedule("k", "token", due_at=1.0, payload={}),
    "finish_task": lambda s: s.finish_task("k", "token", keep_done=1.0),
    "pending_tasks": lambda s: s.pending_tasks(),
}


def test_task_calls_answer_503_when_the_store_is_unreachable(unreachable_store):
    for name, call in TASK_CALLS.items():
        with pytest.raises(ServiceUnavailable) as raised:
            call(unreachable_store)
        assert raised.value.status == 503, name


# -- a real race between processes ------------------------------------------------------------

RACE_TASKS = 200
RACE_PROCESSES = 4
RACE_LEASE = 0.25


def _race_worker(store: Store, worker: int, barrier, reclaimed, results) -> None:
    """Claim and finish until nothing is pending.

    Worker 0 holds its first batch past the lease until some task was claimed again (its
    lease ran out under another worker), so at least one late finish must be refused; the
    others stall past the lease on every 20th claim, racing in more reclaims.
    """
    claims: list[tuple[str, float, str, bool, float]] = []
    barrier.wait()
    while True:
        now = time.time()
        tasks = store.claim_tasks(now=now, lease=RACE_LEASE, limit=3)
        if not tasks:
            if not store.pending_tasks():
                break
            time.sleep(0.005)
            continue
        if any(task.attempts > 1 for task in tasks):
            reclaimed.set()
        for task in tasks:
            if worker == 0 and not claims:
                time.sleep(RACE_LEASE)
                reclaimed.wait(timeout=10)
            elif worker and (len(claims) + worker) % 20 == 0:
                time.sleep(RACE_LEASE * 1.5)
            finished = store.finish_task(task.key, task.token, keep_done=KEEP)
            claims.append((task.key, now, task.token, finished, time.time()))
    results.put(claims)


def test_many_processes_finish_every_task_exactly_once_never_two_holders_at_once(store):
    now = time.time()
    for n in range(RACE_TASKS):
        add(store, f"race:{n:03d}", now - 1 + n / 1000)
    if isinstance(store, SQLiteStore):
        store.ping()  # the parent holds a connection when it forks, as gunicorn's master may
    context = multiprocessing.get_context("fork")
    barrier, reclaimed, results = context.Barrier(RACE_PROCESSES), context.Event(), context.Queue()
    children = [
        context.Process(target=_race_worker, args=(store, n, barrier, reclaimed, results))
        for n in range(RACE_PROCESSES)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0
    claims = [claim for report in reports for claim in report]

    by_key: dict[str, list[tuple[str, float, str, bool, float]]] = {}
    for claim in claims:
        by_key.setdefault(claim[0], []).append(claim)
    assert sorted(by_key) == [f"race:{n:03d}" for n in range(RACE_TASKS)]
    assert len({claim[2] for claim in claims}) == len(claims)  # every claim got its own token
    for key, held in by_key.items():
        held.sort(key=lambda claim: claim[1])
        assert [claim[3] for claim in held].count(True) == 1, key
        # A hold lasts from its claim to its finish, or to its lease's end when the finish was
        # refused; the next claim of the same key may only start after it.
        for earlier, later in zip(held, held[1:]):
            assert earlier[3] is False, (key, held)  # nobody claims a finished task
            assert later[1] >= earlier[1] + RACE_LEASE, (key, held)
        assert held[-1][3] is True, (key, held)
    assert reclaimed.is_set()
    assert any(not claim[3] for claim in claims)  # a lease ran out under another worker
    assert store.pending_tasks() == {}
    assert store.claim_tasks(now=time.time() + 1e6, lease=1, limit=5) == []
