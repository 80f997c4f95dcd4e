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


class ReadinessProbe:
    """Checks the store and the upstream, at most every :data:`READY_CACHE_SECONDS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = -READY_CACHE_SECONDS
        self._checks: dict[str, str] = {}

    def checks(self, state: Any) -> dict[str, str]:
        """``{"store": "ok" | "unavailable", "upstream:<name>": "ok" | "unreachable"}``."""
        with self._lock:
            if time.monotonic() - self._checked_at >= READY_CACHE_SECONDS:
                self._checks = self._run(state)
                self._checked_at = time.monotonic()
            return dict(self._checks)

    @staticmethod
    def _run(state: Any) -> dict[str, str]:
        checks = {}
        if state.store is not None:
            try:
                state.store.ping()
                checks["store"] = "ok"
            except ProxyError:
                checks["store"] = "unavailable"
        for name, upstream in state.upstream.upstreams().items():
            try:
                # Any HTTP answer (even 401 or 404) proves the upstream is there.
                state.upstream.session.get(
                    upstream.base_url, timeout=(2.0, 3.0), allow_redirects=False
                ).close()
                checks[f"upstream:{name}"] = "ok"
            except requests.RequestException:
                checks[f"upstream:{name}"] = "unreachable"
        return checks


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
    checks = state.readiness.checks(state)
    ready = all(value == "ok" for value in checks.values())
    return _json({"status": "ok" if ready else "unavailable", "checks": checks},
                 200 if ready else 503)


def metrics() -> Response:
    """Prometheus exposition, when ``SORA_PROXY_METRICS`` is on."""
    state = proxy_state()
    if state.metrics is None:
        raise NotFound("Metrics are off; set SORA_PROXY_METRICS=true.", code="unknown_route")
    body, content_type = state.metrics.render()
    return Response(body, content_type=content_type)
