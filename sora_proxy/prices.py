"""The price table (``SORA_PROXY_PRICES``): what one second of video costs, per model and size.

JSON (or the same as a mapping set in code), prices per second of video in one currency::

    {"currency": "usd",
     "models": {"sora-2": 0.10,
                "sora-2-pro": {"720x1280": 0.30, "1280x720": 0.30, "*": 0.50},
                "*": 0.20}}

A model's price is one number, or a map of size tiers (``*`` for every other size); the model
``*`` prices every other model. A video of ``s`` seconds costs ``s`` times its price. Prices
are kept in millionths, so sums in the ledger are exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import ConfigError

#: Millionths of the currency in one unit.
MICROS = 1_000_000
_KEY = "SORA_PROXY_PRICES"
ANY = "*"


@dataclass(frozen=True)
class PriceTable:
    """Prices per second, in millionths of :attr:`currency`, per model and size tier."""

    currency: str
    models: Mapping[str, Mapping[str, int]]

    def per_second(self, model: str, size: str | None) -> int | None:
        """Millionths per second of ``model`` at ``size``, or ``None`` when unpriced."""
        tiers = self.models.get(model) or self.models.get(ANY)
        if tiers is None:
            return None
        return tiers.get(size or "", tiers.get(ANY))

    def prices(self, model: str) -> bool:
        """True when ``model`` has a price at every size."""
        tiers = self.models.get(model) or self.models.get(ANY)
        return tiers is not None and ANY in tiers


def to_micros(value: Any, where: str) -> int:
    """A non-negative amount of money (a number or a decimal string) in millionths."""
    if isinstance(value, bool):
        raise ConfigError(where, "must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(where, "must be a number") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(where, "must be a number, 0 or more")
    return int((amount * MICROS).to_integral_value())


def from_micros(micros: int) -> float:
    """Millionths as a plain number of the currency (for JSON answers)."""
    return float(Decimal(micros) / MICROS)


def load_prices(text: str | None) -> PriceTable | None:
    """Parse ``SORA_PROXY_PRICES`` (JSON text); ``None`` when unset."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(_KEY, "is not valid JSON") from None
    if not isinstance(value, Mapping) or not isinstance(value.get("models"), Mapping):
        raise ConfigError(_KEY, 'must be {"currency": "usd", "models": {model: price, ...}}')
    currency = value.get("currency", "usd")
    if not isinstance(currency, str) or not currency.strip():
        raise ConfigError(_KEY, "currency must be a name such as usd")
    models: dict[str, dict[str, int]] = {}
    for model, price in value["models"].items():
        where = f"{_KEY}[{model}]"
        if isinstance(price, Mapping):
            if not price:
                raise ConfigError(where, "has no size tiers")
            models[model] = {
                str(size): to_micros(tier, f"{where}[{size}]") for size, tier in price.items()
            }
        else:
            models[model] = {ANY: to_micros(price, where)}
    return PriceTable(currency.strip().lower(), models)
