"""What the simulator remembers: the requests it received, its videos, and injected failures.

One :class:`SimulatorState` lives in ``app.extensions["sora_simulator"]``. Tests read it directly
(``state.requests[-1].body``) and arm failures on it (``state.fail_next.append(...)``); the views
and the recording middleware share it across the server's threads behind one lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

#: Bodies longer than this are recorded only up to here (the app still sees all of them).
MAX_RECORDED_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class RecordedFile:
    """One file part of a multipart body, as received."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One request exactly as it reached the simulator.

    ``body`` is the raw bytes read from the socket before any parsing (the first
    :data:`MAX_RECORDED_BODY` bytes, with ``body_truncated`` set, when it was longer);
    ``body_length`` and ``body_sha256`` always describe the whole body. ``form``/``files`` are
    parsed from it for multipart and urlencoded bodies, ``json`` for ``application/json``.
    ``headers`` keep the names as the WSGI server reports them (``Content-Type``,
    ``Authorization``); use :meth:`header` for a case-insensitive lookup.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    body_length: int
    body_sha256: str
    body_truncated: bool = False
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[RecordedFile]] = field(default_factory=dict)
    json: object | None = None

    def header(self, name: str) -> str | None:
        """Return the value of header ``name`` regardless of its case, or ``None``."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class FailureSpec:
    """A failure armed for the next request whose method and path match.

    The request is still recorded. Then the simulator sleeps ``delay`` seconds and:

    * ``reset=True``: shuts the connection down without sending a byte of response (the client
      sees the peer close the connection, e.g. ``RemoteDisconnected``);
    * else ``status`` set: answers that status with an error envelope (``code``
      ``"simulated_failure"``) plus ``headers``;
    * else ``truncate_after`` set: serves the request normally but drops the connection after
      that many body bytes, with the headers (and ``Content-Length``) already sent;
    * else: serves the request normally, only late (for read-timeout tests).

    Dropping a connection needs werkzeug's server (:class:`SimulatorServer`, ``main``), which
    hands the socket to the app; under any other server the app just raises
    ``ConnectionAbortedError``.

    :param path_prefix: matches when the request path starts with it.
    :param method: an HTTP method, or ``None`` for any.
    """

    path_prefix: str = "/v1/videos"
    method: str | None = None
    status: int | None = None
    delay: float = 0.0
    reset: bool = False
    truncate_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        """Whether this failure applies to a request with ``method`` and ``path``."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path_prefix)


class SimulatorState:
    """The simulator's shared memory; every method is safe to call from any thread.

    :param seconds_per_step: how long each of a video's three stages (queued, in progress,
        rendering) lasts; a video is ``completed`` three steps after it was created.
    """

    def __init__(self, *, seconds_per_step: float = 1.0) -> None:
        self.seconds_per_step = seconds_per_step
        self.requests: list[RecordedRequest] = []
        self.videos: dict[str, dict[str, Any]] = {}
        self.fail_next: list[FailureSpec] = []
        self.lock = threading.RLock()

    def record(self, request: RecordedRequest) -> None:
        """Append ``request`` to :attr:`requests`."""
        with self.lock:
            self.requests.append(request)

    def clear_requests(self) -> None:
        """Forget every recorded request."""
        with self.lock:
            self.requests.clear()

    def take_failure(self, method: str, path: str) -> FailureSpec | None:
        """Remove and return the first armed failure matching this request, if any."""
        with self.lock:
            for index, spec in enumerate(self.fail_next):
                if spec.matches(method, path):
                    return self.fail_next.pop(index)
        return None

    def add_video(self, video: dict[str, Any]) -> None:
        """Store a freshly created video; its clock starts now."""
        with self.lock:
            video.setdefault("_started", time.time())
            self.videos[video["id"]] = video

    def get_video(self, video_id: str) -> dict[str, Any] | None:
        """Return the stored record of ``video_id`` (internal keys included), or ``None``."""
        with self.lock:
            return self.videos.get(video_id)

    def delete_video(self, video_id: str) -> bool:
        """Delete ``video_id``; return whether it existed."""
        with self.lock:
            return self.videos.pop(video_id, None) is not None

    def list_videos(self) -> list[dict[str, Any]]:
        """Return the stored videos, oldest first."""
        with self.lock:
            return list(self.videos.values())

    def complete(self, video_id: str) -> None:
        """Move ``video_id``'s clock back so it reads as finished now (saves tests a sleep)."""
        with self.lock:
            video = self.videos[video_id]
            video["_started"] = time.time() - 3 * self.seconds_per_step - 0.001
