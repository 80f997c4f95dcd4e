"""The store's budget ledger: holds taken before a paid create, settled or released once.

Amounts are whole numbers, so sums are exact across workers and hosts: milliseconds of video
and millionths of the price table's currency. A hold is taken (with every limit it must fit
checked in the same atomic step), bound to the video it paid for once the upstream accepted,
and ended exactly once: settled with what the video really cost, or released. Usage is kept
per caller, period (``day:2026-12-03``, ``month:2026-12``) and model.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Holds never bound to a video (the worker died before the upstream answered) are released
#: after this long: the request could not still be running.
UNBOUND_HOLD_TTL = 3600.0
#: How long a period's usage is kept after the hold that last changed it.
USAGE_KEEP = 400 * 86400.0


@dataclass(frozen=True)
class Amount:
    """Seconds of video (in milliseconds) and money (in millionths)."""

    ms: int = 0
    micros: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.ms + other.ms, self.micros + other.micros)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.ms - other.ms, self.micros - other.micros)


@dataclass(frozen=True)
class Cap:
    """A budget for one period: at most ``ms`` and at most ``micros`` (``None``: no cap)."""

    ms: int | None = None
    micros: int | None = None

    def fits(self, used: Amount) -> bool:
        """True when ``used`` is within both caps."""
        return (self.ms is None or used.ms <= self.ms) and (
            self.micros is None or used.micros <= self.micros
        )


@dataclass(frozen=True)
class BudgetHold:
    """A paid request's estimated cost, held before it is sent.

    :param hold_id: a fresh random id.
    :param owner: the caller's name.
    :param model: the model asked for (usage is kept per model).
    :param amount: the estimate held.
    :param periods: the period keys it counts in (``day:…``, ``month:…``), fixed at creation:
        what it finally costs lands in these, whenever it ends.
    :param created_at: seconds since the epoch.
    :param terms: what the settlement needs (seconds asked, the source's seconds for an
        extension, the price per second in millionths); never a secret.
    """

    hold_id: str
    owner: str
    model: str
    amount: Amount
    periods: tuple[str, ...]
    created_at: float
    terms: dict[str, Any] = field(default_factory=dict)

    #: The stored columns, in the order :meth:`from_stored` takes them.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "hold_id",
        "owner",
        "model",
        "periods",
        "est_ms",
        "est_micros",
        "terms",
        "created_at",
    )

    @classmethod
    def from_stored(cls, values: Sequence[Any]) -> BudgetHold:
        """A hold from its stored :data:`COLUMNS` (periods and terms as JSON text)."""
        hold_id, owner, model, periods, est_ms, est_micros, terms, created_at = values
        return cls(
            str(hold_id),
            str(owner),
            str(model),
            Amount(int(est_ms), int(est_micros)),
            tuple(json.loads(periods)),
            float(created_at),
            json.loads(terms),
        )


@dataclass(frozen=True)
class Refusal:
    """Why :meth:`Ledger.take_hold` refused: ``concurrency`` or ``budget`` (with the period)."""

    reason: str
    period: str | None = None


@dataclass
class UsageRow:
    """One caller's usage of one model in one period."""

    spent: Amount = Amount()
    held: Amount = Amount()
    settled: int = 0
    released: int = 0
    holding: int = 0


@dataclass(frozen=True)
class Usage:
    """A caller's usage: per period key, per model; and holds open now (unfinished videos)."""

    periods: Mapping[str, Mapping[str, UsageRow]]
    open_holds: int


class Ledger(ABC):
    """The ledger half of :class:`~sora_proxy.store.base.Store`."""

    @abstractmethod
    def take_hold(
        self, hold: BudgetHold, *, concurrent: int | None, caps: Mapping[str, Cap]
    ) -> Refusal | None:
        """Atomically (across workers and hosts): release ``hold.owner``'s unbound holds older
        than :data:`UNBOUND_HOLD_TTL`, then add ``hold`` unless the owner already has
        ``concurrent`` open holds, or a period of ``caps`` would go over its cap (spent + held +
        this). ``None`` when it was added, else why not (nothing changed)."""

    @abstractmethod
    def bind_hold(self, hold_id: str, video_id: str) -> None:
        """The upstream accepted: ``hold_id`` now waits for ``video_id``'s end (no expiry)."""

    @abstractmethod
    def end_hold(
        self, *, hold_id: str | None = None, video_id: str | None = None, actual: Amount | None
    ) -> BudgetHold | None:
        """End an open hold (by id, or by the video bound to it) exactly once: settled with
        ``actual`` spent, or released when ``actual`` is ``None``. Returns the hold when this
        call ended it, ``None`` when it was already ended or is unknown."""

    @abstractmethod
    def open_hold(self, video_id: str) -> BudgetHold | None:
        """The open hold bound to ``video_id``, if any."""

    @abstractmethod
    def usage(self, owner: str, periods: tuple[str, ...]) -> Usage:
        """``owner``'s usage in ``periods`` (unbound holds past their time count as ended)."""
