"""PnL arithmetic: open positions marked at the newest close; the equity curve from fills."""

from __future__ import annotations

import pytest

from services.gateway.pnl import equity_curve, market_pnl
from shared.store import FillRow, PositionRow


def fill_row(fill_id: str, side: str, price: float, quantity: float, at_ms: int) -> FillRow:
    return FillRow(fill_id, f"order-{fill_id}", "binance", "ETH/BTC", side, price, quantity,
                   0.001, at_ms)  # fmt: skip


def test_open_quantity_is_marked_at_the_newest_close_and_flat_markets_are_not() -> None:
    held = PositionRow("binance", "ETH/BTC", 2.0, 0.05, 0.3, 1, "f1")
    flat = PositionRow("binance", "LTC/BTC", 0.0, 0.0, -0.1, 1, "f2")
    unpriced = PositionRow("binance", "XMR/BTC", 1.0, 0.02, 0.0, 1, "f3")

    eth, ltc, xmr = market_pnl(
        [held, flat, unpriced], {("binance", "ETH/BTC"): 0.06, ("binance", "LTC/BTC"): 0.01}
    )

    assert eth.unrealized_pnl == pytest.approx(2.0 * (0.06 - 0.05)) and eth.last_price == 0.06
    assert ltc.unrealized_pnl == 0.0 and ltc.realized_pnl == -0.1
    assert xmr.unrealized_pnl == 0.0 and xmr.last_price is None


def test_the_equity_curve_replays_fills_with_the_executor_arithmetic() -> None:
    fills = [
        fill_row("1", "buy", 100.0, 2.0, 1_000),
        fill_row("2", "buy", 110.0, 2.0, 2_000),  # average entry 105
        fill_row("3", "sell", 120.0, 3.0, 3_000),  # realizes (120 - 105) * 3
    ]

    first, second, third = equity_curve(fills, initial_equity=10_000.0)

    assert (first.time_ms, first.realized_pnl, first.unrealized_pnl) == (1_000, -0.001, 0.0)
    assert second.unrealized_pnl == pytest.approx(4.0 * (110.0 - 105.0))  # marked at 110
    assert third.realized_pnl == pytest.approx(45.0 - 0.003)
    assert third.unrealized_pnl == pytest.approx(1.0 * (120.0 - 105.0))
    assert third.equity == pytest.approx(10_000.0 + 45.0 - 0.003 + 15.0)
    assert equity_curve(fills, initial_equity=None)[-1].equity is None
