"""Pure order decisions and position arithmetic: signal + position -> order, fill -> position."""

from __future__ import annotations

from dataclasses import dataclass

from shared.messages import OrderFilled, PositionChanged, SignalEmitted

EPSILON = 1e-12


@dataclass(frozen=True, slots=True)
class Skip:
    """A signal that leads to no order, and why."""

    reason: str


def order_quantity(
    signal: SignalEmitted, position: PositionChanged | None, *, quote_amount: float
) -> float | Skip:
    """Return the quantity of the one market order a long-only book places for `signal`."""
    held = position.quantity if position is not None else 0.0
    if signal.side == "buy":
        if held > EPSILON:
            return Skip("already_long")
        if not signal.price > 0:
            return Skip("no_price")
        return quote_amount / signal.price
    if held <= EPSILON:
        return Skip("no_position")
    return held


def apply_fill(position: PositionChanged | None, fill: OrderFilled) -> PositionChanged:
    """Return the position after `fill`: average entry on buys, net realized PnL on sells."""
    quantity = position.quantity if position is not None else 0.0
    avg_price = position.avg_price if position is not None else 0.0
    realized = position.realized_pnl if position is not None else 0.0
    if fill.side == "buy":
        new_quantity = quantity + fill.quantity
        avg_price = (avg_price * quantity + fill.price * fill.quantity) / new_quantity
        realized -= fill.fee
    else:
        sold = min(fill.quantity, quantity)
        new_quantity = quantity - sold
        realized += (fill.price - avg_price) * sold - fill.fee
        if new_quantity <= EPSILON:
            new_quantity, avg_price = 0.0, 0.0
    return PositionChanged(
        exchange=fill.exchange,
        symbol=fill.symbol,
        quantity=new_quantity,
        avg_price=avg_price,
        realized_pnl=realized,
        updated_at_ms=fill.filled_at_ms,
        cause_fill_id=fill.fill_id,
    )
