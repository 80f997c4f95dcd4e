"""Prometheus metrics (``SORA_PROXY_METRICS=true``), multiprocess-safe under gunicorn.

Each app gets its own registry, so a host app's metrics and several proxy apps in one process
never collide. Under gunicorn, ``config/gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR``
before workers start; every worker writes its samples there and a scrape of any worker
aggregates all of them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The proxy's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        common: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter(
            "sora_proxy_requests",
            "Requests answered, by route, method, status and upstream.",
            ["route", "method", "status", "upstream"],
            **common,
        )
        self.upstream_latency = Histogram(
            "sora_proxy_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers.",
            ["route", "upstream"],
            buckets=_LATENCY_BUCKETS,
            **common,
        )
        self.bytes = Counter(
            "sora_proxy_bytes",
            "Body bytes streamed, by direction (in: from callers).",
            ["direction", "route"],
            **common,
        )
        self.fetches_refused = Counter(
            "sora_proxy_reference_fetches_refused",
            "URL fetches refused or failed, by reason (refused, failed, too_large).",
            ["reason"],
            **common,
        )
        self.errors = Counter(
            "sora_proxy_errors",
            "Error answers produced by the proxy, by code.",
            ["code"],
            **common,
        )

        self.tracker_polls = Counter(
            "sora_proxy_tracker_polls",
            "Background polls of unfinished videos, by upstream and outcome (ok, failed, missing).",
            ["upstream", "outcome"],
            **common,
        )
        self.videos_ended = Counter(
            "sora_proxy_videos_ended",
            "Videos the tracker saw end, by upstream and status (completed, failed).",
            ["upstream", "status"],
            **common,
        )
        self.archived = Counter(
            "sora_proxy_archived",
            "Variants copied into the archive, by variant and source (upstream, made).",
            ["variant", "source"],
            **common,
        )
        self.archived_bytes = Counter(
            "sora_proxy_archived_bytes", "Bytes written into the archive.", **common
        )
        self.webhook_deliveries = Counter(
            "sora_proxy_webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, failed, given_up, dropped).",
            ["outcome"],
            **common,
        )

        self.budget_holds = Counter(
            "sora_proxy_budget_holds",
            "Budget holds per caller, by outcome (taken, settled, released).",
            ["caller", "outcome"],
            **common,
        )
        self.refusals = Counter(
            "sora_proxy_limit_refusals",
            "Paid requests refused per caller, by limit (rate, concurrency, budget).",
            ["caller", "reason"],
            **common,
        )
        self.spent_seconds = Counter(
            "sora_proxy_spent_video_seconds",
            "Seconds of video settled per caller and model.",
            ["caller", "model"],
            **common,
        )
        self.spent_cost = Counter(
            "sora_proxy_spent_cost",
            "Cost settled per caller and model, in the price table's currency.",
            ["caller", "model"],
            **common,
        )

    def observe_request(self, record: dict[str, Any]) -> None:
        """Count one finished request from its log record."""
        route = record["route"]
        self.requests.labels(
            route, record["method"], str(record["status"]), record["upstream"] or "none"
        ).inc()
        self.bytes.labels("in", route).inc(record["bytes_in"] or 0)
        self.bytes.labels("out", route).inc(record["bytes_out"] or 0)
        if record.get("error_code"):
            self.errors.labels(record["error_code"]).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text: every worker's samples under gunicorn, else this process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
