"""Webhook events for finished videos: OpenAI's event shape, Standard Webhooks signatures.

A delivery is one POST of the event's JSON to the caller's endpoint, signed with its
``whsec_`` secret the way OpenAI signs its own (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), so ``client.webhooks.unwrap(...)`` of the official SDKs accepts it.
The ids are derived from the video and the event type, never random: every retry, and an
event scheduled twice, carries the same ``webhook-id`` for the receiver to deduplicate on,
while the timestamp (and so the signature) is that of each attempt. The endpoint is reached
through :func:`sora_proxy.fetch.post_to_url`, under the same address rules as a fetched URL.
Scheduling, retries and state belong to the tracker (:mod:`sora_proxy.deliveries`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from .errors import ReferenceFetchFailed
from .fetch import post_to_url
from .streaming import retry_after_seconds

EVENT_TYPES = ("video.completed", "video.failed")
USER_AGENT = "sora-proxy-webhooks"
#: Waits after the 1st, 2nd, ... failed attempt (Svix's schedule); the last one repeats.
BACKOFF = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
#: No attempt is made later than this after the first.
GIVE_UP_AFTER = 86400.0
_JITTER = 0.1
_MAX_RETRY_AFTER = 3600.0
_MIN_SECRET_BYTES = 24
_WHSEC = "whsec_"
_random = random.SystemRandom()


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where one caller's events go, and the secret they are signed with (kept out of
    ``repr``)."""

    url: str
    secret: str = field(repr=False)

    @classmethod
    def checked(cls, url: str, secret: str, *, where: str) -> WebhookEndpoint:
        """The endpoint, once ``url`` and ``secret`` are known to be usable.

        :param where: names the setting in messages, e.g. ``SORA_PROXY_WEBHOOKS[alice]``.
        :raises ValueError: ``url`` is not an http(s) URL without user info, or ``secret`` is
            not ``whsec_`` and standard base64 (padded) of at least 24 bytes. The message
            echoes neither.
        """
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - a bad port only shows when asked for
        except ValueError:
            parts = None
        if parts is None or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
            raise ValueError(f"{where}: the webhook URL is not a valid URL")
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"{where}: the webhook URL must be an http or https URL")
        if not parts.hostname:
            raise ValueError(f"{where}: the webhook URL has no host")
        if "@" in parts.netloc:
            raise ValueError(f"{where}: the webhook URL must not carry a user name or password")
        if not secret.startswith(_WHSEC):
            raise ValueError(f"{where}: the webhook secret must start with {_WHSEC}")
        try:
            # Strict, padding included: the official SDKs' verifiers refuse unpadded base64.
            key = base64.b64decode(secret[len(_WHSEC) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"{where}: the webhook secret must be {_WHSEC} followed by base64"
            ) from None
        if len(key) < _MIN_SECRET_BYTES:
            raise ValueError(
                f"{where}: the webhook secret must decode to at least {_MIN_SECRET_BYTES} bytes"
            )
        return cls(url, secret)


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt.

    :attr status: the endpoint's HTTP status, ``None`` when it gave none.
    :attr reason: short and loggable, without secrets or addresses: ``"HTTP 503"``,
        ``"timed out"``, ``"refused: the host resolves to a private address"``.
    :attr retry_after: seconds the endpoint asked to wait (429/503 ``Retry-After``).
    :attr permanent: retrying cannot help (the URL or secret is refused).
    """

    delivered: bool
    status: int | None
    reason: str
    retry_after: float | None = None
    permanent: bool = False


def webhook_id(video_id: str, event_type: str) -> str:
    """The ``webhook-id`` of ``event_type`` for ``video_id``: the same on every attempt."""
    return "wh_" + _digest("webhook", video_id, event_type)


def event_payload(video_id: str, event_type: str, created_at: int) -> bytes:
    """The event's body, compact JSON in OpenAI's shape (its ``id`` is derived too).

    :raises ValueError: ``event_type`` is not one of :data:`EVENT_TYPES`.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    event = {
        "id": "evt_" + _digest("event", video_id, event_type),
        "object": "event",
        "type": event_type,
        "created_at": created_at,
        "data": {"id": video_id},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def deliver(
    endpoint: WebhookEndpoint,
    webhook_id: str,
    payload: bytes,
    *,
    timeout: float,
    allow_private: bool,
    now: float | None = None,
) -> Delivery:
    """POST ``payload`` to ``endpoint`` once, signed as of ``now`` (default: the present).

    A 2xx answer is a delivery; anything else, a redirect included, is not. ``timeout``
    bounds the whole attempt, DNS included. Never raises for the endpoint's behaviour.
    """
    sent_at = math.floor(time.time() if now is None else now)
    try:
        signer = Webhook(endpoint.secret)
    except (ValueError, RuntimeError, EmptyWebhookSecretError):  # a secret never checked
        return Delivery(False, None, "refused: the webhook secret is not valid", permanent=True)
    signature = signer.sign(
        webhook_id, datetime.fromtimestamp(sent_at, tz=UTC), payload.decode("utf-8")
    )
    headers = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(sent_at),
        "webhook-signature": signature,
    }
    try:
        status, answer = post_to_url(
            endpoint.url, payload, headers, timeout=timeout, allow_private=allow_private,
            param="webhook", user_agent=USER_AGENT,
        )  # fmt: skip
    except ReferenceFetchFailed as error:
        # fetch's messages read "<param> URL is not allowed: <why>." or "... fetched: <why>."
        why = error.message.partition(": ")[2].rstrip(".") or "connection failed"
        if error.reason == "refused":
            return Delivery(False, None, f"refused: {why}", permanent=True)
        return Delivery(False, None, why)
    if 200 <= status < 300:
        return Delivery(True, status, f"HTTP {status}")
    retry_after = (
        retry_after_seconds(answer.get("Retry-After"), sent_at) if status in (429, 503) else None
    )
    return Delivery(False, status, f"HTTP {status}", retry_after)


def next_attempt_at(
    first_attempt_at: float,
    attempts: int,
    now: float,
    retry_after: float | None = None,
    *,
    schedule: Sequence[float] = BACKOFF,
) -> float | None:
    """When to try again after ``attempts`` failed attempts, or ``None`` to give up.

    Waits follow ``schedule`` (by default :data:`BACKOFF`: 5 s, 5 min, 30 min, 2 h, 5 h, then
    10 h; its last wait repeats) with ±10% jitter, or the endpoint's ``retry_after`` when
    longer (at most an hour). No attempt is planned later than :data:`GIVE_UP_AFTER` after
    ``first_attempt_at``: with the default schedule, seven attempts in all.
    """
    wait = schedule[min(max(attempts, 1), len(schedule)) - 1]
    wait *= _random.uniform(1 - _JITTER, 1 + _JITTER)
    if retry_after is not None and math.isfinite(retry_after):
        wait = max(wait, min(retry_after, _MAX_RETRY_AFTER))
    at = now + wait
    return None if at > first_attempt_at + GIVE_UP_AFTER else at


def _digest(kind: str, video_id: str, event_type: str) -> str:
    return hashlib.sha256(f"{kind}\0{video_id}\0{event_type}".encode()).hexdigest()[:32]
