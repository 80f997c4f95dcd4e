"""Webhook deliveries: the tracker's ``webhook:`` step, at least once, with backoff.

An event is scheduled once per terminal video (:func:`sora_proxy.lifecycle.finished`); its id,
``webhook-id`` and body are derived from the video and the event type, so every attempt (and a
step replayed after a crash) sends the same event. The endpoint and secret are looked up at
each attempt (:class:`~sora_proxy.profiles.CallerProfiles`), never stored. Attempts back off
for up to 24 h (:func:`sora_proxy.webhooks.next_attempt_at`), each bounded by
``SORA_PROXY_WEBHOOK_TIMEOUT``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from . import webhooks
from .store import Task

if TYPE_CHECKING:
    from .extension import ProxyState

log = logging.getLogger("sora_proxy.webhooks")


def deliver_event(state: ProxyState, task: Task) -> float | None:
    """Try to deliver ``task``'s event once: ``None`` when delivered (or hopeless), else when
    to try again."""
    payload = task.payload
    video_id, event_type, owner = payload["video_id"], payload["type"], payload["owner"]
    endpoint = state.profiles.webhook_for(owner)
    if endpoint is None:
        log.info(
            "webhook %s for video %s dropped: its caller has no endpoint now", event_type, video_id
        )
        _count(state, "dropped")
        return None
    now = time.time()
    first_attempt_at = float(payload.setdefault("first_attempt_at", now))
    webhook_id = webhooks.webhook_id(video_id, event_type)
    body = webhooks.event_payload(video_id, event_type, int(payload["created_at"]))
    delivery = webhooks.deliver(
        endpoint,
        webhook_id,
        body,
        timeout=state.settings.webhook_timeout,
        allow_private=state.settings.webhook_allow_private,
    )
    if delivery.delivered:
        log.info(
            "webhook %s delivered (%s, video %s, attempt %d, HTTP %s)",
            webhook_id,
            event_type,
            video_id,
            task.attempts,
            delivery.status,
        )
        _count(state, "delivered")
        return None
    retry_at = None
    if not delivery.permanent:
        retry_at = webhooks.next_attempt_at(
            first_attempt_at,
            task.attempts,
            now,
            delivery.retry_after,
            schedule=state.settings.webhook_retry_schedule,
        )
    if retry_at is None:
        log.error(
            "webhook %s (%s, video %s) given up after %d attempt(s): %s",
            webhook_id,
            event_type,
            video_id,
            task.attempts,
            delivery.reason,
        )
        _count(state, "given_up")
        return None
    log.warning(
        "webhook %s (%s, video %s) attempt %d failed: %s; next in %.0f s",
        webhook_id,
        event_type,
        video_id,
        task.attempts,
        delivery.reason,
        retry_at - now,
    )
    _count(state, "failed")
    return retry_at


def _count(state: ProxyState, outcome: str) -> None:
    if state.metrics is not None:
        state.metrics.webhook_deliveries.labels(outcome).inc()
