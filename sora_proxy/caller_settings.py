"""Per-caller settings: caller keys (``SORA_PROXY_API_KEYS``, ``_API_KEYS_FILE``) and the
webhook endpoints named beside them (``SORA_PROXY_WEBHOOKS``, ``_WEBHOOK_URL``/``_SECRET``, a
keys-file line's ``webhook_url=``/``webhook_secret=``). Read by :func:`sora_proxy.settings.
load_settings`; every refusal is a one-line :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .caller_limits import KEY_FILE_OPTIONS as KEY_FILE_LIMIT_OPTIONS
from .caller_limits import key_file_limits
from .errors import ConfigError

PREFIX = "SORA_PROXY_"
_WEBHOOK_OPTIONS = ("webhook_url", "webhook_secret")
#: What a keys-file line may add after ``name:key``.
_KEY_FILE_OPTIONS = _WEBHOOK_OPTIONS + KEY_FILE_LIMIT_OPTIONS


def _text(config: Mapping[str, Any], name: str) -> str | None:
    """A string setting, stripped; ``None`` when unset or empty."""
    value = config.get(PREFIX + name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(PREFIX + name, f"must be a string, got {type(value).__name__}")
    return value.strip() or None


def _named_key(entry: str, key_name: str) -> tuple[str, str]:
    """``name:key`` -> (name, key); a bare key gets a name derived from its digest."""
    name, sep, key = entry.partition(":")
    if not sep:
        name, key = "key-" + hashlib.sha256(entry.encode()).hexdigest()[:12], entry
    name, key = name.strip(), key.strip()
    if not name or not key or any(ch.isspace() for ch in key):
        raise ConfigError(PREFIX + key_name, "entries must be 'name:key' or 'key', without spaces")
    return name, key


def _key_file_line(line: str, number: int) -> tuple[tuple[str, str], dict[str, str]]:
    """``name:key [webhook_url=URL webhook_secret=whsec_…]`` -> the pair and its options."""
    words = line.split()
    first_option = next(
        (i for i, word in enumerate(words) if word.partition("=")[0] in _KEY_FILE_OPTIONS),
        len(words),
    )
    entry = " ".join(words[:first_option])
    if ":" not in entry:
        raise ConfigError(PREFIX + "API_KEYS_FILE", f"line {number} is not 'name:key'")
    found: dict[str, str] = {}
    for option in words[first_option:]:
        name, _, value = option.partition("=")
        if name not in _KEY_FILE_OPTIONS or not value:
            allowed = ", ".join(_KEY_FILE_OPTIONS)
            raise ConfigError(
                PREFIX + "API_KEYS_FILE", f"line {number}: options are {allowed} (name=value)"
            )
        found[name] = value
    return _named_key(entry, "API_KEYS_FILE"), found


def read_api_keys(
    config: Mapping[str, Any],
) -> tuple[tuple[tuple[str, str], ...], list[tuple[str, str, str]], dict[str, dict[str, Any]]]:
    """The caller keys, and the webhooks and limits the keys file names beside them."""
    value = config.get(PREFIX + "API_KEYS")
    items = value.split(",") if isinstance(value, str) else list(value or ())
    pairs = [_named_key(str(item).strip(), "API_KEYS") for item in items if str(item).strip()]
    webhooks: list[tuple[str, str, str]] = []
    limits: dict[str, dict[str, Any]] = {}
    path = _text(config, "API_KEYS_FILE")
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(
                PREFIX + "API_KEYS_FILE", f"cannot be read ({error.strerror or 'error'})"
            ) from None
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pair, options = _key_file_line(line, number)
            pairs.append(pair)
            webhook = {k: v for k, v in options.items() if k in _WEBHOOK_OPTIONS}
            if webhook:
                if set(webhook) != set(_WEBHOOK_OPTIONS):
                    raise ConfigError(
                        PREFIX + "API_KEYS_FILE",
                        f"line {number}: webhook_url and webhook_secret go together",
                    )
                webhooks.append((pair[0], webhook["webhook_url"], webhook["webhook_secret"]))
            limit_options = {k: v for k, v in options.items() if k in KEY_FILE_LIMIT_OPTIONS}
            if limit_options:
                where = f"{PREFIX}API_KEYS_FILE line {number}"
                limits[pair[0]] = key_file_limits(limit_options, where)
    keys = [key for _, key in pairs]
    if len(set(keys)) != len(keys):
        raise ConfigError(PREFIX + "API_KEYS", "the same key is given twice")
    return tuple(pairs), webhooks, limits


def read_webhooks(
    config: Mapping[str, Any], from_keys: list[tuple[str, str, str]]
) -> tuple[tuple[str, str, str], ...]:
    """Webhook endpoints: ``SORA_PROXY_WEBHOOKS`` (``{caller: {url, secret}}``, or that as
    JSON), ``SORA_PROXY_WEBHOOK_URL`` + ``_SECRET`` for every caller, and the keys file's."""
    value = config.get(PREFIX + "WEBHOOKS")
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError:
            raise ConfigError(PREFIX + "WEBHOOKS", "is not valid JSON") from None
    entries = list(from_keys)
    if value is not None:
        if not isinstance(value, Mapping):
            raise ConfigError(PREFIX + "WEBHOOKS", 'must map caller names to {"url", "secret"}')
        for caller, target in value.items():
            if not isinstance(target, Mapping) or not {"url", "secret"} <= set(target):
                raise ConfigError(PREFIX + "WEBHOOKS", f'[{caller}] must be {{"url", "secret"}}')
            entries.append((str(caller), str(target["url"]), str(target["secret"])))
    url, secret = _text(config, "WEBHOOK_URL"), _text(config, "WEBHOOK_SECRET")
    if bool(url) != bool(secret):
        raise ConfigError(PREFIX + "WEBHOOK_URL", "and SORA_PROXY_WEBHOOK_SECRET go together")
    if url and secret:
        entries.append(("*", url, secret))
    names = [name for name, _, _ in entries]
    if len(set(names)) != len(names):
        raise ConfigError(PREFIX + "WEBHOOKS", "a caller has two webhook endpoints")
    return tuple(entries)
