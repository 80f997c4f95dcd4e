"""The SQLite store's budget ledger: the ``budget_holds`` and ``budget_usage`` tables."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from sora_proxy.store import ledger
from sora_proxy.store.ledger import (
    Amount,
    BudgetHold,
    Cap,
    Ledger,
    Refusal,
    Usage,
    UsageRow,
)

#: Applied with the rest of the schema each time a connection opens.
LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_holds (
    hold_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    video_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('open', 'settled', 'released')),
    periods TEXT NOT NULL,
    est_ms INTEGER NOT NULL,
    est_micros INTEGER NOT NULL,
    terms TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS budget_holds_open ON budget_holds (owner, state, expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS budget_holds_video ON budget_holds (video_id)
    WHERE video_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS budget_usage (
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    model TEXT NOT NULL,
    spent_ms INTEGER NOT NULL DEFAULT 0,
    spent_micros INTEGER NOT NULL DEFAULT 0,
    held_ms INTEGER NOT NULL DEFAULT 0,
    held_micros INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0,
    released INTEGER NOT NULL DEFAULT 0,
    holding INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, period, model)
);
"""

_ZERO = Amount()
_HOLD_COLUMNS = ", ".join(BudgetHold.COLUMNS)


class SQLiteLedger(Ledger):
    """The ledger methods of :class:`~sora_proxy.store.sqlite.SQLiteStore`, as a mixin: each
    write is one ``BEGIN IMMEDIATE`` transaction, so workers sharing the file see one order."""

    if TYPE_CHECKING:

        def _db(self, operation: str) -> AbstractContextManager[sqlite3.Connection]: ...

    def take_hold(
        self, hold: BudgetHold, *, concurrent: int | None, caps: Mapping[str, Cap]
    ) -> Refusal | None:
        """Expire, count, check and add in one transaction."""
        now = time.time()
        with self._db("take_hold") as db:
            db.execute("BEGIN IMMEDIATE")
            expired = db.execute(
                f"SELECT {_HOLD_COLUMNS} FROM budget_holds"  # noqa: S608
                " WHERE owner = ? AND state = 'open' AND expires_at <= ?",
                (hold.owner, now),
            ).fetchall()
            for row in expired:
                _end(db, BudgetHold.from_stored(row), None, now)
            refusal = _refusal(db, hold, concurrent, caps)
            if refusal is None:
                db.execute(
                    "INSERT INTO budget_holds (hold_id, owner, model, video_id, state, periods,"
                    " est_ms, est_micros, terms, created_at, expires_at)"
                    " VALUES (?, ?, ?, NULL, 'open', ?, ?, ?, ?, ?, ?)",
                    (
                        hold.hold_id,
                        hold.owner,
                        hold.model,
                        json.dumps(hold.periods),
                        hold.amount.ms,
                        hold.amount.micros,
                        json.dumps(hold.terms),
                        hold.created_at,
                        now + ledger.UNBOUND_HOLD_TTL,
                    ),
                )
                for period in hold.periods:
                    _add(db, hold.owner, period, hold.model, held=hold.amount, holding=1)
            db.execute("COMMIT")
        return refusal

    def bind_hold(self, hold_id: str, video_id: str) -> None:
        """Set the video and drop the expiry (an open hold only)."""
        with self._db("bind_hold") as db:
            db.execute(
                "UPDATE budget_holds SET video_id = ?, expires_at = NULL"
                " WHERE hold_id = ? AND state = 'open'",
                (video_id, hold_id),
            )

    def end_hold(
        self, *, hold_id: str | None = None, video_id: str | None = None, actual: Amount | None
    ) -> BudgetHold | None:
        """Settle or release in one transaction; only an open hold changes."""
        column, value = ("hold_id", hold_id) if hold_id is not None else ("video_id", video_id)
        query = (
            f"SELECT {_HOLD_COLUMNS} FROM budget_holds"  # noqa: S608
            f" WHERE {column} = ? AND state = 'open'"
        )
        with self._db("end_hold") as db:
            if db.execute(query, (value,)).fetchone() is None:
                return None
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(query, (value,)).fetchone()
            ended = None if row is None else BudgetHold.from_stored(row)
            if ended is not None:
                _end(db, ended, actual, time.time())
            db.execute("COMMIT")
        return ended

    def open_hold(self, video_id: str) -> BudgetHold | None:
        """The open hold bound to ``video_id``."""
        with self._db("open_hold") as db:
            row = db.execute(
                f"SELECT {_HOLD_COLUMNS} FROM budget_holds"  # noqa: S608
                " WHERE video_id = ? AND state = 'open'",
                (video_id,),
            ).fetchone()
        return None if row is None else BudgetHold.from_stored(row)

    def usage(self, owner: str, periods: tuple[str, ...]) -> Usage:
        """One read: the usage rows, and the open holds not past their time."""
        now = time.time()
        found: dict[str, dict[str, UsageRow]] = {period: {} for period in periods}
        with self._db("usage") as db:
            if periods:
                marks = ", ".join("?" * len(periods))
                rows = db.execute(
                    "SELECT period, model, spent_ms, spent_micros, held_ms, held_micros,"  # noqa: S608
                    " settled, released, holding FROM budget_usage"
                    f" WHERE owner = ? AND period IN ({marks})",
                    (owner, *periods),
                ).fetchall()
                for period, model, sms, smu, hms, hmu, settled, released, holding in rows:
                    found[period][model] = UsageRow(
                        Amount(sms, smu), Amount(hms, hmu), settled, released, holding
                    )
            stale = db.execute(
                f"SELECT {_HOLD_COLUMNS} FROM budget_holds"  # noqa: S608
                " WHERE owner = ? AND state = 'open' AND expires_at <= ?",
                (owner, now),
            ).fetchall()
            (open_holds,) = db.execute(
                "SELECT COUNT(*) FROM budget_holds WHERE owner = ? AND state = 'open'", (owner,)
            ).fetchone()
        for row in stale:  # released by the next take_hold; shown as released now
            hold = BudgetHold.from_stored(row)
            for period in hold.periods:
                usage = found.get(period, {}).get(hold.model)
                if usage is not None:
                    usage.held -= hold.amount
                    usage.holding -= 1
                    usage.released += 1
        return Usage(found, int(open_holds) - len(stale))


def _refusal(
    db: sqlite3.Connection, hold: BudgetHold, concurrent: int | None, caps: Mapping[str, Cap]
) -> Refusal | None:
    if concurrent is not None:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM budget_holds WHERE owner = ? AND state = 'open'", (hold.owner,)
        ).fetchone()
        if count >= concurrent:
            return Refusal("concurrency")
    for period, cap in caps.items():
        row = db.execute(
            "SELECT COALESCE(SUM(spent_ms + held_ms), 0),"
            " COALESCE(SUM(spent_micros + held_micros), 0)"
            " FROM budget_usage WHERE owner = ? AND period = ?",
            (hold.owner, period),
        ).fetchone()
        if not cap.fits(Amount(int(row[0]), int(row[1])) + hold.amount):
            return Refusal("budget", period)
    return None


def _end(db: sqlite3.Connection, hold: BudgetHold, actual: Amount | None, now: float) -> None:
    """Move ``hold`` out of its periods' held amounts: into spent (settled) or away."""
    state = "released" if actual is None else "settled"
    db.execute(
        "UPDATE budget_holds SET state = ?, ended_at = ?, expires_at = NULL WHERE hold_id = ?",
        (state, now, hold.hold_id),
    )
    for period in hold.periods:
        _add(
            db,
            hold.owner,
            period,
            hold.model,
            held=Amount() - hold.amount,
            spent=actual or Amount(),
            holding=-1,
            settled=int(actual is not None),
            released=int(actual is None),
        )


def _add(
    db: sqlite3.Connection,
    owner: str,
    period: str,
    model: str,
    *,
    held: Amount = _ZERO,
    spent: Amount = _ZERO,
    holding: int = 0,
    settled: int = 0,
    released: int = 0,
) -> None:
    db.execute(
        "INSERT INTO budget_usage (owner, period, model, spent_ms, spent_micros, held_ms,"
        " held_micros, settled, released, holding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (owner, period, model) DO UPDATE SET"
        " spent_ms = spent_ms + excluded.spent_ms,"
        " spent_micros = spent_micros + excluded.spent_micros,"
        " held_ms = held_ms + excluded.held_ms, held_micros = held_micros + excluded.held_micros,"
        " settled = settled + excluded.settled, released = released + excluded.released,"
        " holding = holding + excluded.holding",
        (owner, period, model, spent.ms, spent.micros, held.ms, held.micros, settled, released,
         holding),
    )  # fmt: skip
