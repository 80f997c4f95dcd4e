"""The plain records the simulator keeps: requests as received, content streams, armed failures.

They live in :class:`~sora_proxy.simulator.state.SimulatorState` (which re-exports them), and
tests read them directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

#: Bodies and file parts longer than this are recorded only up to here (``*_truncated`` set);
#: their length and SHA-256 always cover the whole of them, and the app still sees all of it.
MAX_RECORDED_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class RecordedFile:
    """One file part of a multipart body, as received.

    ``data`` holds the first :data:`MAX_RECORDED_BODY` bytes of the part (``truncated`` says
    whether there was more); ``size`` and ``sha256`` describe the whole part, so a large upload
    can be checked without holding it. Built by hand (``RecordedFile(name, type, data)``),
    ``size`` and ``sha256`` are computed from ``data``, so such a file compares equal to the
    record of the same small upload.
    """

    filename: str | None
    content_type: str | None
    data: bytes
    size: int = -1
    sha256: str = ""
    truncated: bool = False

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", len(self.data))
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())


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
    #: When the request arrived and when its answer was done (``time.time()``; ``None``
    #: while it is still being answered), so a test can tell whether two overlapped.
    received_at: float = 0.0
    answered_at: float | None = None

    def header(self, name: str) -> str | None:
        """Return the value of header ``name`` regardless of its case, or ``None``."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class StreamRecord:
    """One content download (a ``GET .../content`` answered 200 or 206) as it goes out.

    The serving thread updates it while the body streams, so a test can watch it live:

    * ``bytes_sent``: body bytes the server has written to the socket so far (a chunk counts
      once the server comes back for the next one);
    * ``finished``: every byte of the answer went out (set when the server comes back after
      the last write, so a client may hold the last byte a moment before: poll :attr:`ended`);
    * ``closed_early``: the stream ended before that, because the client went away (broken
      pipe, reset) or the body was cut (``FailureSpec.truncate_after``).

    ``start`` and ``length`` say which slice of the ``total``-byte content was asked for.
    """

    video_id: str
    variant: str
    start: int
    length: int
    total: int
    bytes_sent: int = 0
    finished: bool = False
    closed_early: bool = False

    @property
    def ended(self) -> bool:
        """Whether the stream is over, either way."""
        return self.finished or self.closed_early


@dataclass
class FailureSpec:
    """A failure armed for the next request whose method and path match.

    The request is still recorded. Then the simulator sleeps ``delay`` seconds and:

    * ``reset=True``: shuts the connection down without sending a byte of response (the client
      sees the peer close the connection, e.g. ``RemoteDisconnected``);
    * else ``status`` set: answers that status with an error envelope (``code``
      ``"simulated_failure"``) plus ``headers``;
    * else serves the request normally, with two optional twists on the body: ``chunk_delay``
      sleeps that long between body chunks (a slow upstream; content goes in 1 MiB chunks),
      and ``truncate_after`` drops the connection after that many body bytes, with the headers
      (and ``Content-Length``) already sent. With neither, the answer is only late.

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
    chunk_delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        """Whether this failure applies to a request with ``method`` and ``path``."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path_prefix)
