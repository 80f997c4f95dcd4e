"""Every ``SORA_PROXY_*`` setting: its default, how it is read, and how it is checked.

Settings are read once, when the extension is initialised, from the host app's ``config``.
Values may be native Python values (set in code) or strings (read from the environment by
:func:`sora_proxy.create_app`); both are accepted. A bad value raises :class:`ConfigError`
whose message is one line naming the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .caller_limits import read_limits
from .caller_settings import PREFIX as PREFIX
from .caller_settings import read_api_keys, read_webhooks
from .errors import ConfigError
from .prices import PriceTable, load_prices
from .webhooks import BACKOFF

MIB = 1024 * 1024
REFERENCE_FITS = ("cover", "contain", "reject", "pass")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """The proxy's configuration, parsed and validated.

    Attribute names are the config keys without the ``SORA_PROXY_`` prefix, lower-cased.
    """

    #: The single upstream's base URL; ``None`` when ``upstreams_file`` lists several.
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstreams_file: str | None = None
    #: The model a create that names none gets; None: the first model the upstreams offer.
    default_model: str | None = None
    #: Caller keys as (caller name, key) pairs, from SORA_PROXY_API_KEYS and _API_KEYS_FILE.
    api_keys: tuple[tuple[str, str], ...] = ()
    allow_anonymous: bool = False
    url_prefix: str = ""
    fetch_allow_private: bool = False
    fetch_timeout: float = 20.0
    max_reference_bytes: int = 20 * MIB
    max_video_bytes: int = 200 * MIB
    fetch_video_timeout: float = 300.0
    reference_fit: str = "cover"
    #: Reference images decoded at once per worker process (each may take 64 MiB).
    image_concurrency: int = 2
    forward_metadata: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    pool_maxsize: int = 32
    #: Where ownership and idempotency records live; None: the Flask instance folder's SQLite.
    store_url: str | None = None
    store_prefix: str = "sora_proxy:"
    #: Where must-land store writes wait while the store is down; None: the instance folder's
    #: ``sora_proxy-spool``.
    spool_dir: str | None = None
    idempotency_ttl: float = 86400.0
    #: Seconds between two upstream polls of one proxy-owned video, however many clients poll.
    poll_interval: float = 2.0
    #: Follow every unfinished video in the background (a store is needed): poll it to its
    #: end, archive it, deliver its webhook. ``workers``: each worker runs a tracker;
    #: ``external``: the work is scheduled for ``sora-proxy tracker`` processes; ``off``:
    #: videos are polled only when retrieved.
    tracker: str = "workers"
    #: Seconds a tracker holds a task before another may take it (renewed while it works).
    tracker_lease: float = 60.0
    #: Tasks (polls, copies, deliveries) one worker's tracker runs at once.
    tracker_concurrency: int = 4
    #: Seconds after its create a video still unfinished becomes ``failed`` (code ``timeout``).
    job_timeout: float = 3600.0
    #: Keep a copy of each finished video (and its thumbnail and spritesheet).
    archive: bool = True
    #: Where: None for the instance folder's ``sora_proxy-archive``, ``file:///path``, or
    #: ``s3://bucket/prefix?endpoint_url=...&region=...``.
    archive_url: str | None = None
    #: Days an archived video is kept (its ``expires_at``).
    archive_days: float = 30.0
    #: Most bytes the archive may hold; the oldest videos go first. None: no cap.
    archive_max_bytes: int | None = None
    #: Webhook endpoints as (caller name or ``*`` for every caller, URL, ``whsec_`` secret).
    webhooks: tuple[tuple[str, str, str], ...] = ()
    #: Seconds one webhook delivery attempt may take.
    webhook_timeout: float = 10.0
    #: Seconds to wait after each failed delivery (the last one repeats), until 24 h passed.
    webhook_retry_schedule: tuple[float, ...] = BACKOFF
    #: Allow webhook endpoints on loopback and private networks.
    webhook_allow_private: bool = False
    #: Origins whose pages may call the proxy's routes from a browser (CORS); ``*`` for any.
    cors_origins: tuple[str, ...] = ()
    #: Serve the playground page at ``{prefix}/playground``.
    playground: bool = False
    #: Key that signs content URLs; None: the Flask app's ``SECRET_KEY``.
    signing_key: str | None = None
    #: Default and longest life of a signed content URL, in seconds.
    content_url_ttl: float = 3600.0
    content_url_max_ttl: float = 86400.0
    #: Hand content transfers to the web server in front: ``nginx`` (X-Accel-Redirect to the
    #: internal locations of config/nginx/sora-proxy.conf) or ``off``: the proxy streams them.
    handoff: str = "off"
    #: The path under which the nginx site's internal hand-off locations live.
    handoff_prefix: str = "/_sora_proxy_handoff"
    #: Content streams one caller may have open at once in one worker process (0: no cap).
    streams_per_caller: int = 0
    #: Per-caller limits and budgets (:mod:`sora_proxy.caller_limits`), checked: caller name
    #: (``*`` for every caller) to its entry, from SORA_PROXY_LIMITS and the keys file.
    limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Prices per second of video, per model and size (:mod:`sora_proxy.prices`).
    prices: PriceTable | None = None
    #: Where rate limits are counted: None for the store's Redis (memory with SQLite), or a
    #: ``limits`` storage URI (``memory://``, ``redis://host:6379``).
    rate_limit_storage: str | None = None
    #: Proxies in front (nginx: 1) whose X-Forwarded-* headers are trusted.
    trusted_proxies: int = 0
    metrics: bool = False
    log_prompts: bool = False

    def __repr__(self) -> str:
        # The dataclass repr would print keys; a Settings object may end up in a log line.
        return f"Settings(upstream_url={self.upstream_url!r}, url_prefix={self.url_prefix!r})"

    @property
    def create_body_limit(self) -> int:
        """Largest create body accepted: a base64 reference (4/3 of the image cap) plus text."""
        return self.max_reference_bytes * 4 // 3 + 2 * MIB


def _raw(config: Mapping[str, Any], name: str) -> Any:
    return config.get(PREFIX + name)


def _default(name: str) -> Any:
    """The default of the setting ``name`` (``FETCH_TIMEOUT``): the :class:`Settings` field's,
    so each default is written once."""
    found = Settings.__dataclass_fields__.get(name.lower())
    if found is None:
        return None  # API_KEYS_FILE adds to api_keys
    if found.default_factory is not MISSING:
        return found.default_factory()
    return found.default


def _string(config: Mapping[str, Any], name: str) -> str | None:
    default: str | None = _default(name)
    value = _raw(config, name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(PREFIX + name, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    return value if value else default


def _boolean(config: Mapping[str, Any], name: str) -> bool:
    value = _raw(config, name)
    if value is None:
        return bool(_default(name))
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(PREFIX + name, "must be true or false")


def _number(config: Mapping[str, Any], name: str) -> Any:
    """A positive number; a whole one when the default is an ``int``."""
    default = _default(name)
    integer = isinstance(default, int)
    value = _raw(config, name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(PREFIX + name, f"must be {kind}") from None
    if isinstance(value, bool) or not number > 0:
        raise ConfigError(PREFIX + name, "must be a positive number")
    return number


def _count(config: Mapping[str, Any], name: str) -> int:
    value = _raw(config, name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return int(_default(name))
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(PREFIX + name, "must be a whole number (0 or more)") from None
    if isinstance(value, bool) or number < 0:
        raise ConfigError(PREFIX + name, "must be a whole number (0 or more)")
    return number


def _origins(config: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """``*``, or origins (``https://app.example``, no path) as a list or comma-separated."""
    value = _raw(config, name)
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    origins = tuple(str(item).strip().rstrip("/") for item in items if str(item).strip())
    for origin in origins:
        parts = urlsplit(origin)
        plain = parts.scheme in ("http", "https") and parts.netloc and not parts.path
        if origin != "*" and not (plain and not parts.query and not parts.fragment):
            raise ConfigError(
                PREFIX + name, f"{origin!r} is not * or an origin such as https://app.example"
            )
    return origins


def _tracker_mode(config: Mapping[str, Any]) -> str:
    """``workers`` (also true/on), ``external``, or ``off`` (also false)."""
    value = _raw(config, "TRACKER")
    if value is None:
        return str(_default("TRACKER"))
    text = str(value).strip().lower()
    if text in ("workers", "external", "off"):
        return text
    if isinstance(value, bool) or text in _TRUE | _FALSE:
        on = value if isinstance(value, bool) else text in _TRUE
        return "workers" if on else "off"
    raise ConfigError(PREFIX + "TRACKER", "must be workers (true), external or off (false)")


def _handoff(config: Mapping[str, Any]) -> str:
    """``nginx`` or ``off`` (also false)."""
    value = _raw(config, "HANDOFF")
    if value is None:
        return str(_default("HANDOFF"))
    text = str(value).strip().lower()
    if text == "nginx":
        return text
    if value is False or text in _FALSE:
        return "off"
    raise ConfigError(PREFIX + "HANDOFF", "must be nginx or off")


def _handoff_prefix(value: str | None) -> str:
    prefix = "/" + (value or str(_default("HANDOFF_PREFIX"))).strip("/")
    if prefix == "/" or any(ch in prefix for ch in "?#<> ") or "//" in prefix:
        raise ConfigError(PREFIX + "HANDOFF_PREFIX", "must be a plain path such as /_internal")
    return prefix


def _json_text(config: Mapping[str, Any], name: str) -> str | None:
    """A JSON document as text (a mapping set in code is dumped); checked where it is read."""
    value = _raw(config, name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigError(PREFIX + name, "must be JSON or a mapping of plain values") from None


def _pauses(config: Mapping[str, Any], name: str) -> tuple[float, ...]:
    """Positive numbers of seconds, as a list or a comma-separated string."""
    value = _raw(config, name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return tuple(_default(name))
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        pauses = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise ConfigError(PREFIX + name, "must be seconds separated by commas") from None
    if not pauses or any(not pause > 0 for pause in pauses):
        raise ConfigError(PREFIX + name, "must be positive seconds separated by commas")
    return pauses


def _optional_size(config: Mapping[str, Any], name: str) -> int | None:
    """A positive whole number, or None when unset."""
    value = _raw(config, name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(PREFIX + name, "must be a whole number of bytes") from None
    if isinstance(value, bool) or number <= 0:
        raise ConfigError(PREFIX + name, "must be a positive number of bytes")
    return number


def _upstream_url(url: str | None) -> str:
    if not url:
        raise ConfigError(PREFIX + "UPSTREAM_URL", "is not set")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            PREFIX + "UPSTREAM_URL", "must be an http(s) URL such as https://api.openai.com/v1"
        )
    if parts.query or parts.fragment:
        raise ConfigError(PREFIX + "UPSTREAM_URL", "must not have a query or fragment")
    return url.rstrip("/")


def _url_prefix(value: str | None) -> str:
    if not value:
        return ""
    prefix = "/" + value.strip("/")
    if any(ch in prefix for ch in "?#<> ") or "//" in prefix:
        raise ConfigError(PREFIX + "URL_PREFIX", "must be a plain path such as /ai")
    return prefix


def load_settings(config: Mapping[str, Any], *, has_authenticate: bool = False) -> Settings:
    """Parse and validate the ``SORA_PROXY_*`` keys of ``config``.

    :param has_authenticate: the host app passed an ``authenticate`` callback, so callers are
        identified even without ``SORA_PROXY_API_KEYS``.
    :raises ConfigError: on the first bad value, naming its key.
    """
    upstream_api_key = _string(config, "UPSTREAM_API_KEY")
    api_keys, key_file_webhooks, key_file_limits = read_api_keys(config)
    allow_anonymous = _boolean(config, "ALLOW_ANONYMOUS")
    if upstream_api_key and not api_keys and not has_authenticate and not allow_anonymous:
        raise ConfigError(
            PREFIX + "API_KEYS",
            "is empty while SORA_PROXY_UPSTREAM_API_KEY is set: anyone could spend that key; "
            "set caller keys or SORA_PROXY_ALLOW_ANONYMOUS=true",
        )
    fit = (_string(config, "REFERENCE_FIT") or _default("REFERENCE_FIT")).lower()
    if fit not in REFERENCE_FITS:
        raise ConfigError(PREFIX + "REFERENCE_FIT", f"must be one of {', '.join(REFERENCE_FITS)}")
    upstreams_file = _string(config, "UPSTREAMS_FILE")
    upstream_url = _string(config, "UPSTREAM_URL")
    if _number(config, "CONTENT_URL_TTL") > _number(config, "CONTENT_URL_MAX_TTL"):
        raise ConfigError(
            PREFIX + "CONTENT_URL_TTL", "is longer than SORA_PROXY_CONTENT_URL_MAX_TTL"
        )
    if _handoff(config) == "nginx" and _count(config, "TRUSTED_PROXIES") < 1:
        raise ConfigError(
            PREFIX + "HANDOFF",
            "is nginx while SORA_PROXY_TRUSTED_PROXIES is 0; set it to 1 (nginx in front)",
        )
    if upstreams_file and (upstream_url or upstream_api_key):
        raise ConfigError(
            PREFIX + "UPSTREAMS_FILE",
            "is set together with SORA_PROXY_UPSTREAM_URL/_API_KEY; list that upstream in the file",
        )
    return Settings(
        upstream_url=None if upstreams_file else _upstream_url(upstream_url),
        upstreams_file=upstreams_file,
        default_model=_string(config, "DEFAULT_MODEL"),
        upstream_api_key=upstream_api_key,
        api_keys=api_keys,
        allow_anonymous=allow_anonymous,
        url_prefix=_url_prefix(_string(config, "URL_PREFIX")),
        fetch_allow_private=_boolean(config, "FETCH_ALLOW_PRIVATE"),
        fetch_timeout=_number(config, "FETCH_TIMEOUT"),
        max_reference_bytes=_number(config, "MAX_REFERENCE_BYTES"),
        max_video_bytes=_number(config, "MAX_VIDEO_BYTES"),
        fetch_video_timeout=_number(config, "FETCH_VIDEO_TIMEOUT"),
        reference_fit=fit,
        image_concurrency=_number(config, "IMAGE_CONCURRENCY"),
        forward_metadata=_boolean(config, "FORWARD_METADATA"),
        connect_timeout=_number(config, "CONNECT_TIMEOUT"),
        read_timeout=_number(config, "READ_TIMEOUT"),
        pool_maxsize=_number(config, "POOL_MAXSIZE"),
        store_url=_string(config, "STORE_URL"),
        store_prefix=_string(config, "STORE_PREFIX") or _default("STORE_PREFIX"),
        spool_dir=_string(config, "SPOOL_DIR"),
        idempotency_ttl=_number(config, "IDEMPOTENCY_TTL"),
        poll_interval=_number(config, "POLL_INTERVAL"),
        tracker=_tracker_mode(config),
        tracker_lease=_number(config, "TRACKER_LEASE"),
        tracker_concurrency=_number(config, "TRACKER_CONCURRENCY"),
        job_timeout=_number(config, "JOB_TIMEOUT"),
        archive=_boolean(config, "ARCHIVE"),
        archive_url=_string(config, "ARCHIVE_URL"),
        archive_days=_number(config, "ARCHIVE_DAYS"),
        archive_max_bytes=_optional_size(config, "ARCHIVE_MAX_BYTES"),
        webhooks=read_webhooks(config, key_file_webhooks),
        webhook_timeout=_number(config, "WEBHOOK_TIMEOUT"),
        webhook_retry_schedule=_pauses(config, "WEBHOOK_RETRY_SCHEDULE"),
        webhook_allow_private=_boolean(config, "WEBHOOK_ALLOW_PRIVATE"),
        cors_origins=_origins(config, "CORS_ORIGINS"),
        playground=_boolean(config, "PLAYGROUND"),
        signing_key=_string(config, "SIGNING_KEY"),
        content_url_ttl=_number(config, "CONTENT_URL_TTL"),
        content_url_max_ttl=_number(config, "CONTENT_URL_MAX_TTL"),
        handoff=_handoff(config),
        handoff_prefix=_handoff_prefix(_string(config, "HANDOFF_PREFIX")),
        streams_per_caller=_count(config, "STREAMS_PER_CALLER"),
        limits=read_limits(_json_text(config, "LIMITS"), key_file_limits),
        prices=load_prices(_json_text(config, "PRICES")),
        rate_limit_storage=_string(config, "RATE_LIMIT_STORAGE"),
        trusted_proxies=_count(config, "TRUSTED_PROXIES"),
        metrics=_boolean(config, "METRICS"),
        log_prompts=_boolean(config, "LOG_PROMPTS"),
    )


def environment_config(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``SORA_PROXY_*`` variables of the environment, as config entries."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if name.startswith(PREFIX)}


def known_setting_names() -> frozenset[str]:
    """Every ``SORA_PROXY_*`` name :func:`load_settings` reads, derived from :class:`Settings`.

    One name per dataclass field (a field added there is known here at once), plus
    ``SORA_PROXY_API_KEYS_FILE``, which feeds the ``api_keys`` field, and
    ``SORA_PROXY_WEBHOOK_URL``/``_SECRET``, which feed ``webhooks``.
    """
    from dataclasses import fields

    return frozenset({PREFIX + item.name.upper() for item in fields(Settings)}) | {
        PREFIX + "API_KEYS_FILE",
        PREFIX + "WEBHOOK_URL",
        PREFIX + "WEBHOOK_SECRET",
    }
