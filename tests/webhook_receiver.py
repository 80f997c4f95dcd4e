"""A webhook receiver on a real loopback socket that verifies every delivery with the official
``openai`` SDK (``client.webhooks.unwrap``), as an OpenAI customer's endpoint would.

It can be taken down (nothing listening on its port: connection refused) and brought back on
the same port, to prove deliveries wait for it.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import openai
from flask import Flask, Response, request
from servers import free_port
from werkzeug.serving import BaseWSGIServer, make_server


def new_secret() -> str:
    """A Standard Webhooks secret, as OpenAI's dashboard shows them."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Delivery:
    """One request the receiver got."""

    webhook_id: str
    timestamp: str
    verified: bool
    event: dict[str, Any] | None
    received_at: float = field(default_factory=time.time)


class WebhookReceiver:
    """The receiver; ``deliveries`` holds every request, verified or not."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or new_secret()
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        self._client = openai.OpenAI(api_key="unused", webhook_secret=self.secret)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = Flask("webhook-receiver")
        self.app.add_url_rule("/hooks", view_func=self._receive, methods=["POST"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _receive(self) -> Response:
        body = request.get_data(as_text=True)
        headers = {name: value for name, value in request.headers.items()}
        try:
            event = self._client.webhooks.unwrap(body, headers)
        except Exception:  # the SDK's InvalidWebhookSignatureError, or a malformed body
            verified, data = False, None
        else:
            verified, data = True, {**json.loads(body), "_sdk_type": event.type}
        with self.lock:
            self.deliveries.append(
                Delivery(
                    request.headers.get("webhook-id", ""),
                    request.headers.get("webhook-timestamp", ""),
                    verified,
                    data,
                )
            )
        return Response("", status=200 if verified else 400)

    def start(self) -> WebhookReceiver:
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def events(self) -> dict[str, dict[str, Any]]:
        """Verified events, deduplicated by ``webhook-id`` (the first copy of each)."""
        unique: dict[str, dict[str, Any]] = {}
        with self.lock:
            for delivery in self.deliveries:
                if delivery.verified and delivery.event is not None:
                    unique.setdefault(delivery.webhook_id, delivery.event)
        return unique

    def wait_for(self, count: int, timeout: float) -> dict[str, dict[str, Any]]:
        """Wait until ``count`` distinct verified events arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if len(events) >= count:
                return events
            time.sleep(0.1)
        raise AssertionError(f"{len(self.events())} of {count} webhook events after {timeout} s")
