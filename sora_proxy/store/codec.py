"""How idempotency records are written and judged, shared by both stores."""

from __future__ import annotations

import base64
from typing import Any

from sora_proxy.store.base import Claim, ClaimResult, StoredResponse

UNAVAILABLE = "The proxy's store is unavailable."


def encode_response(response: StoredResponse) -> dict[str, Any]:
    """``response`` as a JSON-ready dict: status, ``[name, value]`` header pairs, and the body
    as text when it is UTF-8 (``body``), else base64 (``body_base64``).

    Text keeps the stored answers readable, and searchable for anything that must not be there.
    """
    encoded: dict[str, Any] = {
        "status": response.status,
        "headers": [[name, value] for name, value in response.headers],
    }
    if response.request_digest is not None:
        encoded["request_digest"] = response.request_digest
    try:
        encoded["body"] = response.body.decode("utf-8")
    except UnicodeDecodeError:
        encoded["body_base64"] = base64.b64encode(response.body).decode("ascii")
    return encoded


def decode_response(data: dict[str, Any]) -> StoredResponse:
    """The inverse of :func:`encode_response`."""
    if "body" in data:
        body = data["body"].encode("utf-8")
    else:
        body = base64.b64decode(data["body_base64"])
    return StoredResponse(
        status=int(data["status"]),
        headers=[(str(name), str(value)) for name, value in data["headers"]],
        body=body,
        request_digest=data.get("request_digest"),
    )


def decide(
    fingerprint: str, state: str, stored_fingerprint: str, response: dict[str, Any] | None
) -> ClaimResult:
    """The outcome of claiming a scope that already holds a live (unexpired) record."""
    if state == "in_flight" or response is None:
        return ClaimResult(Claim.IN_FLIGHT)
    if stored_fingerprint != fingerprint:
        return ClaimResult(Claim.MISMATCH)
    return ClaimResult(Claim.REPLAY, decode_response(response))
