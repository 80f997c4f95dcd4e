"""What a paid video request asks for (model, size, seconds), for its budget hold.

A create says it in its body (or gets the model's default length); a remix, edit or extension
works on a source video the proxy knows, whose model, size and length it reuses: a remix or
an edit makes a video as long as its source, an extension adds its own ``seconds`` to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .budgets import Charge
from .catalog import Catalog
from .plan import CreatePlan
from .store import OwnedResource

#: OpenAI's length when a create names none.
DEFAULT_SECONDS = 4.0


def for_create(plan: CreatePlan, catalog: Catalog) -> Charge:
    """A create's charge: what it asks for, or its model's first length."""
    return Charge(plan.model, plan.size, _seconds_for(plan.seconds, plan.model, catalog), "create")


def for_source(
    operation: str,
    source: OwnedResource | None,
    fields: Mapping[str, Any],
    catalog: Catalog,
) -> Charge:
    """A remix, edit or extension of ``source`` (``None``: an uploaded video, unknown here)."""
    known = (source.last_object or {}) if source is not None else {}
    model = str(fields.get("model") or known.get("model") or catalog.default_model)
    size = known.get("size") if isinstance(known.get("size"), str) else None
    source_seconds = _number(known.get("seconds"))
    if operation == "extend":
        added = _seconds_for(fields.get("seconds"), model, catalog)
        return Charge(model, size, added, operation, base_seconds=source_seconds)
    seconds = source_seconds or _seconds_for(fields.get("seconds"), model, catalog)
    return Charge(model, size, seconds, operation)


def _seconds_for(asked: Any, model: str, catalog: Catalog) -> float:
    seconds = _number(asked)
    if seconds is not None:
        return seconds
    route = catalog.models.get(model)
    listed = _number(route.seconds[0]) if route is not None and route.seconds else None
    return listed or DEFAULT_SECONDS


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
