"""Where the extension keeps its state in the app it is mounted on."""

from __future__ import annotations

from typing import Any

from flask import current_app

#: ``app.extensions[EXTENSION_KEY]`` holds the app's ``ProxyState`` (see :mod:`.relay`).
EXTENSION_KEY = "sora_proxy"


def proxy_state() -> Any:
    """The current app's ``ProxyState``."""
    return current_app.extensions[EXTENSION_KEY]
