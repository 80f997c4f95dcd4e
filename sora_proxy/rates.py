"""Rates per caller (``per_minute``), counted by the ``limits`` library: a moving window in
Redis (the store's, or ``SORA_PROXY_RATE_LIMIT_STORAGE``), else in this process's memory."""

from __future__ import annotations

import math
import os
import threading
import time
from urllib.parse import urlsplit

import limits
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .errors import ConfigError
from .settings import PREFIX, Settings


class RateCounter:
    """Counts paid requests per caller, one limiter per process.

    :raises ConfigError: at construction, when the storage URI cannot be used.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        if not _rate_uri(settings).startswith("memory://"):
            _rate_storage(settings)  # a bad URI stops start-up, here (memory: made per process)
        self._limiter: MovingWindowRateLimiter | None = None
        self._limiter_pid = -1
        self._lock = threading.Lock()

    @property
    def _rates(self) -> MovingWindowRateLimiter:
        """This process's limiter, made on first use after a fork: a memory storage runs a
        timer thread, which must belong to the worker, not to the master that built the app."""
        pid = os.getpid()
        if self._limiter is None or self._limiter_pid != pid:
            with self._lock:
                if self._limiter is None or self._limiter_pid != pid:
                    self._limiter = MovingWindowRateLimiter(_rate_storage(self._settings))
                    self._limiter_pid = pid
        return self._limiter

    def hit(self, owner: str, per_minute: int) -> int | None:
        """Count one request of ``owner``: ``None`` when it is within ``per_minute``, else the
        seconds until the window frees a slot. Storage errors propagate (the caller says 503)."""
        item = limits.RateLimitItemPerMinute(per_minute)
        if self._rates.hit(item, "creates", owner):
            return None
        stats = self._rates.get_window_stats(item, "creates", owner)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def remaining(self, owner: str, per_minute: int) -> int | None:
        """Requests ``owner`` may still make this minute (``None``: the storage is down)."""
        item = limits.RateLimitItemPerMinute(per_minute)
        try:
            return int(self._rates.get_window_stats(item, "creates", owner).remaining)
        except Exception:  # a usage read does not fail on the rate storage
            return None


def _rate_uri(settings: Settings) -> str:
    """Where rates are counted: the setting, else the store's Redis, else ``memory://``."""
    uri = settings.rate_limit_storage
    store_url = settings.store_url or ""
    scheme = urlsplit(store_url).scheme.lower() if "://" in store_url else ""
    if uri is None and scheme in ("redis", "rediss"):
        uri = store_url
    elif uri is None and scheme == "unix":
        uri = "redis+unix://" + store_url[len("unix://") :]
    return uri or "memory://"


def _rate_storage(settings: Settings) -> Storage:
    """The ``limits`` storage: the setting, else the store's Redis, else this process's memory
    (per worker: with several workers on one host, each counts its own share)."""
    uri = _rate_uri(settings)
    try:
        if uri.startswith("memory://"):
            storage = storage_from_string(uri)
        else:
            storage = storage_from_string(uri, key_prefix=f"{settings.store_prefix}rate")
    except Exception as error:  # the library's own configuration errors
        raise ConfigError(
            PREFIX + "RATE_LIMIT_STORAGE", f"is not usable ({type(error).__name__})"
        ) from None
    if not isinstance(storage, Storage):
        raise ConfigError(PREFIX + "RATE_LIMIT_STORAGE", "must not be an async+ storage")
    return storage
