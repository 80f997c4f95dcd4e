"""Who owns which video on which upstream, and idempotency keys: pick a backend by URL.

``sqlite:///relative/path.db`` (relative to the working directory) or
``sqlite:////absolute/path.db`` for one host; ``redis://host:port/db``, ``rediss://…`` or
``unix:///path.sock?db=N`` for several hosts sharing one Redis.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from sora_proxy.store.base import (
    Claim,
    ClaimResult,
    Intent,
    Kind,
    Order,
    OwnedResource,
    Store,
    StoredResponse,
    Task,
)
from sora_proxy.store.redis import RedisStore, client_from_url
from sora_proxy.store.sqlite import SQLiteStore

__all__ = [
    "Claim",
    "ClaimResult",
    "Intent",
    "Kind",
    "Order",
    "OwnedResource",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "StoredResponse",
    "Task",
    "open_store",
]

_SQLITE = "sqlite:///"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_store(url: str, *, prefix: str = "sora_proxy:") -> Store:
    """The store named by ``url``; ``prefix`` namespaces Redis keys (ignored for SQLite).

    Nothing connects to Redis here, so a Redis that is briefly down does not stop start-up:
    each call answers 503 until it is back. A SQLite file (and its directory) is created now
    if it can be; if not, each call answers 503.

    :raises ValueError: a one-line message that never repeats the URL (it may hold a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower() if "://" in url else ""
    if scheme == "sqlite":
        if not url.lower().startswith(_SQLITE):
            raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        path = url[len(_SQLITE) :].split("?", 1)[0]
        if not path or path == ":memory:" or path.endswith("/"):
            raise ValueError("a SQLite URL must name a file (in-memory databases are per thread)")
        return SQLiteStore(os.path.abspath(path))
    if scheme in _REDIS_SCHEMES:
        db = parts.path.strip("/") if scheme != "unix" else "0"
        if db and not db.isdigit():
            raise ValueError(f"the database in a {scheme}:// URL is a number, as in /0")
        try:
            client = client_from_url(url)
        except ValueError:
            # Not redis-py's message: it may quote a part of the URL, and the URL may hold a
            # password.
            raise ValueError(f"malformed {scheme}:// URL (check host, port and db)") from None
        return RedisStore(client, prefix=prefix)
    shown = f"'{scheme}'" if scheme else "none"
    raise ValueError(
        f"unsupported store URL scheme {shown}; use sqlite:///path, redis://, rediss:// or unix://"
    )
