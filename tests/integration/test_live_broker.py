"""The live broker driving the real ccxt binance client against the stand-in's order endpoints.

Every test counts the orders in the stand-in's own book by client order id: one signal, one
order, whatever the exchange answered. No Redis or Postgres; skipped without the real candles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.executor.live_broker import (
    BrokerUnavailable,
    LiveBroker,
    Rejected,
    connect_live_broker,
)
from services.executor.reconciliation import ExchangeOrder
from shared.messages import OrderFilled, OrderPlaced, PositionChanged, client_order_id, signal_id
from shared.pacing import Backoff
from tests.conftest import ohlcv_path
from tests.standin.faults import (
    OrderRejected,
    OrderServerError,
    OrderTimeout,
    ResponseFault,
    ServerError,
)
from tests.standin.orders import Order
from tests.standin.request_log import NO_ANSWER, RequestRecord
from tests.standin.server import StandIn, build_market, serve_standin

ORDER_PATH = "/api/v3/order"
API_KEY = "test-api-key-7d41"
SECRET = "test-secret-93ce"
SUBMISSIONS = 3
FUNDS_BTC = 1.0
COMMISSION = 0.001  # the stand-in's default 10 bps, taken from the asset received


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """The team's real candle folder (the test skips without it)."""
    return ohlcv_path("ETH_BTC-1m.json").parent


@pytest.fixture(params=[False, True], ids=["ids-unique", "done-ids-reusable"])
def standin(data_dir: Path, request: pytest.FixtureRequest) -> Iterator[StandIn]:
    """A stand-in whose account holds 1 BTC, its clock at the end of the common timeline.

    Once as the stand-in refuses any client id seen before, once as Binance documents it: an
    id is refused only while its order is open, so a blind resubmit of a filled market order
    would place a second one.
    """
    market = build_market(data_dir)
    market.account.fund(BTC=FUNDS_BTC)
    market.account.reuse_done_ids = request.param
    with serve_standin(market) as running:
        yield running


@pytest.fixture
async def broker(standin: StandIn) -> AsyncIterator[LiveBroker]:
    """The live broker over the real ccxt binance client, pointed at the stand-in."""
    live = await connect_live_broker(
        "binance",
        api_key=API_KEY,
        secret=SECRET,
        api_url=standin.base_url,
        timeout_ms=10_000,  # loading the markets on a busy machine may take a while
        backoff=Backoff(0.01, 0.05),
        submissions=SUBMISSIONS,
    )
    live.exchange.timeout = 2_000  # the orders' requests: a hang fault gives up soon
    standin.market.log.clear()
    yield live
    await live.close()


def an_order(
    minute: int = 0, *, symbol: str = "ETH/BTC", side: str = "buy", quantity: float = 1.5
) -> OrderPlaced:
    """An order as the executor builds it for one signal."""
    signal = signal_id("stochrsi_bands", "binance", symbol, "1m", 1_700_000_000_000 + minute)
    return OrderPlaced(
        client_order_id=client_order_id(signal),
        signal_id=signal,
        exchange="binance",
        symbol=symbol,
        side="buy" if side == "buy" else "sell",
        quantity=quantity,
        created_at_ms=1_700_000_060_000,
        candle_closed_at_ms=1_700_000_060_000,
    )


def orders_on_exchange(standin: StandIn, order: OrderPlaced) -> list[Order]:
    """The stand-in's orders with this order's client id."""
    return standin.market.account.orders(client_order_id=order.client_order_id)


def submissions_of(standin: StandIn, order: OrderPlaced) -> list[RequestRecord]:
    """The POST /api/v3/order requests the stand-in saw for this client id."""
    return [
        r
        for r in standin.market.log.records(path=ORDER_PATH)
        if r.method == "POST" and r.client_order_id == order.client_order_id
    ]


def last_price(standin: StandIn, symbol: str = "ETH/BTC") -> float:
    """The price a market order trades at now."""
    listing = standin.market.catalog.listing(symbol)
    assert listing is not None
    return standin.market.last_price(listing)


def assert_one_filled_buy(standin: StandIn, order: OrderPlaced, fills: object) -> None:
    """One FILLED order for the client id, and `fills` are exactly its trades, net of fees."""
    [placed] = orders_on_exchange(standin, order)
    assert placed.status == "FILLED"
    assert isinstance(fills, list)
    assert [f.fill_id for f in fills] == [
        f"{order.client_order_id}-{trade.trade_id}" for trade in placed.fills
    ]
    for fill, trade in zip(fills, placed.fills, strict=True):
        assert isinstance(fill, OrderFilled)
        assert (fill.price, fill.side, fill.symbol) == (trade.price, "buy", "ETH/BTC")
        assert fill.quantity == pytest.approx(trade.qty - trade.commission)
        assert fill.fee == pytest.approx(trade.commission * trade.price)


async def test_accepted_order_is_filled_once_at_the_last_close_and_moves_balances(
    standin: StandIn, broker: LiveBroker
) -> None:
    order = an_order()
    price = last_price(standin)
    fills = await broker.place_market(order)
    assert_one_filled_buy(standin, order, fills)
    assert isinstance(fills, list) and fills[0].price == price
    assert sum(f.quantity for f in fills) == pytest.approx(1.5 * (1 - COMMISSION))
    free_btc, _ = standin.market.account.balance("BTC")
    assert free_btc == pytest.approx(FUNDS_BTC - 1.5 * price)
    assert standin.market.account.balance("ETH") == pytest.approx((1.5 * (1 - COMMISSION), 0.0))
    assert len(submissions_of(standin, order)) == 1


async def test_an_order_filled_in_pieces_gives_one_fill_per_trade(
    standin: StandIn, broker: LiveBroker
) -> None:
    standin.market.account.max_fill_qty = 0.4
    order = an_order()
    fills = await broker.place_market(order)
    assert_one_filled_buy(standin, order, fills)
    assert isinstance(fills, list)
    assert [round(f.quantity / (1 - COMMISSION), 6) for f in fills] == [0.4, 0.4, 0.4, 0.3]


@pytest.mark.parametrize(
    ("fault", "quantity", "reason"),
    [
        (OrderRejected(), 1.5, "insufficient_funds"),
        (None, 500.0, "insufficient_funds"),  # the account really is short
        (OrderRejected(code=-1013, msg="Filter failure: LOT_SIZE"), 1.5, "invalid_order"),
    ],
    ids=["rejected-fault", "short-of-funds", "lot-size"],
)
async def test_rejected_order_is_reported_and_never_retried(
    standin: StandIn,
    broker: LiveBroker,
    fault: ResponseFault | None,
    quantity: float,
    reason: str,
) -> None:
    if fault is not None:
        standin.market.faults.add(fault)
    order = an_order(quantity=quantity)
    outcome = await broker.place_market(order)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == reason
    assert orders_on_exchange(standin, order) == []
    assert [r.status for r in submissions_of(standin, order)] == [400]
    assert standin.market.account.balance("BTC") == (FUNDS_BTC, 0.0)


@pytest.mark.parametrize(
    "fault",
    [OrderServerError(), OrderServerError(status=503, binance_body=True)],
    ids=["500-page", "503-binance-json"],
)
async def test_server_error_after_accepting_gives_one_order_and_its_fills(
    standin: StandIn, broker: LiveBroker, fault: OrderServerError
) -> None:
    standin.market.faults.add(fault)
    order = an_order()
    fills = await broker.place_market(order)
    assert_one_filled_buy(standin, order, fills)
    assert [r.status for r in submissions_of(standin, order)] == [fault.status]


async def test_timeout_after_accepting_gives_one_order_and_its_fills(
    standin: StandIn, broker: LiveBroker
) -> None:
    standin.market.faults.add(OrderTimeout())
    order = an_order()
    fills = await broker.place_market(order)
    assert_one_filled_buy(standin, order, fills)
    for _ in range(100):  # the stand-in logs a hang once it notices the client left
        if submissions_of(standin, order):
            break
        await asyncio.sleep(0.02)
    assert [r.status for r in submissions_of(standin, order)] == [NO_ANSWER]


@pytest.mark.parametrize("standin", [False], ids=["ids-unique"], indirect=True)
async def test_duplicate_client_id_returns_the_existing_order(
    standin: StandIn, broker: LiveBroker
) -> None:
    order = an_order()
    # An earlier submission got through, but the first lookup races it and misses it.
    await broker.exchange.create_order(
        "ETH/BTC", "market", "buy", 1.5, None, {"clientOrderId": order.client_order_id}
    )
    standin.market.faults.add(
        OrderRejected(endpoint="queryOrder", code=-2013, msg="Order does not exist.")
    )
    fills = await broker.place_market(order)
    assert_one_filled_buy(standin, order, fills)
    assert [r.status for r in submissions_of(standin, order)] == [200, 400]


async def test_redelivered_order_is_looked_up_and_not_placed_again(
    standin: StandIn, broker: LiveBroker
) -> None:
    order = an_order()
    first = await broker.place_market(order)
    again = await broker.place_market(order)
    assert again == first
    assert_one_filled_buy(standin, order, again)
    assert len(submissions_of(standin, order)) == 1


async def test_order_refused_before_it_was_placed_is_submitted_again(
    standin: StandIn, broker: LiveBroker
) -> None:
    standin.market.faults.add(ServerError(endpoint="newOrder"))  # 500 before processing
    order = an_order()
    fills = await broker.place_market(order)
    assert_one_filled_buy(standin, order, fills)
    assert [r.status for r in submissions_of(standin, order)] == [500, 200]


async def test_submissions_are_bounded_when_the_exchange_keeps_failing(
    standin: StandIn, broker: LiveBroker
) -> None:
    standin.market.faults.add(ServerError(endpoint="newOrder", count=10))
    order = an_order()
    with pytest.raises(BrokerUnavailable):
        await broker.place_market(order)
    assert orders_on_exchange(standin, order) == []
    assert [r.status for r in submissions_of(standin, order)] == [500] * SUBMISSIONS


async def test_no_log_line_shows_credentials_or_signatures(
    standin: StandIn, broker: LiveBroker, caplog: pytest.LogCaptureFixture
) -> None:
    standin.market.faults.add(ServerError(endpoint="queryOrder"))
    standin.market.faults.add(OrderServerError())
    standin.market.faults.add(OrderRejected())
    caplog.set_level(logging.DEBUG)
    assert isinstance(await broker.place_market(an_order(1)), list)
    assert isinstance(await broker.place_market(an_order(2)), Rejected)
    text = caplog.text
    assert "rejected" in text and "outcome unknown" in text
    assert (
        API_KEY not in text
        and SECRET not in text
        and "signature=" not in text.replace("signature=***", "")
    )


async def test_reconcile_reports_settled_unknown_and_mismatched_state(
    standin: StandIn, broker: LiveBroker
) -> None:
    filled = an_order(1)
    assert isinstance(await broker.place_market(filled), list)
    never_sent = an_order(2)
    stray = client_order_id("a signal whose order the store never recorded")
    for client_id in (stray, "manual-order-1"):  # resting limit orders, far below the price
        await broker.exchange.create_order(
            "ETH/BTC", "limit", "buy", 1, 0.001, {"clientOrderId": client_id}
        )
    positions = [
        PositionChanged(  # the gross quantity, as if the fee had not been taken in ETH
            exchange="binance",
            symbol="ETH/BTC",
            quantity=1.5,
            avg_price=0.1,
            realized_pnl=0.0,
            updated_at_ms=1,
            cause_fill_id="x",
        ),
        PositionChanged(
            exchange="binance",
            symbol="LTC/BTC",
            quantity=0.0,
            avg_price=0.0,
            realized_pnl=0.0,
            updated_at_ms=1,
            cause_fill_id="y",
        ),
    ]
    result = await broker.reconcile([filled, never_sent], positions)
    assert result.settled == (
        ExchangeOrder(filled.client_order_id, "ETH/BTC", "buy", "closed", 1.5, 1.5),
        ExchangeOrder(never_sent.client_order_id, "ETH/BTC", "buy", "missing", 0.0, 0.0),
    )
    assert result.unknown_open == (ExchangeOrder(stray, "ETH/BTC", "buy", "open", 1.0, 0.0),)
    [mismatch] = result.balance_mismatches  # LTC: flat in the store and on the exchange
    assert (mismatch.asset, mismatch.store_quantity) == ("ETH", 1.5)
    assert mismatch.exchange_quantity == pytest.approx(1.5 * (1 - COMMISSION))
    assert not result.in_sync
