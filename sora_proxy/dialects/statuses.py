"""Every status word an upstream may say, as one of the four a caller may see.

OpenAI's ``video.status`` is exactly ``queued | in_progress | completed | failed``; the official
SDK's poll loop stops on anything else, so an upstream's ``unknown`` would end a caller's
``create_and_poll`` early. No upstream word reaches a caller: each becomes one of the four, and
the terminal words that are not successes become ``failed`` with an ``error.code``.
"""

from __future__ import annotations

from typing import Any, Literal

VideoStatus = Literal["queued", "in_progress", "completed", "failed"]

#: Upstream word (lower-cased) → (OpenAI status, ``error.code`` for a failure).
STATUS_WORDS: dict[str, tuple[VideoStatus, str | None]] = {
    "queued": ("queued", None),
    "unknown": ("queued", None),  # new-api: not started yet (a chained gateway, NOT_START)
    "pending": ("queued", None),
    "not_start": ("queued", None),
    "submitted": ("queued", None),
    "created": ("queued", None),
    "in_progress": ("in_progress", None),
    "processing": ("in_progress", None),
    "running": ("in_progress", None),
    "rendering": ("in_progress", None),
    "completed": ("completed", None),
    "succeeded": ("completed", None),
    "success": ("completed", None),
    "done": ("completed", None),
    "failed": ("failed", "upstream_error"),
    "failure": ("failed", "upstream_error"),
    "error": ("failed", "upstream_error"),
    "cancelled": ("failed", "cancelled"),
    "canceled": ("failed", "cancelled"),
    "expired": ("failed", "expired"),
    "moderated": ("failed", "moderation_blocked"),
    "blocked": ("failed", "moderation_blocked"),
}


def normalize_status(word: Any) -> tuple[VideoStatus, str | None]:
    """The OpenAI status for an upstream's word, and the error code when it is a failure.

    A missing or unrecognised word is ``queued``: never terminal, so a caller keeps polling
    and the proxy's job timeout, not a guess, ends a job the upstream never finishes.
    """
    if not isinstance(word, str):
        return "queued", None
    return STATUS_WORDS.get(word.strip().lower(), ("queued", None))


def normalize_progress(value: Any, status: VideoStatus) -> int:
    """``progress`` as an int 0..100 (``"30%"``, ``0.3``-style fractions are not guessed)."""
    if status == "completed":
        return 100
    if isinstance(value, str):
        value = value.strip().rstrip("%")
        try:
            value = float(value)
        except ValueError:
            return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(100, int(value)))


def normalize_timestamp(value: Any) -> int | None:
    """Unix seconds; a millisecond value (new-api's docs show them) is scaled down."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value / 1000) if value > 10**11 else int(value)
