"""sora_proxy: the OpenAI-format video API (Sora) inside any Flask app, relayed upstream.

Mount it on an existing app::

    from sora_proxy import SoraProxy
    SoraProxy(app)                       # or: proxy = SoraProxy(); proxy.init_app(app)

or build a standalone app with :func:`create_app`. Settings are ``SORA_PROXY_*`` keys in
``app.config`` (see :mod:`sora_proxy.settings` and the README).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .archive import Archive, open_archive
from .auth import AuthenticateCallback, Authenticator
from .blueprint import create_blueprint
from .budgets import Budgets, LimitsCallback
from .caller_limits import CallerLimits
from .catalog import load_catalog, refuse_open_relay
from .client import UpstreamClient
from .errors import ConfigError
from .extension import EXTENSION_KEY, ProxyState, Records, proxy_state
from .idempotency import Idempotency
from .imagework import set_image_concurrency
from .metrics import Metrics
from .observability import configure_standalone_logging
from .ownership import Ownership
from .profiles import CallerProfiles, WebhookCallback
from .readiness import ReadinessProbe
from .settings import Settings, environment_config, load_settings
from .store import open_store
from .store.durable import DurableWrites
from .store.spool import Spool
from .tracker import Tracker
from .tracker import register as register_tracker
from .webhooks import WebhookEndpoint

__all__ = ["CallerLimits", "ConfigError", "SoraProxy", "WebhookEndpoint", "create_app"]
__version__ = "0.1.0"


class SoraProxy:
    """The Flask extension: registers the video routes on a host app.

    :param app: the app to initialise now, or ``None`` to call :meth:`init_app` later.
    :param authenticate: optional ``fn(request) -> caller id | None`` letting the host app's
        own login decide who is calling.
    :param webhook_for: optional ``fn(caller id) -> WebhookEndpoint | None``: where the
        caller's ``video.completed``/``video.failed`` events go (asked before the settings).
    :param limits_for: optional ``fn(caller id) -> CallerLimits | dict | None``: the caller's
        limits and budgets (asked before ``SORA_PROXY_LIMITS``; ``None`` falls back to it).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        authenticate: AuthenticateCallback | None = None,
        webhook_for: WebhookCallback | None = None,
        limits_for: LimitsCallback | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._webhook_for = webhook_for
        self._limits_for = limits_for
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check the settings, then register the blueprint on ``app``.

        :raises ConfigError: a ``SORA_PROXY_*`` setting is missing or invalid.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A SoraProxy is already registered on this app; call init_app once per app."
            )
        settings = load_settings(app.config, has_authenticate=self._authenticate is not None)
        # Per process: with two proxy apps in one process, the last one's setting holds.
        set_image_concurrency(settings.image_concurrency)
        authenticator = Authenticator(settings, self._authenticate)
        catalog = load_catalog(settings)
        refuse_open_relay(catalog, settings, identifies_callers=authenticator.identifies_callers)
        profiles = CallerProfiles(settings, self._webhook_for)
        records = None
        proxy_owned = any(u.dialect.proxy_owned for u in catalog.upstreams.values())
        if authenticator.identifies_callers or len(catalog.upstreams) > 1 or proxy_owned:
            records = _open_records(settings, app.instance_path)
        tracking = settings.tracker != "off" and records is not None
        metrics = Metrics() if settings.metrics else None
        budgets = Budgets(
            settings,
            records.store if records is not None else None,
            records.writes if records is not None else None,
            follows_videos=tracking,
            callback=self._limits_for,
            metrics=metrics,
        )
        state = ProxyState(
            settings=settings,
            authenticator=authenticator,
            catalog=catalog,
            client=UpstreamClient(
                pool_maxsize=settings.pool_maxsize,
                pool_connections=max(4, len(catalog.upstreams)),
            ),
            records=records,
            metrics=metrics,
            readiness=ReadinessProbe(),
            profiles=profiles,
            budgets=budgets,
            archive=_open_archive(settings, app.instance_path) if tracking else None,
            tracker=Tracker() if tracking and settings.tracker == "workers" else None,
        )
        app.extensions[EXTENSION_KEY] = state
        if state.tracker is not None:
            register_tracker(state)
        app.register_blueprint(create_blueprint(), url_prefix=settings.url_prefix or None)


def _open_records(settings: Settings, instance_path: str) -> Records:
    """The store (by default a SQLite file in the instance folder) and what is built on it."""
    url = settings.store_url or f"sqlite:///{instance_path}/sora_proxy.sqlite3"
    try:
        store = open_store(url, prefix=settings.store_prefix)
    except ValueError as error:
        raise ConfigError("SORA_PROXY_STORE_URL", str(error)) from None
    writes = DurableWrites(store, Spool(settings.spool_dir or f"{instance_path}/sora_proxy-spool"))
    # A claim outlives the slowest legitimate request, so a crashed worker's claim frees
    # itself instead of blocking the key for the whole day.
    in_flight_ttl = max(900.0, 2 * (settings.connect_timeout + settings.read_timeout))
    return Records(
        store=store,
        writes=writes,
        ownership=Ownership(store, writes),
        idempotency=Idempotency(
            store, writes, ttl=settings.idempotency_ttl, in_flight_ttl=in_flight_ttl
        ),
    )


def _open_archive(settings: Settings, instance_path: str) -> Archive | None:
    """The archive finished videos are copied into, unless ``SORA_PROXY_ARCHIVE`` is off."""
    if not settings.archive:
        return None
    try:
        return open_archive(settings.archive_url, instance_path)
    except ValueError as error:
        raise ConfigError("SORA_PROXY_ARCHIVE_URL", str(error)) from None


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A standalone app serving only the proxy.

    Settings come from ``SORA_PROXY_*`` environment variables, then ``config`` (which wins).
    ``SORA_PROXY_INSTANCE_PATH`` (an absolute path) is the app's instance folder, where the
    default store, spool and archive live; unset, Flask's own choice (``instance/`` beside an
    editable checkout, ``<prefix>/var/sora_proxy-instance`` for an installed package).
    """
    settings = {**environment_config(), **(config or {})}
    app = Flask("sora_proxy", instance_path=_instance_path(settings.get(INSTANCE_PATH)))
    app.config.update(settings)
    SoraProxy(app)
    configure_standalone_logging()
    with app.app_context():
        hops = proxy_state().settings.trusted_proxies
    if hops:
        # The whole app is ours, so the client address is fixed for every route at once.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    return app


#: The standalone app's instance folder (read by :func:`create_app`, not a ``Settings`` key).
INSTANCE_PATH = "SORA_PROXY_INSTANCE_PATH"


def _instance_path(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not os.path.isabs(value.strip()):
        raise ConfigError(INSTANCE_PATH, "must be an absolute path")
    return value.strip()
