"""``/healthz`` (alive), ``/readyz`` (store and upstream reachable) and ``/metrics``."""

from __future__ import annotations

from typing import Any

from flask import Response, json

from .archive import ArchiveError
from .errors import NotFound, ProxyError
from .extension import ProxyState, proxy_state


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
    checks, warnings = state.readiness.checks(state.records, state.catalog, state.client)
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if state.records is not None and state.settings.tracker != "off":
        body["tracker"], archive_problem = _tracker_view(state)
        if archive_problem:
            warnings = [*warnings, archive_problem]
    if warnings:
        body["warnings"] = warnings
    return _json(body, 200 if ready else 503)


def _tracker_view(state: ProxyState) -> tuple[dict[str, Any], str | None]:
    """The tracker's mode and backlog (tasks pending per kind), and an archive that cannot
    be used (a warning: content still comes from the upstreams meanwhile)."""
    assert state.records is not None
    view: dict[str, Any] = {"mode": state.settings.tracker}
    try:
        view["pending"] = state.records.store.pending_tasks()
    except ProxyError:
        view["pending"] = None
    if state.archive is None:
        return view, None
    try:
        state.archive.ping()
    except ArchiveError as error:
        return view, f"archive unavailable ({error}): finished videos are not being kept"
    return view, None


def metrics() -> Response:
    """Prometheus exposition, when ``SORA_PROXY_METRICS`` is on."""
    state = proxy_state()
    if state.metrics is None:
        raise NotFound("Metrics are off; set SORA_PROXY_METRICS=true.", code="unknown_route")
    body, content_type = state.metrics.render()
    return Response(body, content_type=content_type)
