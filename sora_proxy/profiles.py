"""What the proxy knows about each caller beyond who they are: where their webhooks go.

Endpoints come from the host app's callback (``SoraProxy(app, webhook_for=fn)``), then from
the settings (``SORA_PROXY_WEBHOOKS``, a keys-file line's ``webhook_url``/``webhook_secret``),
then from ``SORA_PROXY_WEBHOOK_URL``/``_SECRET`` for every caller. They are looked up when an
event is delivered, never stored with it: a secret stays out of the store, and a changed
endpoint applies to deliveries still waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import ConfigError
from .settings import PREFIX, Settings
from .webhooks import WebhookEndpoint

log = logging.getLogger("sora_proxy.webhooks")

#: A host app's lookup: the caller's endpoint, or ``None`` for no webhooks.
WebhookCallback = Callable[[str], "WebhookEndpoint | None"]
#: The settings' name for "every caller".
EVERY_CALLER = "*"


class CallerProfiles:
    """Per-caller options, checked once at start-up.

    :param settings: the proxy's settings (their ``webhooks`` entries).
    :param webhook_for: the host app's lookup, asked first.
    :raises ConfigError: a configured endpoint is not a valid URL or ``whsec_`` secret.
    """

    def __init__(self, settings: Settings, webhook_for: WebhookCallback | None = None) -> None:
        self._callback = webhook_for
        self._endpoints: dict[str, WebhookEndpoint] = {}
        for caller, url, secret in settings.webhooks:
            where = f"{PREFIX}WEBHOOKS[{caller}]"
            try:
                self._endpoints[caller] = WebhookEndpoint.checked(url, secret, where=where)
            except ValueError as error:
                raise ConfigError(f"{PREFIX}WEBHOOKS", str(error)) from None

    @property
    def has_webhooks(self) -> bool:
        """True when any caller may have an endpoint."""
        return self._callback is not None or bool(self._endpoints)

    def webhook_for(self, owner: str) -> WebhookEndpoint | None:
        """``owner``'s endpoint, or ``None``."""
        if self._callback is not None:
            try:
                found = self._callback(owner)
            except Exception:
                log.exception("the host app's webhook_for callback failed for a caller")
                raise
            if found is not None:
                return found
        return self._endpoints.get(owner) or self._endpoints.get(EVERY_CALLER)
