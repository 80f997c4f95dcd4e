"""Checks made before anything serves: deployment knobs, the whole app build, and warnings.

``sora-proxy check``, ``sora-proxy serve`` and the gunicorn entry points
(:mod:`sora_proxy.wsgi_entry`, ``examples/host_app.py``) share these, so a bad setting ends
each of them the same way: one line naming the key, exit status 2, no traceback.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from . import create_app
from .errors import ConfigError
from .extension import proxy_state
from .settings import PREFIX, environment_config, known_setting_names

#: Read by ``config/gunicorn.conf.py`` and ``sora-proxy serve``, not by the extension.
DEPLOYMENT_NAMES = frozenset(
    PREFIX + name
    for name in (
        "BIND",
        "THREADS",
        "LOG_LEVEL",
        "ACCESS_LOG",
        "SIMULATOR_PORT",
        "WORKER_CLASS",
        "WORKER_CONNECTIONS",
        "INSTANCE_PATH",
    )
)
DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_THREADS = 16
DEFAULT_SIMULATOR_PORT = 8001
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# A path segment naming an API version: v1, v2, v1beta, v2alpha1 (as in /v1, /openai/v1).
_VERSION_SEGMENT = re.compile(r"v\d+(?:[a-z]+\d*)?", re.IGNORECASE)

App = TypeVar("App")


@dataclass(frozen=True)
class Deployment:
    """The deployment knobs, parsed: what gunicorn and ``serve`` are told."""

    bind: str
    threads: int
    workers: int
    log_level: str
    simulator_port: int


def _whole(environ: Mapping[str, str], name: str, default: int, top: int | None = None) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    limit = f" from 1 to {top}" if top else ""
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(name, f"must be a whole number{limit}") from None
    if value < 1 or (top is not None and value > top):
        raise ConfigError(name, f"must be a whole number{limit}")
    return value


def deployment(environ: Mapping[str, str]) -> Deployment:
    """Parse the deployment knobs of ``environ``.

    :raises ConfigError: a knob gunicorn or ``serve`` could not use (gunicorn's config file
        would stop with a traceback on it).
    """
    level = environ.get(PREFIX + "LOG_LEVEL", "").strip().lower() or "info"
    if level not in LOG_LEVELS:
        raise ConfigError(PREFIX + "LOG_LEVEL", f"must be one of {', '.join(LOG_LEVELS)}")
    return Deployment(
        bind=environ.get(PREFIX + "BIND", "").strip() or DEFAULT_BIND,
        threads=_whole(environ, PREFIX + "THREADS", DEFAULT_THREADS),
        workers=_whole(environ, "WEB_CONCURRENCY", 2),
        log_level=level,
        simulator_port=_whole(environ, PREFIX + "SIMULATOR_PORT", DEFAULT_SIMULATOR_PORT, 65535),
    )


def check_environment(environ: Mapping[str, str]) -> list[str]:
    """Build everything :func:`sora_proxy.create_app` builds from ``environ``; return warnings.

    :raises ConfigError: on the first bad setting, as start-up would.
    """
    knobs = deployment(environ)
    app = create_app(environment_config(environ))
    with app.app_context():
        state = proxy_state()
    settings = state.settings
    warnings = _unknown_names(environ)
    for upstream in state.catalog.upstreams.values():
        path = urlsplit(upstream.base_url).path
        if not any(_VERSION_SEGMENT.fullmatch(part) for part in path.split("/")):
            source = (
                f"SORA_PROXY_UPSTREAMS_FILE: upstream '{upstream.name}' base_url"
                if settings.upstreams_file
                else "SORA_PROXY_UPSTREAM_URL"
            )
            warnings.append(
                f"{source} has no version prefix in its path ('{path or '/'}'); the proxy "
                f"appends /videos to it, so it probably wants one such as /v1 "
                f"(https://api.openai.com/v1, https://<resource>.openai.azure.com/openai/v1)"
            )
    if knobs.threads > settings.pool_maxsize:
        warnings.append(
            f"SORA_PROXY_THREADS ({knobs.threads}) is more than SORA_PROXY_POOL_MAXSIZE "
            f"({settings.pool_maxsize}): the threads beyond the pool open and drop an upstream "
            f"connection per request; keep the pool at least the thread count"
        )
    if settings.store_url and state.records is None:
        warnings.append(
            "SORA_PROXY_STORE_URL is set but unused: with no caller keys (pass-through or "
            "anonymous) and one upstream, nothing is stored"
        )
    return warnings


def _unknown_names(environ: Mapping[str, str]) -> list[str]:
    known = known_setting_names() | DEPLOYMENT_NAMES
    warnings = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name} is not a sora_proxy setting and is ignored{hint}")
    return warnings


def report_config_error(error: ConfigError) -> None:
    """Print ``error`` as the one line a failed start shows."""
    print(f"sora-proxy: configuration error: {error}", file=sys.stderr)


def app_or_exit(factory: Callable[[], App], environ: Mapping[str, str]) -> App:
    """``factory()``, or, for a bad setting, one line on stderr and exit status 2.

    For gunicorn entry points: with ``preload_app`` (``config/gunicorn.conf.py``) the master
    builds the app, so the exit ends gunicorn before any worker forks.
    """
    try:
        deployment(environ)
        return factory()
    except ConfigError as error:
        report_config_error(error)
        raise SystemExit(2) from None
