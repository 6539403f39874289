"""Start-up reconciliation: the store's open orders and positions against the exchange's."""

from __future__ import annotations

from services.executor.reconciliation import (
    BalanceMismatch,
    ExchangeOrder,
    Reconciliation,
    base_asset,
    compare_with_exchange,
)
from shared.messages import OrderPlaced, PositionChanged, client_order_id


def placed(signal: str, symbol: str = "ETH/BTC") -> OrderPlaced:
    return OrderPlaced(
        client_order_id=client_order_id(signal),
        signal_id=signal,
        exchange="binance",
        symbol=symbol,
        side="buy",
        quantity=1.0,
        created_at_ms=0,
        candle_closed_at_ms=0,
    )


def on_exchange(client_id: str, status: str = "open", filled: float = 0.0) -> ExchangeOrder:
    return ExchangeOrder(client_id, "ETH/BTC", "buy", status, 1.0, filled)


def position(symbol: str, quantity: float) -> PositionChanged:
    return PositionChanged(
        exchange="binance",
        symbol=symbol,
        quantity=quantity,
        avg_price=1.0,
        realized_pnl=0.0,
        updated_at_ms=0,
        cause_fill_id="f",
    )


def compare(
    known_open: list[OrderPlaced] | None = None,
    open_orders: list[ExchangeOrder] | None = None,
    looked_up: dict[str, ExchangeOrder | None] | None = None,
    balances: dict[str, float] | None = None,
    positions: list[PositionChanged] | None = None,
) -> Reconciliation:
    return compare_with_exchange(
        known_open=known_open or [],
        open_on_exchange=open_orders or [],
        looked_up=looked_up or {},
        balances=balances or {},
        positions=positions or [],
    )


def test_nothing_anywhere_is_in_sync() -> None:
    result = compare()
    assert result == Reconciliation((), (), ())
    assert result.in_sync


def test_order_open_on_both_sides_is_not_reported() -> None:
    order = placed("a")
    assert compare([order], [on_exchange(order.client_order_id)]).in_sync


def test_order_the_store_thinks_open_but_the_exchange_filled_is_settled() -> None:
    order = placed("a")
    filled = on_exchange(order.client_order_id, "closed", 1.0)
    result = compare([order], looked_up={order.client_order_id: filled})
    assert result.settled == (filled,)
    assert not result.in_sync


def test_order_the_exchange_does_not_know_is_settled_as_missing() -> None:
    order = placed("a")
    result = compare([order], looked_up={order.client_order_id: None})
    assert result.settled == (
        ExchangeOrder(order.client_order_id, "ETH/BTC", "buy", "missing", 0.0, 0.0),
    )


def test_only_open_orders_with_our_prefix_and_unknown_to_the_store_are_reported() -> None:
    known = placed("known")
    ours = on_exchange(client_order_id("unknown"))
    result = compare(
        [known],
        [on_exchange(known.client_order_id), ours, on_exchange("web_manual_order")],
    )
    assert result.unknown_open == (ours,)
    assert result.settled == ()


def test_balances_are_compared_per_base_asset_summed_over_markets() -> None:
    result = compare(
        balances={"ETH": 3.0, "BTC": 0.5, "LTC": 0.0},
        positions=[position("ETH/BTC", 1.0), position("ETH/USDT", 2.0), position("LTC/BTC", 0.0)],
    )
    assert result.in_sync  # BTC is nobody's base: the quote balance is not compared


def test_balance_short_of_the_position_is_a_mismatch() -> None:
    result = compare(balances={"ETH": 1.4985}, positions=[position("ETH/BTC", 1.5)])
    assert result.balance_mismatches == (BalanceMismatch("ETH", 1.4985, 1.5),)


def test_asset_missing_from_the_exchange_counts_as_zero() -> None:
    result = compare(positions=[position("XMR/BTC", 2.0)])
    assert result.balance_mismatches == (BalanceMismatch("XMR", 0.0, 2.0),)


def test_rounding_noise_is_not_a_mismatch() -> None:
    result = compare(
        balances={"ETH": 1.000_000_000_1, "XRP": 1_000_000.0},
        positions=[position("ETH/BTC", 1.0), position("XRP/ETH", 1_000_000.4)],
    )
    assert result.in_sync


def test_base_asset_of_a_unified_symbol() -> None:
    assert base_asset("ETH/BTC") == "ETH"
    assert base_asset("XRPA/ETH") == "XRPA"
