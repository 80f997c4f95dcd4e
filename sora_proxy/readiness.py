"""Readiness: is the store usable and every upstream reachable, checked at most every 5 s."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import requests

from .catalog import Catalog
from .client import UpstreamClient
from .errors import ProxyError

if TYPE_CHECKING:
    from .extension import Records

#: Seconds a readiness verdict is reused: probes every second must not hammer the upstream.
READY_CACHE_SECONDS = 5.0
#: An intent older than this was never ended: its request's outcome may be unrecorded.
STRANDED_INTENT_SECONDS = 3600.0


class ReadinessProbe:
    """Checks the store and the upstream, at most every :data:`READY_CACHE_SECONDS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = -READY_CACHE_SECONDS
        self._checks: dict[str, str] = {}
        self._warnings: list[str] = []

    def checks(
        self, records: Records | None, catalog: Catalog, client: UpstreamClient
    ) -> tuple[dict[str, str], list[str]]:
        """``{"store": "ok" | "unavailable", "upstream:<name>": "ok" | "unreachable"}``, and
        warnings that do not make the proxy unready (Redis without persistence, writes
        waiting in the spool)."""
        with self._lock:
            if time.monotonic() - self._checked_at >= READY_CACHE_SECONDS:
                self._checks, self._warnings = self._run(records, catalog, client)
                self._checked_at = time.monotonic()
            return dict(self._checks), list(self._warnings)

    @staticmethod
    def _run(
        records: Records | None, catalog: Catalog, client: UpstreamClient
    ) -> tuple[dict[str, str], list[str]]:
        checks = {}
        warnings: list[str] = []
        if records is not None:
            try:
                records.store.ping()
                checks["store"] = "ok"
                warnings += records.store.warnings()
                stranded = records.store.open_intents(older_than=STRANDED_INTENT_SECONDS)
                if stranded:
                    warnings.append(
                        f"{stranded} paid request(s) started over an hour ago were never "
                        "recorded (a worker died mid-request?); see the store's intents"
                    )
            except ProxyError:
                checks["store"] = "unavailable"
            pending = records.writes.pending()
            if pending:
                warnings.append(f"{pending} store write(s) wait in the spool to be replayed")
                records.writes.ensure_replayer()
        for name, upstream in catalog.upstreams.items():
            try:
                # Any HTTP answer (even 401 or 404) proves the upstream is there.
                client.session.get(
                    upstream.base_url, timeout=(2.0, 3.0), allow_redirects=False
                ).close()
                checks[f"upstream:{name}"] = "ok"
            except requests.RequestException:
                checks[f"upstream:{name}"] = "unreachable"
        return checks, warnings
