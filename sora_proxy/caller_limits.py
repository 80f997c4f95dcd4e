"""What each caller may spend: limits and budgets, from ``SORA_PROXY_LIMITS``, a keys-file
line, or the host app's ``limits_for`` callback.

``SORA_PROXY_LIMITS`` is JSON (or the same mapping set in code), caller name (``*`` for every
caller) to limits; a caller's own entry overrides ``*`` key by key (``null`` removes one)::

    {"*":     {"concurrent": 3, "per_minute": 10, "day": {"seconds": 600}},
     "alice": {"concurrent": 5, "month": {"seconds": 7200, "cost": 50}}}

- ``concurrent``: unfinished videos at once; ``per_minute``: paid creates per minute;
- ``day`` / ``month`` (UTC): ``seconds`` of video and/or ``cost`` in the price table's
  currency (``SORA_PROXY_PRICES``).

A keys-file line says the same as options: ``alice:sk-… concurrent=5 month_seconds=7200``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .prices import to_micros
from .store.ledger import Cap

#: Budget periods, in the order usage lists them.
PERIODS = ("day", "month")
#: The keys-file options a line may carry for limits.
KEY_FILE_OPTIONS = (
    "concurrent",
    "per_minute",
    "day_seconds",
    "day_cost",
    "month_seconds",
    "month_cost",
)
EVERY_CALLER = "*"
_KEY = "SORA_PROXY_LIMITS"


@dataclass(frozen=True)
class CallerLimits:
    """One caller's limits; ``None`` (or a period missing from ``budgets``) means none."""

    concurrent: int | None = None
    per_minute: int | None = None
    day: Cap | None = None
    month: Cap | None = None

    @property
    def budgets(self) -> dict[str, Cap]:
        """The periods with a budget."""
        return {name: cap for name in PERIODS if (cap := getattr(self, name)) is not None}

    @property
    def needs_ledger(self) -> bool:
        """True when enforcing these needs holds followed to each video's end."""
        return self.concurrent is not None or bool(self.budgets)

    @property
    def needs_prices(self) -> bool:
        """True when a budget is in money."""
        return any(cap.micros is not None for cap in self.budgets.values())


def parse_limits(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check one caller's entry; returns it with amounts converted (``None`` kept, to remove
    an inherited key)."""
    if not isinstance(value, Mapping):
        raise ConfigError(where, "must be an object of limits")
    known = {"concurrent", "per_minute", *PERIODS}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(where, f"unknown limit {sorted(unknown)[0]!r}; known: {sorted(known)}")
    parsed: dict[str, Any] = {}
    for name in ("concurrent", "per_minute"):
        if name in value:
            parsed[name] = None if value[name] is None else _whole(value[name], f"{where}.{name}")
    for period in PERIODS:
        if period in value:
            parsed[period] = None if value[period] is None else _cap(value[period], where, period)
    return parsed


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(where, "must be a whole number, 1 or more")
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(where, "must be a whole number, 1 or more") from None
    if number < 1:
        raise ConfigError(where, "must be a whole number, 1 or more")
    return number


def _cap(value: Any, where: str, period: str) -> Cap:
    if not isinstance(value, Mapping) or not value or set(value) - {"seconds", "cost"}:
        raise ConfigError(f"{where}.{period}", 'must be {"seconds": n} and/or {"cost": n}')
    seconds = value.get("seconds")
    cost = value.get("cost")
    ms = None if seconds is None else to_micros(seconds, f"{where}.{period}.seconds") // 1000
    micros = None if cost is None else to_micros(cost, f"{where}.{period}.cost")
    return Cap(ms=ms, micros=micros)


def key_file_limits(options: Mapping[str, str], where: str) -> dict[str, Any]:
    """A keys-file line's limit options as an entry of :func:`parse_limits`'s shape."""
    entry: dict[str, Any] = {}
    for name, value in options.items():
        period, _, unit = name.partition("_")
        if name in ("concurrent", "per_minute"):
            entry[name] = value
        elif period in PERIODS:
            entry.setdefault(period, {})[unit] = value
    return parse_limits(entry, where)


def read_limits(
    text: str | None, from_keys: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Every caller's checked entry: ``SORA_PROXY_LIMITS``, then keys-file lines (which win
    for the keys they name)."""
    entries: dict[str, dict[str, Any]] = {}
    if text is not None:
        try:
            value = json.loads(text)
        except ValueError:
            raise ConfigError(_KEY, "is not valid JSON") from None
        if not isinstance(value, Mapping):
            raise ConfigError(_KEY, "must map caller names (or *) to their limits")
        for caller, limits in value.items():
            entries[str(caller)] = parse_limits(limits, f"{_KEY}[{caller}]")
    for caller, limits in from_keys.items():
        entries[caller] = {**entries.get(caller, {}), **limits}
    return entries


def limits_of(entries: Mapping[str, Mapping[str, Any]], caller: str) -> CallerLimits:
    """``caller``'s limits: its entry over the ``*`` entry, key by key."""
    merged = {**entries.get(EVERY_CALLER, {}), **entries.get(caller, {})}
    return CallerLimits(**{name: value for name, value in merged.items() if value is not None})
