"""The usage a caller is shown (``GET /v1/usage``), and the periods budgets count in.

Periods are UTC days and months, keyed ``day:2026-12-03`` and ``month:2026-12`` in the ledger;
amounts are shown as seconds of video and as money in the price table's currency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .prices import from_micros
from .store.ledger import Amount, Cap, UsageRow


def period_keys(now: float) -> dict[str, str]:
    """The periods ``now`` falls in (UTC): ``{"day": "day:2026-12-03", "month": …}``."""
    moment = datetime.fromtimestamp(now, UTC)
    return {"day": f"day:{moment:%Y-%m-%d}", "month": f"month:{moment:%Y-%m}"}


def period_bounds(name: str, now: float) -> tuple[datetime, datetime]:
    """Where the period ``name`` (``day`` or ``month``) holding ``now`` starts and ends."""
    moment = datetime.fromtimestamp(now, UTC)
    if name == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromtimestamp(start.timestamp() + 86400, UTC)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        month = start.month % 12 + 1
        end = start.replace(year=start.year + (start.month == 12), month=month)
    return start, end


def until_next(name: str, now: float) -> int:
    """Seconds until the period ``name`` starts again."""
    return max(1, math.ceil(period_bounds(name, now)[1].timestamp() - now))


def period_answer(
    name: str, key: str, rows: Mapping[str, UsageRow], cap: Cap | None, now: float
) -> dict[str, Any]:
    """One period of the usage answer: spent, held, limit and remaining, per model too."""
    start, end = period_bounds(name, now)
    spent = sum((row.spent for row in rows.values()), Amount())
    held = sum((row.held for row in rows.values()), Amount())
    return {
        "period": key.partition(":")[2],
        "starts_at": int(start.timestamp()),
        "ends_at": int(end.timestamp()),
        "spent": _shown(spent),
        "held": _shown(held),
        "limit": None if cap is None else _shown_cap(cap),
        "remaining": None if cap is None else _remaining(cap, spent + held),
        "videos": {
            "settled": sum(row.settled for row in rows.values()),
            "released": sum(row.released for row in rows.values()),
            "unfinished": sum(row.holding for row in rows.values()),
        },
        "by_model": {
            model: {
                "spent": _shown(row.spent),
                "held": _shown(row.held),
                "videos": {
                    "settled": row.settled,
                    "released": row.released,
                    "unfinished": row.holding,
                },
            }
            for model, row in sorted(rows.items())
        },
    }


def _shown(amount: Amount) -> dict[str, float]:
    return {"seconds": amount.ms / 1000, "cost": from_micros(amount.micros)}


def _shown_cap(cap: Cap) -> dict[str, float | None]:
    return {
        "seconds": None if cap.ms is None else cap.ms / 1000,
        "cost": None if cap.micros is None else from_micros(cap.micros),
    }


def _remaining(cap: Cap, used: Amount) -> dict[str, float | None]:
    return {
        "seconds": None if cap.ms is None else max(0, cap.ms - used.ms) / 1000,
        "cost": None if cap.micros is None else from_micros(max(0, cap.micros - used.micros)),
    }


def describe(cap: Cap | None, currency: str) -> str:
    """A budget in words, for a refusal's message."""
    if cap is None:
        return "no budget"
    parts = []
    if cap.ms is not None:
        parts.append(f"{cap.ms / 1000:g} seconds of video")
    if cap.micros is not None:
        parts.append(f"{from_micros(cap.micros):g} {currency}")
    return " and ".join(parts)
