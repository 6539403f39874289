"""Pure position sizing: (sizing rule, entry price, equity, stop) -> quantity to buy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

SizingMode: TypeAlias = Literal["fixed_quote", "equity_pct", "risk"]
MODES: tuple[SizingMode, ...] = ("fixed_quote", "equity_pct", "risk")


@dataclass(frozen=True, slots=True)
class Sizing:
    """How much an entry buys.

    fixed_quote: `quote_amount` of quote currency. equity_pct: `equity_pct` percent of equity.
    risk: the quantity that loses `risk_pct` percent of equity if the stop is hit.
    """

    mode: SizingMode = "fixed_quote"
    quote_amount: float = 100.0
    equity_pct: float = 10.0
    risk_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sizing mode must be one of {MODES}, got {self.mode!r}")
        if not (math.isfinite(self.quote_amount) and self.quote_amount > 0):
            raise ValueError(f"quote_amount must be finite and > 0, got {self.quote_amount!r}")
        for name in ("equity_pct", "risk_pct"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 100):
                raise ValueError(f"{name} must be in (0, 100], got {value!r}")


def quantity(sizing: Sizing, *, price: float, equity: float, stop_price: float | None) -> float:
    """Return the quantity to buy at `price`: never more than `equity / price`, never below 0.

    Risk mode needs `stop_price` below `price` (the loss per unit if the stop is hit).
    """
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"price must be finite and > 0, got {price!r}")
    if not math.isfinite(equity):
        raise ValueError(f"equity must be finite, got {equity!r}")
    if sizing.mode == "fixed_quote":
        size = sizing.quote_amount / price
    elif sizing.mode == "equity_pct":
        size = equity * sizing.equity_pct / 100.0 / price
    else:
        if stop_price is None or not stop_price < price:
            raise ValueError(
                f"risk sizing needs a stop below the entry price, got stop {stop_price!r} "
                f"for price {price!r}: set a stop-loss in the exit rules"
            )
        size = equity * sizing.risk_pct / 100.0 / (price - stop_price)
    return max(0.0, min(size, equity / price))
