"""The exchange stand-in driven by the real ccxt binance client: markets, paging, faults, log.

No Redis or Postgres: the stand-in runs in a thread (or, once, as a process) on a free port and
serves the team's real candles; the tests skip where that data folder is absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from shared.ccxt_client import (
    build_exchange,
    checked_ohlcv,
    classify,
    klines_weight,
    retry_after_s,
)
from tests.conftest import ohlcv_path
from tests.standin.clock import Clock
from tests.standin.faults import (
    Banned,
    Hang,
    Malformed,
    Omission,
    RateLimited,
    ResponseFault,
    Revision,
    ServerError,
)
from tests.standin.market import Market
from tests.standin.remote import run_standin_process
from tests.standin.request_log import RequestRecord, inside_retry_windows
from tests.standin.series import DAY_MS
from tests.standin.server import StandIn, build_market, serve_standin
from tests.standin.weight import WeightMeter

MINUTE_MS = 60_000
KLINES = "/api/v3/klines"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """The team's real candle folder (the test skips without it)."""
    return ohlcv_path("ETH_BTC-1m.json").parent


@pytest.fixture
def standin(data_dir: Path) -> Iterator[StandIn]:
    """A stand-in in a thread, its clock stopped at the end of the common timeline."""
    with serve_standin(build_market(data_dir)) as running:
        yield running


@pytest.fixture
async def exchange(standin: StandIn) -> AsyncIterator[ccxt_async.Exchange]:
    """The real ccxt async binance client, pointed at the stand-in, markets loaded."""
    client = build_exchange("binance", api_url=standin.base_url, timeout_ms=1_000)
    await client.load_markets()
    standin.market.log.clear()
    yield client
    await client.close()


def expected_rows(market: Market, symbol: str, start_ms: int, end_ms: int) -> list[list[Any]]:
    """Return the closed candles the stand-in holds for [start_ms, end_ms), as ccxt rows."""
    series = market.catalog.series(symbol.replace("/", ""), "1m")
    return [list(row) for row in series.rows if start_ms <= row[0] < end_ms]


async def settled_records(market: Market, count: int) -> list[RequestRecord]:
    """Return the request log once it holds `count` records (a hang is logged when it ends)."""
    for _ in range(200):
        if len(records := market.log.records()) >= count:
            return records
        await asyncio.sleep(0.01)
    return market.log.records()


async def fetch_all(
    exchange: ccxt_async.Exchange, symbol: str, since: int, until: int
) -> list[list[Any]]:
    """Page through fetch_ohlcv from `since` until a page ends at or after `until`."""
    rows: list[list[Any]] = []
    while since < until:
        page = await exchange.fetch_ohlcv(symbol, "1m", since=since, limit=1000)
        if not page:
            break
        rows += page
        since = page[-1][0] + MINUTE_MS
    return rows


async def test_load_markets_lists_real_and_derived_symbols_from_exchange_info_only(
    data_dir: Path, standin: StandIn
) -> None:
    client = build_exchange("binance", api_url=standin.base_url, timeout_ms=1_000)
    try:
        markets = await client.load_markets()
    finally:
        await client.close()
    assert len(markets) >= 20
    assert {"ETH/BTC", "XMR/BTC", "LTC/BTC", "XRP/ETH", "ETHA/BTC", "XMRC/BTC"} <= set(markets)
    assert all(m["spot"] and m["active"] and m["type"] == "spot" for m in markets.values())
    assert markets["ETHA/BTC"]["id"] == "ETHABTC"
    assert [r.path for r in standin.market.log.records()] == ["/api/v3/exchangeInfo"]


async def test_a_day_of_1m_candles_pages_through_exactly_the_served_candles(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    end = standin.market.catalog.end_ms
    rows = await fetch_all(exchange, "ETH/BTC", end - DAY_MS, end)
    assert rows == expected_rows(standin.market, "ETH/BTC", end - DAY_MS, end)
    assert len(rows) == 1440
    requests = standin.market.log.records(path=KLINES)
    assert [r.rows for r in requests] == [1000, 440]
    assert [r.start_time for r in requests] == [end - DAY_MS, end - DAY_MS + 1000 * MINUTE_MS]


async def test_no_trade_minutes_are_never_served(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    end = standin.market.catalog.end_ms
    rows = await fetch_all(exchange, "XMR/BTC", end - DAY_MS, end)
    assert rows == expected_rows(standin.market, "XMR/BTC", end - DAY_MS, end)
    assert 1000 < len(rows) < 1440  # XMR/BTC is illiquid: whole minutes without a trade


async def test_binance_kline_semantics_default_limit_cap_and_end_time(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    end = standin.market.catalog.end_ms
    latest = await exchange.publicGetKlines({"symbol": "ETHBTC", "interval": "1m"})
    assert len(latest) == 500 and latest[-1][0] == end - MINUTE_MS
    assert len(latest[0]) == 12 and latest[0][6] == latest[0][0] + MINUTE_MS - 1
    assert all(isinstance(field, str) for field in latest[0][1:6])
    capped = await exchange.publicGetKlines({"symbol": "ETHBTC", "interval": "1m", "limit": 5000})
    assert len(capped) == 1000
    ending = await exchange.publicGetKlines(
        {"symbol": "ETHBTC", "interval": "5m", "endTime": end - DAY_MS, "limit": 3}
    )
    assert [row[0] for row in ending] == [end - DAY_MS - k * 300_000 for k in (2, 1, 0)]


async def test_still_open_candle_is_the_last_row_with_partial_values(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    market = standin.market
    minute = market.catalog.end_ms - DAY_MS
    market.clock.set(minute + 15_000)  # a quarter into the minute
    rows = await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=3)
    real = expected_rows(market, "ETH/BTC", minute, minute + MINUTE_MS)[0]
    assert [row[0] for row in rows] == [minute - 2 * MINUTE_MS, minute - MINUTE_MS, minute]
    _, o, h, low, _, v = rows[-1]
    assert o == real[1] and real[3] <= low <= h <= real[2]
    assert v == pytest.approx(real[5] / 4)
    assert rows[:2] == expected_rows(market, "ETH/BTC", minute - 2 * MINUTE_MS, minute)
    market.open_candle = False
    assert (await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=3))[-1][0] == minute - MINUTE_MS


FAULTS: list[tuple[ResponseFault, type[ccxt.BaseError], str]] = [
    (RateLimited(retry_after_s=3), ccxt.DDoSProtection, "rate_limited"),
    (Banned(retry_after_s=5), ccxt.DDoSProtection, "banned"),
    (ServerError(), ccxt.ExchangeNotAvailable, "unavailable"),
    (ServerError(status=503), ccxt.ExchangeNotAvailable, "unavailable"),
    (ServerError(binance_body=True), ccxt.OperationFailed, "unavailable"),
    (Hang(hang_s=10), ccxt.RequestTimeout, "timeout"),
    (Malformed(), ccxt.BadResponse, "bad_response"),
]


@pytest.mark.parametrize(
    ("fault", "raised", "label"),
    FAULTS,
    ids=["429", "418", "500-page", "503-page", "500-binance-json", "hang", "malformed"],
)
async def test_each_fault_surfaces_as_the_ccxt_error_classify_labels(
    standin: StandIn,
    exchange: ccxt_async.Exchange,
    fault: ResponseFault,
    raised: type[ccxt.BaseError],
    label: str,
) -> None:
    standin.market.faults.add(fault.model_copy(update={"count": 2}))
    for _ in range(2):
        with pytest.raises(ccxt.BaseError) as error:
            checked_ohlcv("binance", await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=5))
        assert type(error.value) is raised
        assert classify(error.value) == label
    assert len(checked_ohlcv("binance", await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=5))) == 5
    records = await settled_records(standin.market, 3)
    assert [r.fault for r in records] == [fault.kind, fault.kind, None]


async def test_fault_for_one_symbol_leaves_the_others_alone(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    standin.market.faults.add(ServerError(symbol="XMR/BTC"))
    assert len(await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=2)) == 2
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.fetch_ohlcv("XMR/BTC", "1m", limit=2)


async def test_retry_after_is_readable_from_the_client_after_429_and_418(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    standin.market.faults.add(RateLimited(retry_after_s=3))
    standin.market.faults.add(Banned(retry_after_s=120))
    for expected in (3.0, 120.0):
        with pytest.raises(ccxt.DDoSProtection):
            await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=1)
        assert retry_after_s(exchange) == expected
    await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=1)
    assert retry_after_s(exchange) is None


async def test_bad_symbol_and_bad_interval_are_bad_requests(
    exchange: ccxt_async.Exchange,
) -> None:
    with pytest.raises(ccxt.BadSymbol) as unknown_symbol:
        await exchange.publicGetKlines({"symbol": "NOPEBTC", "interval": "1m"})
    with pytest.raises(ccxt.BadRequest) as unknown_interval:
        await exchange.fetch_ohlcv("ETH/BTC", "7m")
    assert classify(unknown_symbol.value) == classify(unknown_interval.value) == "bad_request"


async def test_weight_past_the_limit_is_refused_until_the_minute_ends(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    standin.market.weight = WeightMeter(limit=5, wall=lambda: 1_800_000_045.0)  # 15 s left
    weight = klines_weight(exchange, 1000)
    for used in (weight, 2 * weight):
        await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=1000)
        headers = {k.lower(): v for k, v in exchange.last_response_headers.items()}
        assert headers["x-mbx-used-weight-1m"] == str(used)
    with pytest.raises(ccxt.DDoSProtection) as error:
        await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=1000)
    assert classify(error.value) == "rate_limited"
    assert retry_after_s(exchange) == 15.0


async def test_missing_candles_are_left_out_of_n_answers_then_served(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    end = standin.market.catalog.end_ms
    gone = (end - 3 * MINUTE_MS, end - 2 * MINUTE_MS)
    standin.market.faults.add(Omission(open_times=gone, count=2, symbol="ETH/BTC"))
    since = end - 5 * MINUTE_MS
    for _ in range(2):
        times = [row[0] for row in await exchange.fetch_ohlcv("ETH/BTC", "1m", since=since)]
        assert times == [since, since + MINUTE_MS, end - MINUTE_MS]
        other = await exchange.fetch_ohlcv("ADA/BTC", "1m", since=since)
        assert len(other) == 5
    assert len(await exchange.fetch_ohlcv("ETH/BTC", "1m", since=since)) == 5


async def test_revised_candle_changes_after_it_was_served_once(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    end = standin.market.catalog.end_ms
    minute = end - 2 * MINUTE_MS
    standin.market.faults.add(Revision(open_time=minute, symbol="ETH/BTC", close=0.2, volume=7.5))
    recorded = expected_rows(standin.market, "ETH/BTC", minute, minute + MINUTE_MS)[0]
    first = await exchange.fetch_ohlcv("ETH/BTC", "1m", since=minute, limit=1)
    second = await exchange.fetch_ohlcv("ETH/BTC", "1m", since=minute, limit=1)
    assert first == [recorded]
    assert second == [[minute, recorded[1], 0.2, recorded[3], 0.2, 7.5]]


async def test_request_log_shows_requests_inside_a_retry_after_window(
    standin: StandIn, exchange: ccxt_async.Exchange
) -> None:
    standin.market.faults.add(RateLimited(retry_after_s=1))
    with pytest.raises(ccxt.DDoSProtection):
        await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=1)
    await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=1)  # too early
    await asyncio.sleep(1.1)
    await exchange.fetch_ohlcv("ETH/BTC", "1m", limit=1)  # after the window
    records = standin.market.log.records()
    assert [(r.status, r.rows, r.retry_after_s) for r in records] == [
        (429, 0, 1.0),
        (200, 1, None),
        (200, 1, None),
    ]
    assert [r.symbol for r in records] == ["ETHBTC"] * 3
    assert inside_retry_windows(records) == [records[1]]


def test_accelerated_clock_runs_at_its_speed_from_where_it_is_set() -> None:
    wall = [1000.0]
    clock = Clock(1_000_000, speed=60, wall=lambda: wall[0])
    wall[0] += 2.0
    assert clock.now_ms() == 1_120_000
    clock.set(5_000_000)
    wall[0] += 0.5
    assert clock.now_ms() == 5_030_000
    clock.set(7_000_000, speed=0)
    wall[0] += 100
    assert clock.now_ms() == 7_000_000 == clock.advance(0)


async def test_standin_process_is_driven_through_its_control_api(data_dir: Path) -> None:
    with run_standin_process(speed=0, args=["--data-dir", str(data_dir)]) as process:
        control = process.control
        end = control.markets()["end_ms"]
        control.set_clock(now_ms=end - 30_000)
        control.add_fault(RateLimited(retry_after_s=2, symbol="ETH/BTC"))
        client = build_exchange("binance", api_url=process.base_url, timeout_ms=2_000)
        try:
            await client.load_markets()
            with pytest.raises(ccxt.DDoSProtection):
                await client.fetch_ohlcv("ETH/BTC", "1m", limit=2)
            assert retry_after_s(client) == 2.0
            rows = await client.fetch_ohlcv("ETH/BTC", "1m", limit=2)
        finally:
            await client.close()
        assert rows[-1][0] == end - MINUTE_MS  # the open candle of the minute the clock is in
        statuses = [(r.path, r.status) for r in control.requests()]
        assert statuses == [("/api/v3/exchangeInfo", 200), (KLINES, 429), (KLINES, 200)]
        assert control.faults() == []


async def test_watch_ohlcv_streams_the_open_candle_then_its_final_values(standin: StandIn) -> None:
    market = standin.market
    minute = market.catalog.end_ms - DAY_MS
    market.clock.set(minute + 30_000)
    real = expected_rows(market, "ETH/BTC", minute, minute + MINUTE_MS)[0]
    client = build_exchange("binance", api_url=standin.base_url, timeout_ms=2_000, streaming=True)
    try:
        # ccxt.pro updates the returned cache in place: keep copies
        first = [
            list(row) for row in await asyncio.wait_for(client.watch_ohlcv("ETH/BTC", "1m"), 5)
        ]
        market.clock.advance(MINUTE_MS)
        seen: dict[int, list[Any]] = {}
        while minute + MINUTE_MS not in seen:
            for row in await asyncio.wait_for(client.watch_ohlcv("ETH/BTC", "1m"), timeout=5):
                seen[row[0]] = list(row)
    finally:
        await client.close()
    assert [row[0] for row in first] == [minute]
    assert first[0][1] == real[1] and first[0][5] == pytest.approx(real[5] / 2)
    assert seen[minute] == real
