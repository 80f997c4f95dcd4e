"""The budget ledger of both stores: holds, caps, settlement, expiry, and real races."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest

from sora_proxy.errors import ServiceUnavailable
from sora_proxy.store import SQLiteStore, Store, ledger
from sora_proxy.store.ledger import Amount, BudgetHold, Cap, Refusal, UsageRow

DAY, MONTH = "day:2026-12-03", "month:2026-12"
NEXT_DAY = "day:2026-12-04"
PERIODS = (DAY, MONTH)
EIGHT = Amount(8000, 800_000)  # 8 s at 0.10 a second


def make(
    owner: str = "alice",
    amount: Amount = EIGHT,
    model: str = "sora-2",
    periods: tuple[str, ...] = PERIODS,
    **terms,
) -> BudgetHold:
    return BudgetHold(
        hold_id=uuid.uuid4().hex,
        owner=owner,
        model=model,
        amount=amount,
        periods=periods,
        created_at=time.time(),
        terms=terms or {"seconds": 8, "price_micros": 100_000},
    )


def take(store: Store, hold: BudgetHold, concurrent: int | None = None, **caps: Cap):
    """``take_hold`` with caps keyed by the names DAY, MONTH, NEXT_DAY."""
    named = {globals()[name]: cap for name, cap in caps.items()}
    return store.take_hold(hold, concurrent=concurrent, caps=named)


def row(store: Store, period: str = DAY, owner: str = "alice", model: str = "sora-2") -> UsageRow:
    return store.usage(owner, (period,)).periods[period].get(model, UsageRow())


def snapshot(store: Store, owner: str = "alice"):
    usage = store.usage(owner, (DAY, MONTH, NEXT_DAY))
    return {p: dict(rows) for p, rows in usage.periods.items()}, usage.open_holds


# -- taking holds ----------------------------------------------------------------------------


def test_a_hold_within_its_caps_is_held_in_each_period(store):
    hold = make()
    assert take(store, hold, concurrent=1, DAY=Cap(ms=8000, micros=800_000), MONTH=Cap()) is None
    usage = store.usage("alice", PERIODS)
    assert usage.open_holds == 1
    for period in PERIODS:
        assert usage.periods[period] == {"sora-2": UsageRow(held=EIGHT, holding=1)}
    assert store.usage("alice", ()).periods == {}
    assert store.usage("alice", (NEXT_DAY,)).periods == {NEXT_DAY: {}}
    assert store.usage("nobody", PERIODS).open_holds == 0


def test_a_bound_hold_comes_back_as_it_was_taken(store):
    hold = make(seconds=12, source_seconds=4.5, note='é✓ "quoted"', nested={"a": [1, None]})
    hold = BudgetHold(
        hold.hold_id, "team:alice", "sora-2-pro", hold.amount, hold.periods, 1712345678.123456,
        hold.terms,
    )  # fmt: skip
    assert take(store, hold) is None
    assert store.open_hold("video_1") is None  # not bound yet
    store.bind_hold(hold.hold_id, "video_1")
    assert store.open_hold("video_1") == hold
    assert store.open_hold("video_2") is None


def test_the_concurrency_cap_counts_open_holds(store):
    first, second = make(), make()
    assert take(store, first, concurrent=2) is None
    store.bind_hold(first.hold_id, "video_1")  # bound holds are still open
    assert take(store, second, concurrent=2) is None
    before = snapshot(store)
    third = make()
    assert take(store, third, concurrent=2) == Refusal("concurrency")
    assert take(store, make(), concurrent=0) == Refusal("concurrency")
    assert snapshot(store) == before
    assert store.end_hold(hold_id=third.hold_id, actual=None) is None  # never added
    store.end_hold(video_id="video_1", actual=EIGHT)
    assert take(store, third, concurrent=2) is None
    assert take(store, make(), concurrent=None) is None  # no cap


@pytest.mark.parametrize(
    ("period", "cap"),
    [
        ("DAY", Cap(ms=15_999)),
        ("DAY", Cap(micros=1_599_999)),
        ("MONTH", Cap(ms=15_999)),
        ("MONTH", Cap(ms=100_000, micros=1_599_999)),
    ],
)
def test_each_periods_cap_refuses_a_hold_that_would_go_over(store, period, cap):
    roomy = {"DAY": Cap(ms=10**9, micros=10**12), "MONTH": Cap(ms=10**9, micros=10**12)}
    caps = {**roomy, period: cap}
    assert take(store, make(), **caps) is None
    before = snapshot(store)
    refused = make()
    assert take(store, refused, **caps) == Refusal("budget", globals()[period])
    assert snapshot(store) == before
    assert store.end_hold(hold_id=refused.hold_id, actual=None) is None
    # One unit less and it fits exactly (spent + held + this == cap).
    smaller = Amount(EIGHT.ms - 1, EIGHT.micros - 1)
    assert take(store, make(amount=smaller), **caps) is None


def test_a_cap_on_one_period_of_two_leaves_the_other_free(store):
    assert take(store, make(), MONTH=Cap(ms=20_000)) is None
    assert take(store, make(), MONTH=Cap(ms=20_000)) is None
    assert take(store, make(), MONTH=Cap(ms=20_000)) == Refusal("budget", MONTH)
    # Only the day is capped now: the month's 16 s do not count against it.
    assert take(store, make(), DAY=Cap(ms=24_000)) is None
    assert row(store, DAY).held == Amount(24_000, 2_400_000)


def test_spent_counts_against_the_cap_as_held_does(store):
    caps = {"DAY": Cap(micros=1_000_000)}
    first = make()
    assert take(store, first, **caps) is None
    store.end_hold(hold_id=first.hold_id, actual=Amount(8000, 900_000))
    assert take(store, make(amount=Amount(1000, 100_000)), **caps) is None  # 0.9 + 0.1
    assert take(store, make(amount=Amount(1, 1)), **caps) == Refusal("budget", DAY)


def test_periods_are_independent(store):
    assert take(store, make(periods=(DAY, MONTH))) is None
    # A hold in the next day fits the day's cap whatever today holds; the month sees both.
    caps = {"NEXT_DAY": Cap(ms=8000), "MONTH": Cap(ms=16_000)}
    assert take(store, make(periods=(NEXT_DAY, MONTH)), **caps) is None
    assert take(store, make(periods=(NEXT_DAY,)), NEXT_DAY=Cap(ms=8000)) == Refusal(
        "budget", NEXT_DAY
    )
    assert row(store, DAY).held == EIGHT
    assert row(store, NEXT_DAY).held == EIGHT
    assert row(store, MONTH) == UsageRow(held=Amount(16_000, 1_600_000), holding=2)


def test_owners_are_independent(store):
    caps = {"DAY": Cap(ms=8000)}
    assert take(store, make("alice"), concurrent=1, **caps) is None
    assert take(store, make("alice"), concurrent=1) == Refusal("concurrency")
    assert take(store, make("alice"), **caps) == Refusal("budget", DAY)
    assert take(store, make("bob"), concurrent=1, **caps) is None
    # An owner name that could forge another's key if it were used as is.
    assert take(store, make(f"alice:{DAY}"), concurrent=1, **caps) is None
    assert store.usage("bob", PERIODS).open_holds == 1
    assert store.usage("alice", PERIODS).open_holds == 1
    assert row(store, owner="bob").held == EIGHT
    assert row(store, owner="alice").held == EIGHT


def test_usage_is_kept_per_model_and_caps_count_every_model(store):
    assert take(store, make(model="sora-2")) is None
    assert take(store, make(model="sora-2-pro", amount=Amount(4000, 2_000_000))) is None
    assert take(store, make(model="a|b:c", amount=Amount(1000, 1))) is None
    usage = store.usage("alice", (DAY,)).periods[DAY]
    assert usage == {
        "sora-2": UsageRow(held=EIGHT, holding=1),
        "sora-2-pro": UsageRow(held=Amount(4000, 2_000_000), holding=1),
        "a|b:c": UsageRow(held=Amount(1000, 1), holding=1),
    }
    assert take(store, make(amount=Amount(1, 0)), DAY=Cap(ms=13_000)) == Refusal("budget", DAY)
    assert take(store, make(amount=Amount(0, 1)), DAY=Cap(ms=13_000)) is None


# -- ending holds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actual", [Amount(8000, 800_000), Amount(12_000, 1_200_000), Amount(3000, 300_000), Amount()]
)
def test_settling_moves_the_hold_to_spent_with_what_it_really_cost(store, actual):
    hold = make()
    assert take(store, hold) is None
    store.bind_hold(hold.hold_id, "video_1")
    assert store.end_hold(video_id="video_1", actual=actual) == hold
    usage = store.usage("alice", PERIODS)
    assert usage.open_holds == 0
    for period in PERIODS:
        assert usage.periods[period] == {"sora-2": UsageRow(spent=actual, settled=1)}
    assert store.open_hold("video_1") is None


def test_releasing_gives_the_budget_back(store):
    caps = {"DAY": Cap(ms=8000)}
    hold = make()
    assert take(store, hold, **caps) is None
    assert store.end_hold(hold_id=hold.hold_id, actual=None) == hold
    assert row(store) == UsageRow(released=1)
    assert store.usage("alice", PERIODS).open_holds == 0
    assert take(store, make(), **caps) is None


def test_a_hold_ends_exactly_once(store):
    hold = make()
    take(store, hold)
    store.bind_hold(hold.hold_id, "video_1")
    assert store.end_hold(hold_id=hold.hold_id, actual=EIGHT) == hold
    assert store.end_hold(hold_id=hold.hold_id, actual=EIGHT) is None
    assert store.end_hold(video_id="video_1", actual=None) is None
    assert store.end_hold(hold_id="unknown", actual=None) is None
    assert store.end_hold(video_id="video_unknown", actual=None) is None
    assert store.end_hold(actual=None) is None
    assert row(store) == UsageRow(spent=EIGHT, settled=1)


def test_bind_changes_only_an_open_hold(store):
    ended, unknown = make(), make()
    take(store, ended)
    store.end_hold(hold_id=ended.hold_id, actual=None)
    store.bind_hold(ended.hold_id, "video_1")
    store.bind_hold(unknown.hold_id, "video_2")
    assert store.open_hold("video_1") is None
    assert store.open_hold("video_2") is None
    assert store.end_hold(video_id="video_1", actual=EIGHT) is None
    assert row(store) == UsageRow(released=1)


def test_binding_again_moves_the_hold_to_the_new_video(store):
    hold = make()
    take(store, hold)
    store.bind_hold(hold.hold_id, "video_1")
    store.bind_hold(hold.hold_id, "video_2")
    assert store.open_hold("video_1") is None
    assert store.open_hold("video_2") == hold
    assert store.end_hold(video_id="video_1", actual=EIGHT) is None
    assert store.end_hold(video_id="video_2", actual=EIGHT) == hold


def test_concurrent_ends_from_threads_end_the_hold_once(store):
    hold = make()
    take(store, hold)
    store.bind_hold(hold.hold_id, "video_1")
    barrier = threading.Barrier(8)
    results: list[BudgetHold | None] = []

    def end(n: int) -> None:
        barrier.wait()
        if n % 2:
            results.append(store.end_hold(video_id="video_1", actual=Amount(n, n)))
        else:
            results.append(store.end_hold(hold_id=hold.hold_id, actual=None))

    threads = [threading.Thread(target=end, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert [result for result in results if result is not None] == [hold]
    usage = row(store)
    assert usage.settled + usage.released == 1
    assert (usage.held, usage.holding) == (Amount(), 0)


# -- unbound holds expire ---------------------------------------------------------------------


def test_unbound_holds_past_their_time_are_released_by_the_owners_next_take(store, monkeypatch):
    monkeypatch.setattr(ledger, "UNBOUND_HOLD_TTL", 0.3)
    stale, bound, bobs = make(), make(), make("bob")
    assert take(store, stale) is None
    assert take(store, bound) is None
    assert take(store, bobs) is None
    store.bind_hold(bound.hold_id, "video_1")
    assert take(store, make(), concurrent=2) == Refusal("concurrency")  # not yet past its time
    time.sleep(0.4)

    # Shown as released before anything releases it; the bound hold never expires.
    usage = store.usage("alice", PERIODS)
    assert usage.open_holds == 1
    assert usage.periods[DAY] == {"sora-2": UsageRow(held=EIGHT, holding=1, released=1)}
    assert store.usage("bob", PERIODS).open_holds == 0

    fresh = make()
    assert take(store, fresh, concurrent=2, DAY=Cap(ms=16_000)) is None
    assert row(store) == UsageRow(held=EIGHT + EIGHT, holding=2, released=1)
    assert store.end_hold(hold_id=stale.hold_id, actual=EIGHT) is None  # already released
    assert store.open_hold("video_1") == bound
    # Alice's take released only alice's: bob's waits for bob's next take (or its end).
    assert store.end_hold(hold_id=bobs.hold_id, actual=None) == bobs
    assert row(store, owner="bob") == UsageRow(released=1)


def test_an_unbound_hold_within_its_time_is_not_released(store, monkeypatch):
    monkeypatch.setattr(ledger, "UNBOUND_HOLD_TTL", 60.0)
    hold = make()
    take(store, hold)
    assert take(store, make()) is None
    assert row(store) == UsageRow(held=EIGHT + EIGHT, holding=2)
    assert store.end_hold(hold_id=hold.hold_id, actual=None) == hold


# -- store down ------------------------------------------------------------------------------

LEDGER_CALLS = {
    "take_hold": lambda s: take(s, make(), concurrent=1, DAY=Cap(ms=1)),
    "bind_hold": lambda s: s.bind_hold("hold", "video_1"),
    "end_hold": lambda s: s.end_hold(hold_id="hold", actual=EIGHT),
    "end_hold_by_video": lambda s: s.end_hold(video_id="video_1", actual=None),
    "open_hold": lambda s: s.open_hold("video_1"),
    "usage": lambda s: s.usage("alice", PERIODS),
}


def test_ledger_calls_answer_503_when_the_store_is_unreachable(unreachable_store):
    for name, call in LEDGER_CALLS.items():
        with pytest.raises(ServiceUnavailable) as raised:
            call(unreachable_store)
        assert raised.value.status == 503, name


# -- real races between processes -------------------------------------------------------------

RACE_PROCESSES = 8
RACE_TRIES = 3
RACE_FITS = 5
ONE = Amount(1000, 100_000)


def _budget_worker(store: Store, barrier, results) -> None:
    """Try a few holds at once with every other process; report what each answered."""
    caps = {DAY: Cap(ms=RACE_FITS * ONE.ms), MONTH: Cap(micros=RACE_FITS * ONE.micros + 50_000)}
    barrier.wait()
    answers = [
        store.take_hold(make(amount=ONE), concurrent=None, caps=caps) for _ in range(RACE_TRIES)
    ]
    results.put(answers)


def _concurrency_worker(store: Store, barrier, holding, most, results) -> None:
    """Take, hold a while, settle; count holders (inside the hold's open time) in ``holding``."""
    taken = refused = 0
    barrier.wait()
    deadline = time.monotonic() + 5
    while taken < 4 and time.monotonic() < deadline:
        hold = make(amount=ONE)
        if store.take_hold(hold, concurrent=3, caps={}) is not None:
            refused += 1
            time.sleep(0.002)
            continue
        taken += 1
        with holding.get_lock():
            holding.value += 1
            most.value = max(most.value, holding.value)
        time.sleep(0.03)
        with holding.get_lock():
            holding.value -= 1
        assert store.end_hold(hold_id=hold.hold_id, actual=ONE) == hold
    results.put((taken, refused))


def _run(store: Store, target, *args) -> list:
    if isinstance(store, SQLiteStore):
        store.ping()  # the parent holds a connection when it forks, as gunicorn's master may
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(RACE_PROCESSES), context.Queue()
    shared = [context.Value("i", 0) if arg is None else arg for arg in args]
    children = [
        context.Process(target=target, args=(store, barrier, *shared, results))
        for _ in range(RACE_PROCESSES)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0
    return [reports, *shared]


def test_many_processes_racing_for_a_budget_get_exactly_what_fits(store):
    (reports,) = _run(store, _budget_worker)
    answers = [answer for report in reports for answer in report]
    assert len(answers) == RACE_PROCESSES * RACE_TRIES
    assert answers.count(None) == RACE_FITS
    assert {answer.reason for answer in answers if answer is not None} == {"budget"}
    usage = store.usage("alice", PERIODS)
    assert usage.open_holds == RACE_FITS
    fits = Amount(RACE_FITS * ONE.ms, RACE_FITS * ONE.micros)
    for period in PERIODS:
        assert usage.periods[period] == {"sora-2": UsageRow(held=fits, holding=RACE_FITS)}


def test_many_processes_never_hold_more_than_the_concurrency_cap(store):
    reports, holding, most = _run(store, _concurrency_worker, None, None)
    taken = sum(report[0] for report in reports)
    assert taken == RACE_PROCESSES * 4
    assert sum(report[1] for report in reports) > 0  # some were refused and tried again
    assert most.value == 3
    assert holding.value == 0
    usage = store.usage("alice", PERIODS)
    assert usage.open_holds == 0
    spent = Amount(taken * ONE.ms, taken * ONE.micros)
    assert usage.periods[DAY] == {"sora-2": UsageRow(spent=spent, settled=taken)}
