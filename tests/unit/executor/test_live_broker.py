"""The live broker's pure parts: ccxt trades -> fills, ccxt refusals -> rejections."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from services.executor.live_broker import Rejected, fills_of, is_duplicate, rejection_of
from shared.messages import OrderPlaced, client_order_id


def placed(side: str = "buy") -> OrderPlaced:
    return OrderPlaced(
        client_order_id=client_order_id("s"),
        signal_id="s",
        exchange="binance",
        symbol="ETH/BTC",
        side="buy" if side == "buy" else "sell",
        quantity=1.5,
        created_at_ms=100,
        candle_closed_at_ms=90,
    )


def trade(
    trade_id: str | None, price: float, amount: float, fee: dict[str, Any] | None
) -> dict[str, Any]:
    """A ccxt trade structure as parse_trade builds it (fee also listed in `fees`)."""
    return {
        "id": trade_id,
        "timestamp": 5_000,
        "price": price,
        "amount": amount,
        "fee": fee,
        "fees": [fee] if fee else [],
    }


def test_buy_fee_in_the_base_asset_comes_off_the_quantity_and_is_valued_in_quote() -> None:
    order = placed("buy")
    [fill] = fills_of(
        order,
        [trade("77", 0.1, 1.5, {"cost": 0.0015, "currency": "ETH"})],
        quote="BTC",
        fallback_ms=0,
    )
    assert fill.fill_id == f"{order.client_order_id}-77"
    assert (fill.price, fill.filled_at_ms, fill.side) == (0.1, 5_000, "buy")
    assert fill.quantity == pytest.approx(1.4985)
    assert fill.fee == pytest.approx(0.00015)


def test_sell_fee_in_the_quote_asset_leaves_the_quantity_alone() -> None:
    [fill] = fills_of(
        placed("sell"),
        [trade("8", 0.2, 1.0, {"cost": 0.0002, "currency": "BTC"})],
        quote="BTC",
        fallback_ms=0,
    )
    assert (fill.quantity, fill.fee) == (1.0, 0.0002)


def test_fee_in_a_third_asset_counts_as_zero() -> None:
    [fill] = fills_of(
        placed(),
        [trade("9", 0.1, 1.5, {"cost": 0.01, "currency": "BNB"})],
        quote="BTC",
        fallback_ms=0,
    )
    assert (fill.quantity, fill.fee) == (1.5, 0.0)


def test_trades_without_ids_are_numbered_and_take_the_fallback_time() -> None:
    order = placed()
    trades = [trade(None, 0.1, 1.0, None), trade(None, 0.1, 0.5, None)]
    trades[1]["timestamp"] = None
    fills = fills_of(order, trades, quote="BTC", fallback_ms=7_000)
    assert [f.fill_id for f in fills] == [f"{order.client_order_id}-{n}" for n in (1, 2)]
    assert [f.filled_at_ms for f in fills] == [5_000, 7_000]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ccxt.InsufficientFunds("binance Account has insufficient balance"), "insufficient_funds"),
        (
            ccxt.InvalidOrder('binance {"code":-1013,"msg":"Filter failure: LOT_SIZE"}'),
            "invalid_order",
        ),
        (ccxt.BadSymbol("binance does not have market symbol NOPE/BTC"), "bad_symbol"),
        (ccxt.PermissionDenied("binance This symbol is not permitted"), "permission_denied"),
    ],
)
def test_refusals_become_rejections_labelled_by_their_ccxt_class(
    error: ccxt.BaseError, reason: str
) -> None:
    assert rejection_of(error, "words") == Rejected(reason, "words")


def test_duplicate_client_id_is_recognised_by_class_or_binance_message() -> None:
    assert is_duplicate(ccxt.DuplicateOrderId("okx clOrdId already exists"))
    assert is_duplicate(ccxt.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}'))
    assert not is_duplicate(ccxt.InvalidOrder('binance {"code":-2010,"msg":"other"}'))
    assert not is_duplicate(ccxt.InsufficientFunds("Duplicate order sent."))
