"""sora_proxy: the OpenAI-format video API (Sora) inside any Flask app, relayed upstream.

Mount it on an existing app::

    from sora_proxy import SoraProxy
    SoraProxy(app)                       # or: proxy = SoraProxy(); proxy.init_app(app)

or build a standalone app with :func:`create_app`. Settings are ``SORA_PROXY_*`` keys in
``app.config`` (see :mod:`sora_proxy.settings` and the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .auth import AuthenticateCallback, Authenticator
from .errors import ConfigError
from .extension import EXTENSION_KEY
from .imagework import set_image_concurrency
from .observability import configure_standalone_logging
from .relay import ProxyState, create_blueprint
from .settings import environment_config, load_settings
from .store import open_store
from .upstreams import load_catalog, refuse_open_relay

__all__ = ["ConfigError", "SoraProxy", "create_app"]
__version__ = "0.1.0"


class SoraProxy:
    """The Flask extension: registers the video routes on a host app.

    :param app: the app to initialise now, or ``None`` to call :meth:`init_app` later.
    :param authenticate: optional ``fn(request) -> caller id | None`` letting the host app's
        own login decide who is calling.
    """

    def __init__(
        self, app: Flask | None = None, *, authenticate: AuthenticateCallback | None = None
    ) -> None:
        self._authenticate = authenticate
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check the settings, then register the blueprint on ``app``.

        :raises ConfigError: a ``SORA_PROXY_*`` setting is missing or invalid.
        """
        settings = load_settings(app.config, has_authenticate=self._authenticate is not None)
        # Per process: with two proxy apps in one process, the last one's setting holds.
        set_image_concurrency(settings.image_concurrency)
        authenticator = Authenticator(settings, self._authenticate)
        catalog = load_catalog(settings)
        refuse_open_relay(
            catalog, settings, identifies_callers=authenticator.identifies_callers
        )
        store = None
        if authenticator.identifies_callers or len(catalog.upstreams) > 1:
            url = settings.store_url or f"sqlite:///{app.instance_path}/sora_proxy.sqlite3"
            try:
                store = open_store(url, prefix=settings.store_prefix)
            except ValueError as error:
                raise ConfigError("SORA_PROXY_STORE_URL", str(error)) from None
        spool_dir = settings.spool_dir or f"{app.instance_path}/sora_proxy-spool"
        state = ProxyState(settings, authenticator, catalog, store, spool_dir=spool_dir)
        app.extensions[EXTENSION_KEY] = state
        app.register_blueprint(create_blueprint(), url_prefix=settings.url_prefix or None)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A standalone app serving only the proxy.

    Settings come from ``SORA_PROXY_*`` environment variables, then ``config`` (which wins).
    """
    app = Flask("sora_proxy")
    app.config.update(environment_config())
    if config:
        app.config.update(config)
    SoraProxy(app)
    configure_standalone_logging()
    hops = app.extensions[EXTENSION_KEY].settings.trusted_proxies
    if hops:
        # The whole app is ours, so the client address is fixed for every route at once.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    return app
