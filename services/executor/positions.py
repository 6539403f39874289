"""Position arithmetic (pure): a position and a fill in -> the position after it out."""

from __future__ import annotations

from shared.messages import OrderFilled, PositionChanged

EPSILON = 1e-12


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
