"""Position arithmetic of the long-only paper book, and client order ids."""

from __future__ import annotations

import pytest

from services.executor.broker import fee_of, slipped_price
from services.executor.positions import apply_fill
from shared.messages import OrderFilled, OrderPlaced, client_order_id


def order(side: str, quantity: float) -> OrderPlaced:
    return OrderPlaced(
        client_order_id=client_order_id(f"s:{side}"),
        signal_id=f"s:{side}",
        exchange="x",
        symbol="A/B",
        side=side,
        quantity=quantity,
        created_at_ms=0,
        candle_closed_at_ms=0,  # type: ignore[arg-type]
    )


def paper_fill(order: OrderPlaced, price: float) -> OrderFilled:
    """Fill at `price` with 10 bps of slippage and a 10 bps fee, as the Trader does."""
    filled = slipped_price(price, order.side, 10.0)
    return OrderFilled(
        fill_id=f"{order.client_order_id}-1", client_order_id=order.client_order_id,
        exchange=order.exchange, symbol=order.symbol, side=order.side, price=filled,
        quantity=order.quantity, fee=fee_of(filled, order.quantity, 10.0), filled_at_ms=0,
    )  # fmt: skip


def test_a_round_trip_realizes_the_price_move_net_of_fees_and_slippage() -> None:
    bought = paper_fill(order("buy", 2.0), 100.0)
    assert bought.price == pytest.approx(100.1) and bought.fee == pytest.approx(0.2002)
    long = apply_fill(None, bought)
    assert long.quantity == 2.0 and long.avg_price == pytest.approx(100.1)
    sold = paper_fill(order("sell", 2.0), 110.0)
    flat = apply_fill(long, sold)
    assert flat.quantity == 0.0 and flat.avg_price == 0.0
    assert flat.realized_pnl == pytest.approx((109.89 - 100.1) * 2 - 0.2002 - 109.89 * 2 * 0.001)


def test_client_order_ids_are_stable_and_fit_exchange_limits() -> None:
    assert client_order_id("a") == client_order_id("a") != client_order_id("b")
    assert len(client_order_id("x" * 500)) <= 36
