"""What the extension keeps per app, and where: ``app.extensions["sora_proxy"]``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .archive import Archive
from .auth import Authenticator
from .budgets import Budgets
from .catalog import Catalog
from .client import UpstreamClient
from .idempotency import Idempotency
from .metrics import Metrics
from .ownership import Ownership
from .profiles import CallerProfiles
from .readiness import ReadinessProbe
from .settings import Settings
from .store import Store
from .store.durable import DurableWrites
from .tracker import Tracker

#: ``app.extensions[EXTENSION_KEY]`` holds the app's :class:`ProxyState`.
EXTENSION_KEY = "sora_proxy"


@dataclass(frozen=True)
class Records:
    """The store and what is kept in it: who owns what, idempotency keys, must-land writes.

    They exist only when callers are identified (keys or the host app's callback), or when
    several upstreams need each id routed back to its own.
    """

    store: Store
    writes: DurableWrites
    ownership: Ownership
    idempotency: Idempotency


@dataclass(frozen=True)
class ProxyState:
    """Everything one app's proxy needs, built once by :meth:`SoraProxy.init_app`.

    :param records: ``None`` in pass-through and anonymous modes with one upstream, which
        store nothing.
    :param metrics: ``None`` unless ``SORA_PROXY_METRICS`` is on.
    :param archive: where finished videos are kept; ``None`` without the tracker or with
        ``SORA_PROXY_ARCHIVE`` off.
    :param tracker: this app's tracker, ``None`` when it is off or there is no store.
    :param budgets: each caller's limits, budgets and usage.
    """

    settings: Settings
    authenticator: Authenticator
    catalog: Catalog
    client: UpstreamClient
    records: Records | None
    metrics: Metrics | None
    readiness: ReadinessProbe
    profiles: CallerProfiles
    budgets: Budgets
    archive: Archive | None = None
    tracker: Tracker | None = None


def proxy_state() -> ProxyState:
    """The current app's :class:`ProxyState`."""
    state = current_app.extensions[EXTENSION_KEY]
    assert isinstance(state, ProxyState)
    return state
