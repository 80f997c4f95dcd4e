"""``SORA_PROXY_STREAMS_PER_CALLER``: open content streams per caller, counted per worker.

A download the proxy streams itself holds a thread for as long as it lasts, so one caller
with many open downloads could take every thread of a worker. Each worker process counts
its open streams per caller and refuses one more with ``429 rate_limit_exceeded``. Streams
handed to nginx (:mod:`sora_proxy.handoff`) are counted by nginx's ``limit_conn`` instead,
keyed on the same caller key; the two counts are separate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response

from .errors import TooManyRequests

#: Seconds a refused caller is told to wait: a stream's end is not predictable, so soon.
RETRY_AFTER = 1

_lock = threading.Lock()
_open: dict[str, int] = {}


class StreamSlot:
    """One counted stream of ``key``; :meth:`hold` ties its release to a response's body."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._released = False
        self._once = threading.Lock()

    def hold(self, response: Response) -> Response:
        """Keep the slot until ``response``'s body is closed (sent, or the client left);
        a response without a streamed body releases it at once."""
        body = response.response
        if not response.direct_passthrough or not hasattr(body, "close"):
            self.release()
            return response
        response.response = _Releasing(body, self.release)
        return response

    def release(self) -> None:
        """Give the slot back (once, however often it is called)."""
        with self._once:
            if self._released:
                return
            self._released = True
        with _lock:
            count = _open.get(self.key, 0) - 1
            if count > 0:
                _open[self.key] = count
            else:
                _open.pop(self.key, None)


def acquire(key: str, cap: int) -> StreamSlot | None:
    """A slot for one more stream of ``key``, or ``None`` when there is no cap (``cap`` 0).

    :raises TooManyRequests: ``key`` already has ``cap`` open streams in this worker.
    """
    if cap <= 0:
        return None
    with _lock:
        if _open.get(key, 0) >= cap:
            raise TooManyRequests(
                f"Too many concurrent downloads: at most {cap} at a time per caller.",
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        _open[key] = _open.get(key, 0) + 1
    return StreamSlot(key)


class _Releasing:
    """A WSGI body that runs ``release`` after the wrapped body is closed."""

    def __init__(self, body: Iterable[Any], release: Callable[[], None]) -> None:
        self._body = body
        self._release = release

    def __iter__(self) -> Iterator[Any]:
        return iter(self._body)

    def __getattr__(self, name: str) -> Any:
        # add_close_callback (the log line at the stream's end), peek, sent: the body's own.
        return getattr(self._body, name)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._release()
