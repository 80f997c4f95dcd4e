"""Request ids, one JSON log line per request, and Prometheus metrics.

Hooks are registered on the proxy's blueprint only, so a host app's own routes are neither
logged nor counted here. A streamed download is logged when its last byte has gone (or the
client left), with the bytes actually sent.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Response, g, request

from .extension import proxy_state

access_log = logging.getLogger("sora_proxy.access")
_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


@dataclass
class RequestInfo:
    """What one request's log line and metrics need, filled in as the request goes."""

    request_id: str
    started: float
    route: str
    client_addr: str | None
    caller: str | None = None
    upstream: str | None = None
    upstream_request_id: str | None = None
    error_code: str | None = None
    prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def current_info() -> RequestInfo | None:
    """This request's :class:`RequestInfo` (``None`` for health and metrics routes)."""
    info = g.get("sora_proxy_info")
    return info if isinstance(info, RequestInfo) else None


def note_caller(name: str | None) -> None:
    """Note who is calling, for the log line."""
    info = current_info()
    if info is not None:
        info.caller = name


def note_prompt(fields: Mapping[str, Any]) -> None:
    """Keep the prompt for the log line (written only with ``SORA_PROXY_LOG_PROMPTS``)."""
    info = current_info()
    prompt = fields.get("prompt")
    if info is not None and isinstance(prompt, str):
        info.prompt = prompt


def note_upstream(upstream_name: str, response: requests.Response) -> None:
    """Note which upstream answered, and how fast (to its headers), for the log line and
    metrics."""
    info = current_info()
    if info is None:
        return
    info.upstream = upstream_name
    metrics = proxy_state().metrics
    if metrics is not None:
        metrics.upstream_latency.labels(info.route, upstream_name).observe(
            response.elapsed.total_seconds()
        )


def note_bytes_in(count: int) -> None:
    """The body bytes read from a streamed upload (it has no ``Content-Length`` of use)."""
    info = current_info()
    if info is not None:
        info.extra["bytes_in"] = count


def note_handoff(fields: Mapping[str, Any]) -> None:
    """Note that nginx sends this answer's bytes (``handoff``, and the size or the host it
    was handed to), for the log line: nginx's own access log has the bytes it sent."""
    info = current_info()
    if info is not None:
        info.extra["handoff"] = dict(fields)


def current_request_id() -> str | None:
    """This request's id, sent upstream as ``X-Request-ID``."""
    info = current_info()
    return info.request_id if info is not None else None


def _request_id() -> str:
    incoming = request.headers.get("X-Request-ID", "")
    if 0 < len(incoming) <= 128 and set(incoming) <= _REQUEST_ID_OK:
        return incoming
    return f"req_{uuid.uuid4().hex}"


def client_address(trusted_hops: int) -> str | None:
    """The real client address: werkzeug's ProxyFix rule, applied only to this request.

    In a host app the proxy must not rewrite the app's WSGI environ, so the ``X-Forwarded-For``
    hop count is applied here; under :func:`~sora_proxy.create_app`, ProxyFix has run already.
    """
    if trusted_hops <= 0 or "werkzeug.proxy_fix.orig" in request.environ:
        return request.remote_addr
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) >= trusted_hops:
        return forwarded[-trusted_hops]
    return request.remote_addr


def begin_request() -> None:
    """Blueprint ``before_request``: start the clock and fix the request id."""
    if request.endpoint and request.endpoint.rsplit(".", 1)[-1] in QUIET_ENDPOINTS:
        return
    state = proxy_state()
    g.sora_proxy_info = RequestInfo(
        request_id=_request_id(),
        started=time.perf_counter(),
        route=request.url_rule.rule if request.url_rule else request.path,
        client_addr=client_address(state.settings.trusted_proxies),
    )


def finish_request(response: Response) -> Response:
    """Blueprint ``after_request``: add the request id; log and count, now or at stream end."""
    info = current_info()
    if info is None:
        return response
    if "X-Request-ID" not in response.headers:
        response.headers["X-Request-ID"] = info.request_id
    else:
        info.upstream_request_id = response.headers["X-Request-ID"]
    state = proxy_state()
    record = {
        "request_id": info.request_id,
        "caller": info.caller,
        "method": request.method,
        "route": info.route,
        "path": request.path,
        "status": response.status_code,
        "upstream": info.upstream,
        "upstream_request_id": info.upstream_request_id,
        "client_addr": info.client_addr,
        "bytes_in": request.content_length or info.extra.get("bytes_in", 0),
        "error_code": info.error_code,
    }
    record.update(info.extra.get("handoff") or {})
    if state.settings.log_prompts and info.prompt is not None:
        record["prompt"] = info.prompt
    metrics = state.metrics
    body = response.response
    if hasattr(body, "add_close_callback"):
        body.add_close_callback(
            lambda sent, error_code: _emit(
                {**record, "error_code": error_code or record["error_code"]},
                info.started,
                sent,
                metrics,
            )
        )
    else:
        sent = 0 if request.method == "HEAD" else (response.calculate_content_length() or 0)
        _emit(record, info.started, sent, metrics)
    return response


def _emit(record: dict[str, Any], started: float, bytes_out: int, metrics: Any) -> None:
    duration = time.perf_counter() - started
    record = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        **record,
        "duration_ms": round(duration * 1000, 1),
        "bytes_out": bytes_out,
    }
    access_log.info(json.dumps(record, separators=(",", ":")))
    if metrics is not None:
        metrics.observe_request(record)


#: Endpoints that are neither logged nor counted (probes and scrapes every few seconds).
QUIET_ENDPOINTS = frozenset({"healthz", "readyz", "metrics"})


class _LineFormatter(logging.Formatter):
    """Access lines as they are (already JSON); everything else with time, level and name."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == access_log.name:
            return record.getMessage()
        return super().format(record)


def configure_standalone_logging() -> None:
    """Log lines to stderr for the standalone app (a host app configures its own logging)."""
    logger = logging.getLogger("sora_proxy")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("SORA_PROXY_LOG_LEVEL", "INFO").upper())
