"""Limits and budgets per caller: checked before a paid request is sent, settled at its end.

The order, for a paid create (and remix, edit, extension):

1. the rate (``per_minute``), counted by the ``limits`` library in Redis (the store's, or
   ``SORA_PROXY_RATE_LIMIT_STORAGE``) or in this process's memory;
2. a hold of the estimated cost (the seconds asked for, priced by ``SORA_PROXY_PRICES``),
   taken in the store in one atomic step that also checks the caller's unfinished videos
   (``concurrent``) and every period's budget (``day``, ``month``);
3. once the upstream accepted, the hold is tied to the video; the tracker, which decides each
   video's end once, settles it with what the video really is (its final ``seconds``; for an
   extension, what it added to its source) or releases it (failed, cancelled, expired, timed
   out). An upstream refusal releases it at once; a failure after which the upstream may have
   started the job settles it at the estimate.

Refusals are 429s in the OpenAI envelope and nothing is sent upstream.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .caller_limits import PERIODS, CallerLimits, limits_of, parse_limits
from .errors import ConfigError, ServiceUnavailable, TooManyRequests
from .metrics import Metrics
from .prices import PriceTable, from_micros
from .rates import RateCounter
from .settings import PREFIX, Settings
from .store import OwnedResource, Store
from .store.durable import DurableWrites
from .store.ledger import Amount, BudgetHold
from .usage_report import describe, period_answer, period_keys, until_next
from .videos import UNFINISHED

log = logging.getLogger("sora_proxy.budgets")

#: A host app's lookup: the caller's limits (a :class:`CallerLimits` or a mapping shaped like
#: one ``SORA_PROXY_LIMITS`` entry), or ``None`` to use the settings'.
LimitsCallback = Callable[[str], "CallerLimits | Mapping[str, Any] | None"]
#: Seconds a caller at its ``concurrent`` cap is told to wait: about one poll of a video.
CONCURRENCY_RETRY_AFTER = 5


@dataclass(frozen=True)
class Charge:
    """What a paid video request asks for, to estimate and later settle its cost.

    :param operation: ``create``, ``remix``, ``edit`` or ``extend``.
    :param base_seconds: an extension's source length: its finished ``seconds`` is the
        stitched total, of which only the part past the source was made.
    """

    model: str
    size: str | None
    seconds: float
    operation: str
    base_seconds: float | None = None


class Budgets:
    """One app's limits, budgets and usage.

    :param ledger: the store keeping holds, or ``None`` when no tracker follows videos to
        their end (then only rates are enforced, and budgets must not be configured).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None,
        writes: DurableWrites | None,
        *,
        follows_videos: bool,
        callback: LimitsCallback | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._entries = settings.limits
        self._prices = settings.prices
        self._callback = callback
        self._metrics = metrics
        self._store = store if follows_videos else None
        self._writes = writes
        self._check_config(settings, follows_videos)
        self._rates = RateCounter(settings)

    def _check_config(self, settings: Settings, follows_videos: bool) -> None:
        configured = [limits_of(self._entries, name) for name in self._entries]
        if any(entry.needs_ledger for entry in configured) and not follows_videos:
            raise ConfigError(
                PREFIX + "LIMITS",
                "concurrent and budget limits need a store and SORA_PROXY_TRACKER on "
                "(each video is followed to its end to settle what it cost)",
            )
        if any(entry.needs_prices for entry in configured) and self._prices is None:
            raise ConfigError(PREFIX + "LIMITS", "a cost budget needs SORA_PROXY_PRICES")

    # -- before the request is sent ---------------------------------------------------------

    def limits_for(self, owner: str) -> CallerLimits:
        """``owner``'s limits: the host app's callback first, then the settings."""
        if self._callback is not None:
            found = self._callback(owner)
            if isinstance(found, CallerLimits):
                return found
            if found is not None:
                return limits_of({owner: parse_limits(found, "limits_for")}, owner)
        return limits_of(self._entries, owner)

    def admit(self, owner: str, charge: Charge | None) -> BudgetHold | None:
        """Count the request against ``owner``'s rate, then hold ``charge``'s estimate.

        :raises TooManyRequests: over the rate or the concurrency cap (``rate_limit_exceeded``,
            with ``Retry-After``), or over a budget (``insufficient_quota``).
        :raises ServiceUnavailable: the rate storage or the store is down (nothing is sent).
        """
        caller_limits = self.limits_for(owner)
        if caller_limits.per_minute is not None:
            self._count_rate(owner, caller_limits.per_minute)
        if self._store is None or charge is None:
            return None
        if caller_limits.needs_prices and self._price(charge) is None:
            raise TooManyRequests(
                f"Model '{charge.model}' has no price, and your budget is in money.",
                param="model",
                code="insufficient_quota",
                error_type="insufficient_quota",
                headers={"x-should-retry": "false"},
            )
        now = time.time()
        periods = period_keys(now)
        hold = BudgetHold(
            uuid.uuid4().hex,
            owner,
            charge.model,
            self._estimate(charge),
            tuple(periods.values()),
            now,
            {
                "seconds": charge.seconds,
                "operation": charge.operation,
                "base_seconds": charge.base_seconds,
                "per_second": self._price(charge) or 0,
            },
        )
        caps = {periods[name]: cap for name, cap in caller_limits.budgets.items()}
        refusal = self._store.take_hold(hold, concurrent=caller_limits.concurrent, caps=caps)
        if refusal is None:
            self._count("holds", owner, "taken")
            return hold
        self._count("refusals", owner, refusal.reason)
        if refusal.reason == "concurrency":
            raise TooManyRequests(
                f"Too many unfinished videos: at most {caller_limits.concurrent} at once. "
                "Try again when one has finished.",
                headers={"Retry-After": str(CONCURRENCY_RETRY_AFTER)},
            )
        name = (refusal.period or "").partition(":")[0]
        raise TooManyRequests(
            f"This request would exceed your {name} budget"
            f" ({describe(caller_limits.budgets.get(name), self._currency)}).",
            code="insufficient_quota",
            error_type="insufficient_quota",
            headers={"x-should-retry": "false", "Retry-After": str(until_next(name, now))},
        )

    def _count_rate(self, owner: str, per_minute: int) -> None:
        try:
            wait = self._rates.hit(owner, per_minute)
        except Exception as error:  # the storage's driver errors, whichever it is
            log.warning("rate-limit storage failed (%s)", type(error).__name__)
            raise ServiceUnavailable(
                "The rate-limit store is unavailable; nothing was sent. Please try again."
            ) from None
        if wait is None:
            return
        self._count("refusals", owner, "rate")
        raise TooManyRequests(
            f"Rate limit reached: at most {per_minute} video requests per minute. "
            f"Try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )

    # -- after the upstream answered --------------------------------------------------------

    def accepted(self, hold: BudgetHold | None, video: Mapping[str, Any], followed: bool) -> None:
        """The upstream accepted ``video``: wait for its end, or end the hold now when it is
        already over or nobody will follow it (then it costs the estimate). Never raises."""
        if hold is None or self._writes is None:
            return
        status = video.get("status")
        video_id = video.get("id")
        if status in UNFINISHED and followed and isinstance(video_id, str):
            self._writes.bind_hold(hold.hold_id, video_id)
        elif status in UNFINISHED or status == "completed":
            self._end(hold_id=hold.hold_id, actual=self.actual(hold, video))
        else:
            self._end(hold_id=hold.hold_id, actual=None)

    def refused(self, hold: BudgetHold | None) -> None:
        """Nothing was bought (the upstream refused, or nothing was sent): release."""
        if hold is not None:
            self._end(hold_id=hold.hold_id, actual=None)

    def uncertain(self, hold: BudgetHold | None) -> None:
        """The upstream may have started the job (a timeout, a broken answer): it is counted
        at the estimate, as the caller was told not to retry."""
        if hold is not None:
            self._end(hold_id=hold.hold_id, actual=hold.amount)

    def ended(self, record: OwnedResource) -> None:
        """``record``'s video reached its end (the tracker decided): settle what it cost when
        it completed, release it otherwise. Exactly once per video, whoever calls."""
        if self._store is None or self._writes is None:
            return
        video = record.last_object or {}
        if video.get("status") in UNFINISHED:
            return
        hold = self._store.open_hold(record.resource_id)
        if hold is None:
            return
        completed = video.get("status") == "completed"
        actual = self.actual(hold, video) if completed else None
        self._end(video_id=record.resource_id, actual=actual)

    def forgotten(self, record: OwnedResource) -> None:
        """``record`` was deleted before its end: the upstream may still make it, so it is
        counted at the estimate."""
        if self._store is None or (record.last_object or {}).get("status") not in UNFINISHED:
            return
        hold = self._store.open_hold(record.resource_id)
        if hold is not None:
            self._end(video_id=record.resource_id, actual=hold.amount)

    def actual(self, hold: BudgetHold, video: Mapping[str, Any]) -> Amount:
        """What ``video`` (finished) cost: its real seconds at the held price per second."""
        seconds = _seconds(video.get("seconds"))
        terms = hold.terms
        if seconds is None:
            return hold.amount
        base = terms.get("base_seconds")
        if terms.get("operation") == "extend" and isinstance(base, int | float):
            if seconds > base:
                seconds -= base
        return _amount(seconds, int(terms.get("per_second") or 0))

    def _end(
        self, *, hold_id: str | None = None, video_id: str | None = None, actual: Amount | None
    ) -> None:
        assert self._writes is not None
        ended = self._writes.end_hold(hold_id=hold_id, video_id=video_id, actual=actual)
        if ended is None:
            return
        self._count("holds", ended.owner, "released" if actual is None else "settled")
        if actual is not None and self._metrics is not None:
            self._metrics.spent_seconds.labels(ended.owner, ended.model).inc(actual.ms / 1000)
            self._metrics.spent_cost.labels(ended.owner, ended.model).inc(
                from_micros(actual.micros)
            )

    # -- estimates and usage ----------------------------------------------------------------

    def _price(self, charge: Charge) -> int | None:
        if self._prices is None:
            return None
        return self._prices.per_second(charge.model, charge.size)

    def _estimate(self, charge: Charge) -> Amount:
        return _amount(charge.seconds, self._price(charge) or 0)

    @property
    def _currency(self) -> str:
        return self._prices.currency if self._prices is not None else "usd"

    def usage(self, owner: str) -> dict[str, Any]:
        """``GET /v1/usage``: spent, held and remaining per period and model."""
        caller_limits = self.limits_for(owner)
        now = time.time()
        periods = period_keys(now)
        answer: dict[str, Any] = {
            "object": "usage",
            "caller": owner,
            "currency": self._currency,
            "limits": {
                "concurrent": caller_limits.concurrent,
                "per_minute": caller_limits.per_minute,
            },
        }
        if caller_limits.per_minute is not None:
            remaining = self._rates.remaining(owner, caller_limits.per_minute)
            answer["limits"]["per_minute_remaining"] = remaining
        if self._store is None:
            answer["periods"] = None
            return answer
        usage = self._store.usage(owner, tuple(periods.values()))
        answer["unfinished"] = usage.open_holds
        answer["periods"] = {
            name: period_answer(
                name,
                key,
                usage.periods.get(key, {}),
                caller_limits.budgets.get(name),
                now,
            )
            for name, key in periods.items()
        }
        return answer

    def _count(self, metric: str, owner: str, outcome: str) -> None:
        if self._metrics is None:
            return
        counter = self._metrics.budget_holds if metric == "holds" else self._metrics.refusals
        counter.labels(owner, outcome).inc()


def _amount(seconds: float, per_second_micros: int) -> Amount:
    exact = Decimal(str(seconds))
    return Amount(int(exact * 1000), int((exact * per_second_micros).to_integral_value()))


def _seconds(value: Any) -> float | None:
    """A video object's ``seconds`` (a string such as ``"8"``, or a number) as a number."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


__all__ = ["PERIODS", "Budgets", "Charge", "LimitsCallback", "PriceTable"]
