"""The SQLite store's leased-task queue: the ``tasks`` table and the methods that use it."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sora_proxy.store.base import Task

#: Applied with the rest of the schema each time a connection opens, so existing files get it.
TASKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    token TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    finished_at REAL,
    done_until REAL
);
CREATE INDEX IF NOT EXISTS tasks_by_due ON tasks (state, due_at, key);
CREATE INDEX IF NOT EXISTS tasks_done ON tasks (done_until) WHERE state = 'done';
"""

_TASK_COLUMNS = "key, kind, payload, created_at, attempts"


class SQLiteTaskQueue:
    """The task methods of :class:`~sora_proxy.store.sqlite.SQLiteStore`, as a mixin.

    The store provides ``_db`` (this thread's connection, failures as 503), ``cleanup_every``
    and the ``_finishes`` counter.
    """

    cleanup_every: int
    _finishes: Iterator[int]

    if TYPE_CHECKING:

        def _db(self, operation: str) -> AbstractContextManager[sqlite3.Connection]: ...

    def schedule(
        self, key: str, kind: str, payload: dict[str, Any], *, due_at: float, keep_done: float
    ) -> bool:
        """One upsert that overwrites only a finished task, once it is forgotten (its
        ``done_until`` from :meth:`finish_task` passed) or finished ``keep_done`` seconds ago."""
        now = time.time()
        with self._db("schedule") as db:
            # A plain read first: scheduling what is already there (a retrieve making sure an
            # old video is followed) then never takes the write lock.
            kept = db.execute(
                "SELECT 1 FROM tasks WHERE key = ? AND NOT (state = 'done'"
                " AND (done_until <= ? OR finished_at + ? <= ?))",
                (key, now, keep_done, now),
            ).fetchone()
            if kept is not None:
                return False
            cursor = db.execute(
                "INSERT INTO tasks (key, kind, payload, created_at, due_at, attempts, token, state)"
                " VALUES (?, ?, ?, ?, ?, 0, '', 'pending')"
                " ON CONFLICT (key) DO UPDATE SET kind = excluded.kind,"
                " payload = excluded.payload, created_at = excluded.created_at,"
                " due_at = excluded.due_at, attempts = 0, token = '', state = 'pending',"
                " finished_at = NULL, done_until = NULL"
                " WHERE tasks.state = 'done'"
                " AND (tasks.done_until <= ? OR tasks.finished_at + ? <= ?)",
                (key, kind, json.dumps(payload), now, due_at, now, keep_done, now),
            )
            return cursor.rowcount == 1

    def claim_tasks(
        self, *, now: float, lease: float, limit: int, kinds: tuple[str, ...] | None = None
    ) -> list[Task]:
        """Lease the earliest due tasks in one ``BEGIN IMMEDIATE`` transaction.

        A plain read comes first: a poller that finds nothing due never takes the write lock.
        """
        if limit <= 0 or (kinds is not None and not kinds):
            return []
        # Only placeholders are spliced into the SQL; every value is a bound parameter.
        query = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state = 'pending' AND due_at <= ?"  # noqa: S608
        params: list[Any] = [now]
        if kinds is not None:
            query += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params += kinds
        query += " ORDER BY due_at, key LIMIT ?"
        params.append(limit)
        with self._db("claim_tasks") as db:
            if not db.execute(query, params).fetchall():
                return []
            db.execute("BEGIN IMMEDIATE")
            tasks = _lease(db, db.execute(query, params).fetchall(), until=now + lease)
            db.execute("COMMIT")
        return tasks

    def claim_task(self, key: str, *, now: float, lease: float) -> Task | None:
        """Lease the task ``key`` if it is pending and due, in one ``BEGIN IMMEDIATE``.

        A plain read comes first, as in :meth:`claim_tasks`: a retrieve of a video whose poll
        is not due (the usual case) never takes the write lock.
        """
        query = (
            f"SELECT {_TASK_COLUMNS} FROM tasks"  # noqa: S608
            " WHERE key = ? AND state = 'pending' AND due_at <= ?"
        )
        with self._db("claim_task") as db:
            if not db.execute(query, (key, now)).fetchall():
                return None
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(query, (key, now)).fetchall()
            tasks = _lease(db, rows, until=now + lease)
            db.execute("COMMIT")
        return tasks[0] if tasks else None

    def extend_lease(self, key: str, token: str, *, until: float) -> bool:
        """Move the lease's end to ``until`` if ``token`` still holds the task."""
        return self._held("extend_lease", "due_at = ?", (until,), key, token)

    def reschedule(
        self, key: str, token: str, *, due_at: float, payload: dict[str, Any] | None = None
    ) -> bool:
        """Give a held task back (its token cleared), due at ``due_at``."""
        if payload is None:
            return self._held("reschedule", "due_at = ?, token = ''", (due_at,), key, token)
        return self._held(
            "reschedule",
            "due_at = ?, token = '', payload = ?",
            (due_at, json.dumps(payload)),
            key,
            token,
        )

    def finish_task(self, key: str, token: str, *, keep_done: float) -> bool:
        """Mark a held task done until ``keep_done`` seconds from now; every
        ``cleanup_every``-th finish deletes the finished tasks kept long enough."""
        now = time.time()
        done = self._held(
            "finish_task",
            "state = 'done', token = '', finished_at = ?, done_until = ?",
            (now, now + keep_done),
            key,
            token,
        )
        if done and next(self._finishes) % self.cleanup_every == 0:
            with self._db("finish_task") as db:
                db.execute("DELETE FROM tasks WHERE state = 'done' AND done_until <= ?", (now,))
        return done

    def _held(
        self, operation: str, assignments: str, values: tuple[Any, ...], key: str, token: str
    ) -> bool:
        """One ``UPDATE … SET assignments`` of a pending task that ``token`` holds."""
        if not token:  # an unclaimed task has the empty token; nobody holds it
            return False
        with self._db(operation) as db:
            cursor = db.execute(
                f"UPDATE tasks SET {assignments}"  # noqa: S608 - constants from this class
                " WHERE key = ? AND token = ? AND state = 'pending'",
                (*values, key, token),
            )
            return cursor.rowcount == 1

    def pending_tasks(self) -> dict[str, int]:
        """How many tasks are pending (leased or not), per kind."""
        with self._db("pending_tasks") as db:
            rows = db.execute(
                "SELECT kind, count(*) FROM tasks WHERE state = 'pending' GROUP BY kind"
            ).fetchall()
        return {kind: int(count) for kind, count in rows}


def _lease(db: sqlite3.Connection, rows: list[tuple[Any, ...]], *, until: float) -> list[Task]:
    """Give each selected row a fresh token and one more attempt, held until ``until`` (the
    caller holds the write lock)."""
    tasks = [
        Task(
            key=key,
            kind=kind,
            payload=json.loads(payload),
            created_at=created_at,
            attempts=attempts + 1,
            token=secrets.token_hex(16),
        )
        for key, kind, payload, created_at, attempts in rows
    ]
    db.executemany(
        "UPDATE tasks SET due_at = ?, attempts = ?, token = ? WHERE key = ?",
        [(until, task.attempts, task.token, task.key) for task in tasks],
    )
    return tasks
