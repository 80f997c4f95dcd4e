"""``/healthz`` (alive), ``/readyz`` (store and upstream reachable) and ``/metrics``."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from flask import Response, json

from .errors import NotFound, ProxyError
from .extension import proxy_state

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

    def checks(self, state: Any) -> tuple[dict[str, str], list[str]]:
        """``{"store": "ok" | "unavailable", "upstream:<name>": "ok" | "unreachable"}``, and
        warnings that do not make the proxy unready (Redis without persistence, writes
        waiting in the spool)."""
        with self._lock:
            if time.monotonic() - self._checked_at >= READY_CACHE_SECONDS:
                self._checks, self._warnings = self._run(state)
                self._checked_at = time.monotonic()
            return dict(self._checks), list(self._warnings)

    @staticmethod
    def _run(state: Any) -> tuple[dict[str, str], list[str]]:
        checks = {}
        warnings: list[str] = []
        if state.store is not None:
            try:
                state.store.ping()
                checks["store"] = "ok"
                warnings += state.store.warnings()
                stranded = state.store.open_intents(older_than=STRANDED_INTENT_SECONDS)
                if stranded:
                    warnings.append(
                        f"{stranded} paid request(s) started over an hour ago were never "
                        "recorded (a worker died mid-request?); see the store's intents"
                    )
            except ProxyError:
                checks["store"] = "unavailable"
            pending = state.writes.pending()
            if pending:
                warnings.append(f"{pending} store write(s) wait in the spool to be replayed")
                state.writes.ensure_replayer()
        for name, upstream in state.upstream.upstreams().items():
            try:
                # Any HTTP answer (even 401 or 404) proves the upstream is there.
                state.upstream.session.get(
                    upstream.base_url, timeout=(2.0, 3.0), allow_redirects=False
                ).close()
                checks[f"upstream:{name}"] = "ok"
            except requests.RequestException:
                checks[f"upstream:{name}"] = "unreachable"
        return checks, warnings


def _json(data: dict[str, Any], status: int = 200) -> Response:
    response = Response(json.dumps(data), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def healthz() -> Response:
    """Alive: the process answers. No upstream or store call."""
    return _json({"status": "ok"})


def readyz() -> Response:
    """Ready: the store and every upstream answer; 503 with the failing checks otherwise."""
    state = proxy_state()
    checks, warnings = state.readiness.checks(state)
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if warnings:
        body["warnings"] = warnings
    return _json(body, 200 if ready else 503)


def metrics() -> Response:
    """Prometheus exposition, when ``SORA_PROXY_METRICS`` is on."""
    state = proxy_state()
    if state.metrics is None:
        raise NotFound("Metrics are off; set SORA_PROXY_METRICS=true.", code="unknown_route")
    body, content_type = state.metrics.render()
    return Response(body, content_type=content_type)
