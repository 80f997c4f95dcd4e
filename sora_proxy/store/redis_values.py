"""How the Redis store writes expiries and reads replies; shared by the store and its tasks."""

from __future__ import annotations

from typing import Any


def ms(seconds: float) -> int:
    """``seconds`` as whole milliseconds for ``PX``, at least 1 (Redis rejects an expiry of 0)."""
    return max(1, round(seconds * 1000))


def text(member: Any) -> str:
    """A reply (bytes from the client, or anything else) as a string."""
    return member.decode("utf-8") if isinstance(member, bytes) else str(member)
