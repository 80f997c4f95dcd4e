"""One request's trip to an upstream and back, shared by every view.

Building the upstream headers, sending (to one upstream, or the first of several that accepts
the connection), reading small answers whole when the proxy must see them, showing callers
their own model names, and the POST path with ownership records and Idempotency-Key.
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests
from flask import Response, request

from .auth import Caller
from .errors import UpstreamUnreachable
from .extension import proxy_state
from .observability import current_info
from .ownership import parse_object
from .sizing import DEFAULT_MODEL
from .store import Kind
from .streaming import RelayedResponse, relay_response
from .upstream import FORWARDED_REQUEST_HEADERS
from .upstreams import Upstream


def authenticate() -> Caller:
    """Who is calling (and note it for the log line)."""
    caller = proxy_state().authenticator.authenticate(request)
    info = current_info()
    if info is not None:
        info.caller = caller.name
    return caller


def note_prompt(fields: dict[str, Any]) -> None:
    """Keep the prompt for the log line (written only with SORA_PROXY_LOG_PROMPTS)."""
    info = current_info()
    if info is not None and isinstance(fields.get("prompt"), str):
        info.prompt = fields["prompt"]


def is_owned() -> bool:
    """True when a store keeps ownership records for this app."""
    return proxy_state().ownership is not None


def owner_name(caller: Caller) -> str:
    """The name records are kept under (``anonymous`` when a store only routes by id)."""
    return caller.name or "anonymous"


def upstream_headers(upstream_idempotency_key: str | None = None) -> dict[str, str]:
    """The request headers to send upstream (end-to-end ones, request id, scoped key)."""
    headers = {
        name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers
    }
    if is_owned():
        # The answer is read to record ownership, so it must arrive as-is (identity); and a
        # caller's own key must not collide with another caller's at the shared upstream.
        headers["Accept-Encoding"] = "identity"
        headers.pop("Idempotency-Key", None)
    if upstream_idempotency_key:
        headers["Idempotency-Key"] = upstream_idempotency_key
    info = current_info()
    if info is not None:
        headers["X-Request-ID"] = info.request_id
    return headers


def note_upstream(upstream: Upstream, started: float) -> None:
    """Note which upstream answered, and how fast, for the log line and metrics."""
    info = current_info()
    if info is None:
        return
    info.upstream = upstream.name
    metrics = proxy_state().metrics
    if metrics is not None:
        metrics.upstream_latency.labels(info.route, info.upstream).observe(
            time.perf_counter() - started
        )


def send(
    upstream: Upstream,
    method: str,
    path: str,
    caller: Caller,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    content_type: str | None = None,
    idempotency_key: str | None = None,
) -> requests.Response:
    """Send one request to ``upstream`` with this request's headers."""
    headers = upstream_headers(idempotency_key)
    if content_type:
        headers["Content-Type"] = content_type
    started = time.perf_counter()
    response = proxy_state().upstream.send(
        upstream,
        method,
        path,
        headers=headers,
        params={key: str(value) for key, value in (params or {}).items()},
        body=body,
        caller_authorization=caller.upstream_authorization,
    )
    note_upstream(upstream, started)
    return response


def answer(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    """A small answer read whole, sent back as it was."""
    return RelayedResponse(body, status=status, headers=headers)


def relay(upstream: Upstream, method: str, path: str, caller: Caller, **kwargs: Any) -> Response:
    """Send, and stream the answer back unchanged."""
    return relay_response(send(upstream, method, path, caller, **kwargs), method=method)


def present_model(upstream: Upstream, data: bytes, caller_model: str | None = None) -> bytes:
    """Show the caller the model name they use, not the upstream's deployment name."""
    answer = parse_object(data)
    deployed = answer.get("model") if answer else None
    if not isinstance(deployed, str):
        return data
    name = caller_model if caller_model in upstream.models else upstream.caller_model(deployed)
    if name is None or name == deployed or upstream.models[name].deployment != deployed:
        return data
    return json.dumps({**answer, "model": name}).encode("utf-8")


def upstream_of(caller: Caller, resource_id: str, kind: Kind) -> Upstream:
    """The upstream holding ``resource_id``; with a store, only if the caller owns it."""
    catalog = proxy_state().upstream.catalog
    if not is_owned():
        return next(iter(catalog.upstreams.values()))
    record = proxy_state().ownership.require(owner_name(caller), resource_id, kind)
    upstream = catalog.upstreams.get(record.upstream)
    if upstream is None:
        raise UpstreamUnreachable(
            "The upstream that holds this resource is no longer configured.",
            code="upstream_not_configured",
        )
    return upstream


def default_upstream() -> Upstream:
    """Where new jobs without a model go (uploaded edits, characters): the first choice for
    the default model."""
    return proxy_state().upstream.catalog.candidates(DEFAULT_MODEL, None, None)[0]


