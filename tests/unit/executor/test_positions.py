"""Order decisions and position arithmetic of the long-only paper book."""

from __future__ import annotations

import pytest

from services.executor.broker import PaperBroker
from services.executor.positions import Skip, apply_fill, order_quantity
from shared.messages import OrderPlaced, SignalEmitted, client_order_id


def signal(side: str, price: float = 2.0) -> SignalEmitted:
    return SignalEmitted(
        signal_id=f"s:{side}",
        strategy="s",
        exchange="x",
        symbol="A/B",
        timeframe="1m",
        open_time_ms=0,
        side=side,
        price=price,
        reason="",
        candle_closed_at_ms=0,  # type: ignore[arg-type]
    )


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


def test_a_buy_when_flat_spends_the_quote_amount() -> None:
    assert order_quantity(signal("buy", 2.0), None, quote_amount=1.0) == 0.5


def test_a_buy_when_long_and_a_sell_when_flat_place_nothing() -> None:
    broker = PaperBroker(slippage_bps=0, fee_bps=0)
    long = apply_fill(None, broker.fill(order("buy", 1.0), price=2.0, now_ms=1))
    assert order_quantity(signal("buy"), long, quote_amount=1.0) == Skip("already_long")
    assert order_quantity(signal("sell"), None, quote_amount=1.0) == Skip("no_position")
    assert order_quantity(signal("sell"), long, quote_amount=1.0) == 1.0


def test_a_round_trip_realizes_the_price_move_net_of_fees_and_slippage() -> None:
    broker = PaperBroker(slippage_bps=10, fee_bps=10)
    bought = broker.fill(order("buy", 2.0), price=100.0, now_ms=1)
    assert bought.price == pytest.approx(100.1) and bought.fee == pytest.approx(0.2002)
    long = apply_fill(None, bought)
    assert long.quantity == 2.0 and long.avg_price == pytest.approx(100.1)
    sold = broker.fill(order("sell", 2.0), price=110.0, now_ms=2)
    flat = apply_fill(long, sold)
    assert flat.quantity == 0.0 and flat.avg_price == 0.0
    assert flat.realized_pnl == pytest.approx((109.89 - 100.1) * 2 - 0.2002 - 109.89 * 2 * 0.001)


def test_client_order_ids_are_stable_and_fit_exchange_limits() -> None:
    assert client_order_id("a") == client_order_id("a") != client_order_id("b")
    assert len(client_order_id("x" * 500)) <= 36
