"""The embedded store: one SQLite file in WAL mode, shared by every worker process on a host."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
from sora_proxy.store.sqlite_ledger import LEDGER_SCHEMA, SQLiteLedger
from sora_proxy.store.sqlite_tasks import TASKS_SCHEMA, SQLiteTaskQueue

log = logging.getLogger("sora_proxy.store")


_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS resources (
    resource_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    upstream TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_object TEXT,
    handle TEXT
);
CREATE INDEX IF NOT EXISTS resources_by_owner
    ON resources (owner, kind, created_at, resource_id);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    response TEXT,
    expires_at REAL NOT NULL,
    token TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency (expires_at);
CREATE TABLE IF NOT EXISTS polls (
    resource_id TEXT PRIMARY KEY,
    polled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    intent_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    route TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""
    # The queue's and the ledger's own tables, kept with the code that uses them; still made
    # on every open.
    + TASKS_SCHEMA
    + LEDGER_SCHEMA
)
#: Columns added after the first release, for files made by it.
_MIGRATIONS = (
    ("idempotency", "token", "ALTER TABLE idempotency ADD COLUMN token TEXT NOT NULL DEFAULT ''"),
    ("resources", "handle", "ALTER TABLE resources ADD COLUMN handle TEXT"),
)
#: Seconds between two error lines about a deleted store file, per process.
_MISSING_LOG_EVERY = 60.0

_COLUMNS = "resource_id, owner, upstream, kind, created_at, last_object, handle"


class SQLiteStore(SQLiteLedger, SQLiteTaskQueue, Store):
    """:class:`~sora_proxy.store.base.Store` in one SQLite file.

    Each (process, thread) gets its own connection, opened on first use: gunicorn forks its
    workers after the app (and this object) is built, and a SQLite connection must never cross
    a fork. Writers are serialised by SQLite's file lock, so several processes on one host may
    share the file; it must be on a local disk (WAL needs shared memory, not NFS).

    :param path: the database file; its directory is created if missing.
    :param timeout: seconds to wait for another writer's lock before answering 503.
    :param cleanup_every: delete expired idempotency rows on every this-many-th claim, and
        forgotten finished tasks on every this-many-th finish.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 10.0, cleanup_every: int = 200
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.cleanup_every = cleanup_every
        self._local = threading.local()
        self._claims = itertools.count(1)
        self._finishes = itertools.count(1)
        # Connections inherited across a fork are kept referenced, never used or closed:
        # closing one in the child could disturb the parent's locks on the file.
        self._inherited: list[sqlite3.Connection] = []
        #: Once the file exists, it is never created again: a file deleted while running must
        #: be noticed (503 and an error line), not silently replaced by an empty one.
        self._created = False
        self._missing_logged_at = -_MISSING_LOG_EVERY
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Create the file and schema now, before any fork, so workers do not race to.
            self._connect(create=True).close()
            self._created = True
        except (OSError, sqlite3.Error) as error:
            log.warning("SQLite store %s not ready yet: %s", self.path, error)

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        mode = "rwc" if create or not self._created else "rw"
        uri = f"file:{urllib.parse.quote(str(self.path))}?mode={mode}"
        conn = sqlite3.connect(uri, timeout=self.timeout, isolation_level=None, uri=True)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            for table, column, statement in _MIGRATIONS:
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self._created = True
        return conn

    def _identity(self) -> tuple[int, int] | None:
        """The file's (device, inode), or ``None`` when nothing is at the path."""
        try:
            status = os.stat(self.path)
        except OSError:  # gone, or a parent directory replaced by a file
            return None
        return status.st_dev, status.st_ino

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            if getattr(local, "conn", None) is not None:
                self._inherited.append(local.conn)
            local.conn, local.pid = None, os.getpid()
        identity = self._identity() if self._created else None
        if self._created and identity is None:
            self._drop(local.conn)
            self._file_missing()
        if local.conn is not None and identity != getattr(local, "identity", None):
            # The file was replaced (restored from a backup): leave the old, unlinked one.
            self._drop(local.conn)
        if local.conn is None:
            local.conn = self._connect()
            local.identity = self._identity()
        conn: sqlite3.Connection = local.conn
        return conn

    def _file_missing(self) -> None:
        now = time.monotonic()
        if now - self._missing_logged_at >= _MISSING_LOG_EVERY:
            self._missing_logged_at = now
            log.error(
                "SQLite store file %s was deleted while the proxy runs; every request that "
                "needs the store answers 503 until it is restored (records written since the "
                "last backup are in the deleted file only)",
                self.path,
            )
        raise ServiceUnavailable(UNAVAILABLE)

    @contextmanager
    def _db(self, operation: str) -> Iterator[sqlite3.Connection]:
        """This thread's connection; any SQLite failure becomes 503 and drops the connection."""
        conn: sqlite3.Connection | None = None
        try:
            conn = self._conn()
            yield conn
        except sqlite3.Error as error:
            log.warning("SQLite store %s failed on %s: %s", operation, self.path, error)
            self._drop(conn)
            raise ServiceUnavailable(UNAVAILABLE) from None
        except BaseException:
            if conn is not None and conn.in_transaction:
                self._drop(conn)  # closing rolls back; the next call reconnects
            raise

    def _drop(self, conn: sqlite3.Connection | None) -> None:
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()  # rolls back any open transaction
            except sqlite3.Error:
                pass

    def record(self, resource: OwnedResource) -> None:
        """Record (or overwrite) who owns ``resource``."""
        last = None if resource.last_object is None else json.dumps(resource.last_object)
        handle = None if resource.handle is None else json.dumps(resource.handle)
        with self._db("record") as db:
            db.execute(
                f"INSERT OR REPLACE INTO resources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    resource.resource_id,
                    resource.owner,
                    resource.upstream,
                    resource.kind,
                    float(resource.created_at),
                    last,
                    handle,
                ),
            )

    def get(self, resource_id: str) -> OwnedResource | None:
        """The record for ``resource_id``, or ``None``."""
        with self._db("get") as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM resources WHERE resource_id = ?",  # noqa: S608
                (resource_id,),
            ).fetchone()
        return None if row is None else _resource(row)

    def update_object(self, resource_id: str, last_object: dict[str, Any]) -> None:
        """Replace the last known object of an existing record (no-op if there is none)."""
        with self._db("update_object") as db:
            db.execute(
                "UPDATE resources SET last_object = ? WHERE resource_id = ?",
                (json.dumps(last_object), resource_id),
            )

    def claim_poll(self, resource_id: str, *, interval: float) -> bool:
        """One ``INSERT … ON CONFLICT … WHERE``: only a poll older than ``interval`` is taken."""
        now = time.time()
        with self._db("claim_poll") as db:
            cursor = db.execute(
                "INSERT INTO polls (resource_id, polled_at) VALUES (?, ?)"
                " ON CONFLICT (resource_id) DO UPDATE SET polled_at = excluded.polled_at"
                " WHERE polls.polled_at <= ?",
                (resource_id, now, now - interval),
            )
            return cursor.rowcount == 1

    def forget(self, resource_id: str) -> None:
        """Delete the record (no-op if there is none)."""
        with self._db("forget") as db:
            db.execute("DELETE FROM resources WHERE resource_id = ?", (resource_id,))
            db.execute("DELETE FROM polls WHERE resource_id = ?", (resource_id,))

    def list_owned(
        self, owner: str, kind: Kind, *, after: str | None, limit: int, order: Order
    ) -> tuple[list[OwnedResource], bool]:
        """A page of ``owner``'s resources of ``kind`` by (created_at, resource_id).

        Keyset pagination: the page starts strictly after ``after``'s (created_at, id).
        Raises :class:`KeyError` if ``after`` is not one of ``owner``'s resources of ``kind``.
        """
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        # Only constants are spliced into the SQL; every value is a bound parameter.
        query = f"SELECT {_COLUMNS} FROM resources WHERE owner = ? AND kind = ?"  # noqa: S608
        params: list[Any] = [owner, kind]
        with self._db("list_owned") as db:
            if after is not None:
                anchor = db.execute(
                    "SELECT created_at FROM resources"
                    " WHERE resource_id = ? AND owner = ? AND kind = ?",
                    (after, owner, kind),
                ).fetchone()
                if anchor is None:
                    raise KeyError(after)
                query += f" AND (created_at, resource_id) {compare} (?, ?)"
                params += [anchor[0], after]
            query += f" ORDER BY created_at {direction}, resource_id {direction} LIMIT ?"
            rows = db.execute(query, [*params, max(limit, 0) + 1]).fetchall()
        return [_resource(row) for row in rows[:limit]], len(rows) > limit

    def claim_idempotency_key(
        self, scope: str, fingerprint: str, *, in_flight_ttl: float, token: str = ""
    ) -> ClaimResult:
        """Atomically claim ``scope``: one ``BEGIN IMMEDIATE`` transaction, so one writer at a
        time across every thread and process sharing the file."""
        now = time.time()
        with self._db("claim_idempotency_key") as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT fingerprint, state, response FROM idempotency"
                " WHERE scope = ? AND expires_at > ?",
                (scope, now),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT OR REPLACE INTO idempotency"
                    " (scope, fingerprint, state, response, expires_at, token)"
                    " VALUES (?, ?, 'in_flight', NULL, ?, ?)",
                    (scope, fingerprint, now + in_flight_ttl, token),
                )
            db.execute("COMMIT")
            if next(self._claims) % self.cleanup_every == 0:
                db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
                db.execute("DELETE FROM intents WHERE expires_at <= ?", (now,))
        if row is None:
            return ClaimResult(Claim.NEW)
        stored_fingerprint, state, response = row
        stored = None if response is None else json.loads(response)
        return decide(fingerprint, state, stored_fingerprint, stored)

    def finish_idempotency_key(
        self, scope: str, fingerprint: str, response: StoredResponse, *, ttl: float
    ) -> None:
        """Store the response for ``scope``, kept ``ttl`` seconds (overwrites the claim)."""
        with self._db("finish_idempotency_key") as db:
            db.execute(
                "INSERT OR REPLACE INTO idempotency"
                " (scope, fingerprint, state, response, expires_at) VALUES (?, ?, 'done', ?, ?)",
                (scope, fingerprint, json.dumps(encode_response(response)), time.time() + ttl),
            )

    def release_idempotency_key(self, scope: str, token: str = "") -> None:
        """Drop an in-flight claim (only ``token``'s, when given); a finished record stays."""
        query = "DELETE FROM idempotency WHERE scope = ? AND state = 'in_flight'"
        params: tuple[str, ...] = (scope,)
        if token:
            query += " AND token = ?"
            params = (scope, token)
        with self._db("release_idempotency_key") as db:
            db.execute(query, params)

    def begin_intent(self, intent: Intent, *, ttl: float) -> None:
        """Write ``intent``; 503 if the file cannot take a write (full, read-only, gone)."""
        with self._db("begin_intent") as db:
            db.execute(
                "INSERT OR REPLACE INTO intents (intent_id, owner, route, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    intent.intent_id,
                    intent.owner,
                    intent.route,
                    intent.created_at,
                    intent.created_at + ttl,
                ),
            )

    def end_intent(self, intent_id: str) -> None:
        """Drop an intent whose outcome is known."""
        with self._db("end_intent") as db:
            db.execute("DELETE FROM intents WHERE intent_id = ?", (intent_id,))

    def open_intents(self, *, older_than: float) -> int:
        """Intents older than ``older_than`` seconds that were never ended."""
        with self._db("open_intents") as db:
            row = db.execute(
                "SELECT count(*) FROM intents WHERE created_at < ? AND expires_at > ?",
                (time.time() - older_than, time.time()),
            ).fetchone()
        return int(row[0])

    def ping(self) -> None:
        """Raise :class:`~sora_proxy.errors.ServiceUnavailable` if the file cannot be used."""
        with self._db("ping") as db:
            db.execute("SELECT count(*) FROM idempotency WHERE 0").fetchone()

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's state goes)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            self._drop(conn)


def _resource(row: tuple[Any, ...]) -> OwnedResource:
    resource_id, owner, upstream, kind, created_at, last_object, handle = row
    return OwnedResource(
        resource_id=resource_id,
        owner=owner,
        upstream=upstream,
        kind=kind,
        created_at=created_at,
        last_object=None if last_object is None else json.loads(last_object),
        handle=None if handle is None else json.loads(handle),
    )
