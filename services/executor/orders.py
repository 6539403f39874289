"""What a trader decides and executes: pending market orders, decisions on signals, fills."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from services.executor.exits import ExitKind, Holding
from shared.messages import Side

FillKind: TypeAlias = Literal["entry"] | ExitKind


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: an entry, or an exit of (part of) a holding; `price` includes slippage."""

    symbol: str
    side: Side
    kind: FillKind
    price: float
    quantity: float
    fee: float
    time_ms: int
    client_order_id: str
    signal_id: str | None  # None for exits no signal asked for (stops, targets, time stop)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a signal led to: a pending market order, or nothing and why."""

    signal_id: str
    symbol: str
    side: Side
    outcome: Literal["pending", "skipped"]
    reason: str | None = None  # low-cardinality, for "skipped"
    client_order_id: str | None = None
    quantity: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """A market order waiting for the open of its symbol's next candle (paper), or for the
    exchange's answer (live)."""

    symbol: str
    side: Side
    quantity: float  # an exit sells the whole remainder at fill time
    client_order_id: str
    signal_id: str
    not_before_ms: int  # the signal candle's close: fills on a candle opening at or after it
    price_estimate: float
    atr: float  # the entry ATR (the signal candle's); 0.0 when unknown
    # Live exits only: what the sell is for (None: "signal"), and the holding as it stands
    # once the sell has filled (None: closed).
    kind: FillKind | None = None
    after: Holding | None = None

    @property
    def fill_kind(self) -> FillKind:
        """What a fill of this order is: an entry, a signal's exit, or the exit rule's kind."""
        return self.kind or ("entry" if self.side == "buy" else "signal")
