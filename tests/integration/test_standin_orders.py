"""The stand-in's signed order endpoints, driven by the real ccxt binance client (and raw HTTP).

No Redis or Postgres; skipped without the team's real candles.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import ccxt
import ccxt.async_support as ccxt_async
import httpx
import pytest

from shared.ccxt_client import build_exchange, classify
from tests.conftest import ohlcv_path
from tests.standin.faults import (
    FAULT_ADAPTER,
    OrderRejected,
    OrderServerError,
    OrderTimeout,
    ResponseFault,
)
from tests.standin.request_log import NO_ANSWER, RequestRecord
from tests.standin.server import StandIn, build_market, serve_standin

MINUTE_MS = 60_000
ORDER_PATH = "/api/v3/order"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """The team's real candle folder (the test skips without it)."""
    return ohlcv_path("ETH_BTC-1m.json").parent


@pytest.fixture
def standin(data_dir: Path) -> Iterator[StandIn]:
    """A stand-in holding 1 BTC, its clock stopped at the end of the common timeline."""
    market = build_market(data_dir)
    market.account.fund(BTC=1.0)
    with serve_standin(market) as running:
        yield running


@pytest.fixture
async def exchange(standin: StandIn) -> AsyncIterator[ccxt_async.Exchange]:
    """The real, authenticated ccxt async binance client, pointed at the stand-in."""
    client = build_exchange(
        "binance",
        api_url=standin.base_url,
        api_key="key",
        secret="secret",
        timeout_ms=5_000,  # generous: a busy machine's slow answer is not a timeout
        options={"fetchMargins": False, "warnOnFetchOpenOrdersWithoutSymbol": False},
    )
    await client.load_markets()
    standin.market.log.clear()
    yield client
    await client.close()


def price_now(standin: StandIn, symbol: str = "ETH/BTC") -> float:
    """The price a market order trades at now."""
    listing = standin.market.catalog.listing(symbol)
    assert listing is not None
    return standin.market.last_price(listing)


async def settled_records(standin: StandIn, count: int) -> list[RequestRecord]:
    """The request log once it holds `count` records (a hang is logged when it ends)."""
    for _ in range(200):
        if len(records := standin.market.log.records()) >= count:
            return records
        await asyncio.sleep(0.01)
    return standin.market.log.records()


async def test_market_buy_fills_at_the_last_close_with_a_fill_list_and_moves_balances(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    price = price_now(standin)
    end = standin.market.catalog.end_ms
    [last] = await exchange.fetch_ohlcv("ETH/BTC", "1m", since=end - MINUTE_MS, limit=1)
    assert price == last[4]
    order = await exchange.create_order(
        "ETH/BTC", "market", "buy", 2, None, {"clientOrderId": "cb-one"}
    )
    assert (order["status"], order["clientOrderId"], order["filled"]) == ("closed", "cb-one", 2)
    [trade] = order["trades"]
    assert trade["price"] == price
    assert trade["fee"] == {"cost": pytest.approx(0.002), "currency": "ETH"}
    balance = await exchange.fetch_balance()
    assert balance["ETH"]["total"] == pytest.approx(1.998)
    assert balance["BTC"]["free"] == pytest.approx(1.0 - 2 * price)
    fetched = await exchange.fetch_order(None, "ETH/BTC", {"clientOrderId": "cb-one"})
    assert (fetched["id"], fetched["status"], fetched["average"]) == (
        order["id"],
        "closed",
        pytest.approx(price),
    )
    trades = await exchange.fetch_order_trades(order["id"], "ETH/BTC")
    assert [t["id"] for t in trades] == [trade["id"]]


async def test_market_sell_pays_its_fee_in_the_quote_asset(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    standin.market.account.fund(BTC=0.0, ETH=3.0)
    price = price_now(standin)
    order = await exchange.create_order("ETH/BTC", "market", "sell", 3)
    assert order["trades"][0]["fee"] == {
        "cost": pytest.approx(3 * price * 0.001, abs=1e-8),
        "currency": "BTC",
    }
    assert standin.market.account.balance("ETH") == (0.0, 0.0)
    assert standin.market.account.balance("BTC")[0] == pytest.approx(3 * price * 0.999)


async def test_price_follows_the_clock_into_the_open_candle(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    market = standin.market
    minute = market.catalog.end_ms - 10 * MINUTE_MS
    market.clock.set(minute + 30_000)
    [forming] = await exchange.fetch_ohlcv("ETH/BTC", "1m", since=minute, limit=1)
    order = await exchange.create_order("ETH/BTC", "market", "buy", 1)
    assert order["trades"][0]["price"] == forming[4]
    market.open_candle = False
    [closed] = await exchange.fetch_ohlcv("ETH/BTC", "1m", since=minute - MINUTE_MS, limit=1)
    order = await exchange.create_order("ETH/BTC", "market", "buy", 1)
    assert order["trades"][0]["price"] == closed[4]


async def test_reused_client_id_is_refused_unless_its_order_is_done_and_reuse_is_on(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    await exchange.create_order("ETH/BTC", "market", "buy", 1, None, {"clientOrderId": "cb-x"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await exchange.create_order("ETH/BTC", "market", "buy", 1, None, {"clientOrderId": "cb-x"})
    standin.market.account.reuse_done_ids = True
    await exchange.create_order("ETH/BTC", "market", "buy", 1, None, {"clientOrderId": "cb-x"})
    assert len(standin.market.account.orders(client_order_id="cb-x")) == 2
    await exchange.create_order("ETH/BTC", "limit", "buy", 1, 0.001, {"clientOrderId": "cb-y"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await exchange.create_order("ETH/BTC", "limit", "buy", 1, 0.001, {"clientOrderId": "cb-y"})


async def test_resting_limit_order_locks_funds_until_cancelled(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    order = await exchange.create_order("ETH/BTC", "limit", "buy", 2, 0.01, {"clientOrderId": "a"})
    assert order["status"] == "open" and order["filled"] == 0
    assert standin.market.account.balance("BTC") == pytest.approx((0.98, 0.02))
    assert [o["clientOrderId"] for o in await exchange.fetch_open_orders()] == ["a"]
    assert [o["id"] for o in await exchange.fetch_open_orders("ETH/BTC")] == [order["id"]]
    assert await exchange.fetch_open_orders("LTC/BTC") == []
    cancelled = await exchange.cancel_order(order["id"], "ETH/BTC")
    assert cancelled["status"] == "canceled"
    assert standin.market.account.balance("BTC") == (1.0, 0.0)
    assert await exchange.fetch_open_orders() == []
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.cancel_order(order["id"], "ETH/BTC")


async def test_marketable_limit_order_fills_at_once_at_the_last_price(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    price = price_now(standin)
    order = await exchange.create_order("ETH/BTC", "limit", "buy", 1, price * 1.01)
    assert order["status"] == "closed" and order["trades"][0]["price"] == price


@pytest.mark.parametrize(
    ("quantity", "raised"),
    [(50.0, ccxt.InsufficientFunds), (0.0004, ccxt.InvalidOrder)],
    ids=["funds-short", "below-lot-step"],
)
async def test_orders_the_account_cannot_place_are_refused(
    standin: StandIn, exchange: ccxt_async.Exchange, quantity: float, raised: type[Exception]
) -> None:
    with pytest.raises(raised):
        await exchange.private_post_order(
            {"symbol": "ETHBTC", "side": "BUY", "type": "MARKET", "quantity": str(quantity)}
        )
    assert standin.market.account.orders() == []


ORDER_FAULTS: list[tuple[ResponseFault, type[ccxt.BaseError], str, int, int]] = [
    (OrderRejected(), ccxt.InsufficientFunds, "bad_request", 400, 0),
    (OrderServerError(), ccxt.ExchangeNotAvailable, "unavailable", 500, 1),
    (OrderServerError(status=503, binance_body=True), ccxt.OperationFailed, "unavailable", 503, 1),
    (OrderTimeout(), ccxt.RequestTimeout, "timeout", NO_ANSWER, 1),
]


@pytest.mark.parametrize(
    ("fault", "raised", "label", "status", "placed"),
    ORDER_FAULTS,
    ids=["reject", "500-after-accepting", "503-json-after-accepting", "timeout-after-accepting"],
)
async def test_each_order_fault_raises_its_ccxt_error_and_places_what_it_says(
    standin: StandIn,
    exchange: ccxt_async.Exchange,
    fault: ResponseFault,
    raised: type[ccxt.BaseError],
    label: str,
    status: int,
    placed: int,
) -> None:
    standin.market.faults.add(fault)
    exchange.timeout = 500  # the hang fault never answers: give up soon
    with pytest.raises(ccxt.BaseError) as error:
        await exchange.create_order("ETH/BTC", "market", "buy", 1, None, {"clientOrderId": "f"})
    assert type(error.value) is raised
    assert classify(error.value) == label
    assert [o.status for o in standin.market.account.orders(client_order_id="f")] == [
        "FILLED"
    ] * placed
    [record] = await settled_records(standin, 1)
    assert (record.method, record.path, record.status) == ("POST", ORDER_PATH, status)
    assert (record.fault, record.client_order_id, record.symbol) == (fault.kind, "f", "ETHBTC")
    await exchange.create_order("ETH/BTC", "market", "buy", 1)  # the fault is used up


async def test_order_faults_leave_reads_and_other_symbols_alone(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    standin.market.faults.add(OrderRejected(symbol="LTC/BTC"))
    await exchange.create_order("ETH/BTC", "market", "buy", 1)
    await exchange.fetch_balance()
    with pytest.raises(ccxt.InsufficientFunds):
        await exchange.create_order("LTC/BTC", "market", "buy", 1)


def test_order_faults_are_accepted_as_json_by_the_control_api() -> None:
    for spec in ({"kind": "order_rejected", "code": -1013, "msg": "x"}, {"kind": "order_timeout"}):
        fault = FAULT_ADAPTER.validate_python(spec)
        assert isinstance(fault, OrderRejected | OrderTimeout) and fault.endpoint == "newOrder"
    server_error = FAULT_ADAPTER.validate_python({"kind": "order_server_error", "status": 503})
    assert isinstance(server_error, OrderServerError) and server_error.status == 503


async def test_signed_endpoints_want_an_api_key_a_timestamp_and_a_signature(
    standin: StandIn,
) -> None:
    form = {"symbol": "ETHBTC", "side": "BUY", "type": "MARKET", "quantity": "1"}
    async with httpx.AsyncClient(base_url=standin.base_url) as http:
        no_key = await http.post(ORDER_PATH, data={**form, "timestamp": "1", "signature": "s"})
        no_signature = await http.post(
            ORDER_PATH, data={**form, "timestamp": "1"}, headers={"X-MBX-APIKEY": "k"}
        )
        no_timestamp = await http.get(
            "/api/v3/account", params={"signature": "s"}, headers={"X-MBX-APIKEY": "k"}
        )
    assert (no_key.status_code, no_key.json()["code"]) == (401, -2014)
    assert (no_signature.status_code, no_signature.json()["code"]) == (400, -1102)
    assert "'signature'" in no_signature.json()["msg"]
    assert "'timestamp'" in no_timestamp.json()["msg"]
    assert standin.market.account.orders() == []


async def test_control_api_funds_the_account_and_shows_its_orders(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    async with httpx.AsyncClient(base_url=f"{standin.base_url}/_standin") as control:
        funded = (await control.put("/balances", json={"BTC": 2.0})).json()
        await exchange.create_order("ETH/BTC", "market", "buy", 1, None, {"clientOrderId": "c"})
        account = (await control.get("/account")).json()
    assert funded["balances"]["BTC"] == [2.0, 0.0]
    [order] = account["orders"]
    assert (order["clientOrderId"], order["status"], len(order["fills"])) == ("c", "FILLED", 1)
    assert account["balances"]["ETH"] == [pytest.approx(0.999), 0.0]
