"""webhooks.py against a real receiver on loopback that checks every request with the
official openai SDK (``client.webhooks.unwrap``), the way a caller's endpoint would."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import quote

import openai
import pytest
from flask import Flask, Response, request
from servers import served

from sora_proxy.webhooks import (
    BACKOFF,
    GIVE_UP_AFTER,
    WebhookEndpoint,
    deliver,
    event_payload,
    next_attempt_at,
    webhook_id,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
VIDEO = "video_68d7512d07848190b3e45da0ecbebcde"
CREATED = 1_760_000_000


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    event: object | None
    error: str | None


class Receiver:
    """A caller's endpoint: verifies with the SDK, records, answers as the path says."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.release = threading.Event()
        self.app = Flask("receiver")
        self.app.add_url_rule("/<path:path>", view_func=self.handle, methods=["POST"])

    def handle(self, path: str) -> Response:
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        client = openai.OpenAI(api_key="x", webhook_secret=SECRET)
        try:
            event, error = client.webhooks.unwrap(body.decode(), headers), None
        except (openai.InvalidWebhookSignatureError, ValueError) as exc:
            event, error = None, type(exc).__name__ + ": " + str(exc)
        self.received.append(Received("/" + path, headers, body, event, error))
        if path == "hang":
            self.release.wait(10)
        if path == "redirect":
            return Response(status=302, headers={"Location": "/hook"})
        if path.startswith("status/"):
            headers_out = {}
            if "retry_after" in request.args:
                headers_out["Retry-After"] = request.args["retry_after"]
            return Response("nope", status=int(path.split("/")[1]), headers=headers_out)
        return Response("ok" if error is None else error, status=200 if error is None else 400)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with served(hooks.app) as url:
        yield hooks, url
        hooks.release.set()


def endpoint(url: str, secret: str = SECRET) -> WebhookEndpoint:
    return WebhookEndpoint.checked(url, secret, where="SORA_PROXY_WEBHOOKS[alice]")


def send(url: str, event_type: str = "video.completed", **kwargs: object):
    options = {"timeout": 5.0, "allow_private": True, **kwargs}
    secret = options.pop("secret", SECRET)
    body = event_payload(VIDEO, event_type, CREATED)
    return deliver(endpoint(url, secret), webhook_id(VIDEO, event_type), body, **options)


# --- delivered events ---------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["video.completed", "video.failed"])
def test_delivered_event_verifies_with_the_openai_sdk(receiver, event_type: str) -> None:
    hooks, url = receiver
    delivery = send(f"{url}/hook", event_type)
    assert delivery.delivered and delivery.status == 200 and delivery.reason == "HTTP 200"
    assert delivery.retry_after is None and not delivery.permanent
    (got,) = hooks.received
    assert got.error is None, got.error
    event = json.loads(got.body)
    assert event == {
        "id": event["id"],
        "object": "event",
        "type": event_type,
        "created_at": CREATED,
        "data": {"id": VIDEO},
    }
    assert re.fullmatch(r"evt_[0-9a-f]{32}", event["id"])
    assert got.body == json.dumps(event, separators=(",", ":")).encode()
    assert got.headers["webhook-id"] == webhook_id(VIDEO, event_type)
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 5
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "sora-proxy-webhooks"
    assert "authorization" not in got.headers


def test_a_retry_has_the_same_id_and_body_and_a_new_timestamp(receiver) -> None:
    hooks, url = receiver
    assert send(f"{url}/hook", now=time.time() - 120).delivered
    assert send(f"{url}/hook").delivered
    first, second = hooks.received
    assert first.error is None and second.error is None
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) >= 119
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]


def test_ids_are_derived_from_video_and_type() -> None:
    assert webhook_id(VIDEO, "video.completed") == webhook_id(VIDEO, "video.completed")
    assert re.fullmatch(r"wh_[0-9a-f]{32}", webhook_id(VIDEO, "video.completed"))
    assert webhook_id(VIDEO, "video.completed") != webhook_id(VIDEO, "video.failed")
    assert webhook_id(VIDEO, "video.completed") != webhook_id("video_other", "video.completed")
    completed = json.loads(event_payload(VIDEO, "video.completed", 1))
    assert completed == json.loads(event_payload(VIDEO, "video.completed", 2)) | {"created_at": 1}
    assert completed["id"] != json.loads(event_payload(VIDEO, "video.failed", 1))["id"]
    with pytest.raises(ValueError):
        event_payload(VIDEO, "video.exploded", 1)


def test_a_tampered_payload_fails_verification(receiver) -> None:
    hooks, url = receiver
    assert send(f"{url}/hook").delivered
    (got,) = hooks.received
    tampered = got.body.replace(VIDEO.encode(), b"video_someone_else")
    client = openai.OpenAI(api_key="x", webhook_secret=SECRET)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(tampered.decode(), got.headers)
    for header in ("webhook-id", "webhook-timestamp"):
        changed = {**got.headers, header: got.headers[header] + "1"}
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.unwrap(got.body.decode(), changed)


def test_another_secret_or_a_stale_timestamp_is_refused_by_the_receiver(receiver) -> None:
    hooks, url = receiver
    wrong = send(f"{url}/hook", secret=OTHER_SECRET)
    stale = send(f"{url}/hook", now=time.time() - 3600)
    assert (wrong.delivered, wrong.reason) == (False, "HTTP 400")
    assert (stale.delivered, stale.reason) == (False, "HTTP 400")
    assert "does not match" in hooks.received[0].error
    assert "too old" in hooks.received[1].error


# --- failed attempts ----------------------------------------------------------------------------


def test_server_error_is_a_failed_attempt(receiver) -> None:
    _, url = receiver
    delivery = send(f"{url}/status/500?retry_after=30")
    assert delivery == type(delivery)(False, 500, "HTTP 500", None, False)


def test_429_with_retry_after_seconds(receiver) -> None:
    _, url = receiver
    delivery = send(f"{url}/status/429?retry_after=120")
    assert (delivery.delivered, delivery.status, delivery.reason) == (False, 429, "HTTP 429")
    assert delivery.retry_after == 120.0 and not delivery.permanent


def test_503_with_retry_after_http_date(receiver) -> None:
    _, url = receiver
    now = time.time()
    when = quote(formatdate(now + 600, usegmt=True))
    delivery = send(f"{url}/status/503?retry_after={when}", now=now)
    assert delivery.status == 503 and delivery.retry_after is not None
    assert 598 <= delivery.retry_after <= 601


def test_unreadable_retry_after_is_ignored(receiver) -> None:
    _, url = receiver
    assert send(f"{url}/status/429?retry_after=soon").retry_after is None


def test_redirect_is_not_followed(receiver) -> None:
    hooks, url = receiver
    delivery = send(f"{url}/redirect")
    assert (delivery.delivered, delivery.status, delivery.reason) == (False, 302, "HTTP 302")
    assert not delivery.permanent
    assert [got.path for got in hooks.received] == ["/redirect"]


def test_hanging_receiver_times_out(receiver) -> None:
    _, url = receiver
    started = time.monotonic()
    delivery = send(f"{url}/hang", timeout=1.0)
    elapsed = time.monotonic() - started
    assert (delivery.delivered, delivery.status, delivery.reason) == (False, None, "timed out")
    assert not delivery.permanent
    assert 0.9 <= elapsed < 1.5


def test_a_trickled_answer_is_cut_at_the_timeout(trickler: str) -> None:
    started = time.monotonic()
    delivery = send(trickler, timeout=1.0)
    assert (delivery.delivered, delivery.reason) == (False, "timed out")
    assert time.monotonic() - started < 1.5


def test_connection_refused_is_worth_retrying() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    delivery = send(f"http://127.0.0.1:{port}/hook")
    assert (delivery.delivered, delivery.reason, delivery.permanent) == (
        False,
        "connection failed",
        False,
    )


def test_tls_to_a_plain_http_receiver_fails_cleanly(receiver) -> None:
    _, url = receiver
    delivery = send(url.replace("http://", "https://") + "/hook")
    assert (delivery.delivered, delivery.status, delivery.permanent) == (False, None, False)
    assert delivery.reason == "the TLS connection failed"


# --- address rules and secrets ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_endpoint_refused_unless_allowed(receiver, host: str) -> None:
    hooks, url = receiver
    local = url.replace("127.0.0.1", host) + "/hook"
    refused = send(local, allow_private=False)
    assert (refused.delivered, refused.status, refused.permanent) == (False, None, True)
    assert refused.reason.startswith("refused: the host resolves to a loopback address")
    assert "127.0.0.1" not in refused.reason and "::1" not in refused.reason
    assert hooks.received == []
    assert send(local, allow_private=True).delivered


def test_unusable_url_is_permanent() -> None:
    bad = WebhookEndpoint("ftp://example.com/hook", SECRET)  # as a host app's callback might
    delivery = deliver(bad, webhook_id(VIDEO, "video.failed"), b"{}", timeout=1, allow_private=True)
    assert (delivery.delivered, delivery.permanent) == (False, True)
    assert delivery.reason == "refused: only http and https URLs are accepted"


def test_unusable_secret_is_permanent(receiver) -> None:
    hooks, url = receiver
    bad = WebhookEndpoint(f"{url}/hook", "whsec_")
    delivery = deliver(bad, webhook_id(VIDEO, "video.failed"), b"{}", timeout=1, allow_private=True)
    assert (delivery.delivered, delivery.permanent) == (False, True)
    assert hooks.received == []


def test_secret_never_shows(receiver) -> None:
    hooks, url = receiver
    hook = endpoint(f"{url}/hook")
    assert SECRET not in repr(hook) and SECRET not in str(hook)
    key = SECRET.removeprefix("whsec_")
    outcomes = [
        send(f"{url}/hook"),
        send(f"{url}/status/503"),
        send(f"{url}/hook", allow_private=False),
        send(f"{url}/hang", timeout=0.5),
    ]
    for outcome in outcomes:
        assert key not in repr(outcome)
    assert all(key not in json.dumps(got.headers) for got in hooks.received)


# --- WebhookEndpoint.checked --------------------------------------------------------------------


def test_checked_accepts_http_and_https() -> None:
    for url in ("https://hooks.example.com/openai", "http://10.0.0.5:8080/hook?team=a"):
        assert endpoint(url) == WebhookEndpoint(url, SECRET)
    svix_style = "whsec_" + base64.b64encode(b"k" * 24).decode()
    assert endpoint("https://example.com/", svix_style).secret == svix_style


@pytest.mark.parametrize(
    ("url", "secret", "says"),
    [
        ("ftp://example.com/hook", SECRET, "http or https"),
        ("example.com/hook", SECRET, "http or https"),
        ("https:///hook", SECRET, "no host"),
        ("https://example.com:99999/hook", SECRET, "not a valid URL"),
        ("https://exa mple.com/hook", SECRET, "not a valid URL"),
        ("https://user:pw@example.com/hook", SECRET, "user name or password"),
        ("https://example.com/hook", SECRET.removeprefix("whsec_"), "must start with whsec_"),
        ("https://example.com/hook", "whsec_!!!not-base64!!!", "followed by base64"),
        ("https://example.com/hook", SECRET.rstrip("="), "followed by base64"),
        ("https://example.com/hook", "whsec_" + base64.b64encode(b"k" * 23).decode(), "24 bytes"),
    ],
)
def test_checked_refuses(url: str, secret: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        WebhookEndpoint.checked(url, secret, where="SORA_PROXY_WEBHOOKS[alice]")
    message = str(caught.value)
    assert message.startswith("SORA_PROXY_WEBHOOKS[alice]: ") and says in message
    assert secret.removeprefix("whsec_") not in message
    assert "pw" not in message


# --- next_attempt_at ----------------------------------------------------------------------------


def test_backoff_schedule_with_jitter() -> None:
    for attempts, wait in enumerate([5, 300, 1800, 7200, 18000, 36000, 36000, 36000], start=1):
        for _ in range(50):
            at = next_attempt_at(0.0, attempts, 0.0)
            assert at is not None and wait * 0.9 <= at <= wait * 1.1
    assert BACKOFF[0] == 5 and BACKOFF[-1] == 36000


def test_retry_after_is_honoured_when_longer_up_to_an_hour() -> None:
    assert next_attempt_at(0.0, 1, 100.0, retry_after=600) == 700.0
    assert next_attempt_at(0.0, 1, 100.0, retry_after=86400) == 3700.0
    shorter = next_attempt_at(0.0, 3, 100.0, retry_after=10)
    assert shorter is not None and 100 + 1800 * 0.9 <= shorter <= 100 + 1800 * 1.1


def test_gives_up_after_24_hours() -> None:
    for _ in range(20):
        first = now = 1_000_000.0
        attempts = 1
        while (at := next_attempt_at(first, attempts, now)) is not None:
            assert at - first <= GIVE_UP_AFTER
            now, attempts = at, attempts + 1
        assert attempts == 7  # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h: the next would pass 24 h
        assert 0.9 * 63305 <= now - first <= 1.1 * 63305
    assert next_attempt_at(0.0, 2, GIVE_UP_AFTER - 60) is None
    assert next_attempt_at(0.0, 1, GIVE_UP_AFTER - 60, retry_after=3600) is None


def test_a_configured_schedule() -> None:
    waits = [next_attempt_at(0.0, attempts, 0.0, schedule=(0.5, 1.0)) for attempts in (1, 2, 3)]
    assert 0.45 <= waits[0] <= 0.55 and 0.9 <= waits[1] <= 1.1 and 0.9 <= waits[2] <= 1.1
