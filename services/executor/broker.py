"""Brokers turn an order into fills. PaperBroker fills at once, at the signal's price plus costs."""

from __future__ import annotations

from dataclasses import dataclass

from shared.messages import OrderFilled, OrderPlaced


@dataclass(frozen=True, slots=True)
class PaperBroker:
    """Fill market orders at `price` moved against the trader by slippage, charging a fee."""

    slippage_bps: float
    fee_bps: float

    def fill(self, order: OrderPlaced, *, price: float, now_ms: int) -> OrderFilled:
        """Return the single fill of `order` at the reference `price`."""
        direction = 1.0 if order.side == "buy" else -1.0
        fill_price = price * (1.0 + direction * self.slippage_bps / 10_000)
        return OrderFilled(
            fill_id=f"{order.client_order_id}-1",
            client_order_id=order.client_order_id,
            exchange=order.exchange,
            symbol=order.symbol,
            side=order.side,
            price=fill_price,
            quantity=order.quantity,
            fee=fill_price * order.quantity * self.fee_bps / 10_000,
            filled_at_ms=now_ms,
        )
