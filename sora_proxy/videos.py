"""The proxy's own ``video`` objects: ids in OpenAI's form, and objects built from job states."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from .dialects import JobState

#: The header that tells a client when polling again is worth it.
POLL_AFTER_HEADER = "openai-poll-after-ms"
#: The statuses of a video still being made; the others (``completed``, ``failed``) are final.
UNFINISHED = ("queued", "in_progress")


def new_video_id() -> str:
    """A fresh id in OpenAI's form (``video_`` and 32 hex digits)."""
    return f"video_{secrets.token_hex(16)}"


def video_object(
    video_id: str,
    job: JobState,
    caller_model: str | None,
    known: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The caller's ``video`` object for ``job``: the proxy's id, the caller's model name, and
    what is ``known`` already (the request's prompt, size, seconds; the last state) wherever
    the upstream's answer is silent."""
    video = {"id": video_id, "object": "video", **job.video}
    for name, value in (known or {}).items():
        # The error is the job's to say: a stale one must not outlive a retry upstream.
        if video.get(name) is None and name != "error":
            video[name] = value
    video["id"] = video_id
    if caller_model is not None:
        video["model"] = caller_model
    return video
