"""The store on a SQLite file (embedded mode): migrations, idempotent writes, reads, threads."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client import REGISTRY
from sqlalchemy.pool import QueuePool

from shared.messages import (
    CandleClosed,
    SignalEmitted,
    signal_id,
    to_builtins,
)
from shared.store import Store, create_engine, downgrade, metadata, upgrade
from tests import store_checks
from tests.conftest import ROOT
from tests.fakes import execution, indicators_for, load_candles, nan_as_none

TABLES = {
    "alembic_version",
    "candles",
    "indicators",
    "signals",
    "orders",
    "fills",
    "positions",
    "decisions",
    "candle_gaps",
    "trader_state",
    "trading_controls",
    "symbol_controls",
    "close_requests",
    "strategy_params",
}


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'candlebus.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    store = Store(create_engine(sqlite_url, pool_size=4, max_overflow=4))
    yield store
    await store.close()


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    """Record every SQL statement the store's engine sends."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        seen.append(sql)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(store.engine, "before_cursor_execute", record)


def test_upgrade_downgrade_and_upgrade_again_on_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"

    upgrade(url)
    assert table_names(url) == TABLES
    downgrade(url)
    assert table_names(url) == {"alembic_version"}
    upgrade(url)
    assert table_names(url) == TABLES


def test_migrated_sqlite_schema_matches_the_store_tables(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_alembic_command_line_migrates_the_database_named_by_database_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    environment = {**os.environ, "DATABASE_URL": url}

    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=environment,
        check=True,
        capture_output=True,
    )

    assert table_names(url) == TABLES


def test_engine_refuses_an_in_memory_sqlite_database() -> None:
    with pytest.raises(ValueError, match="file"):
        create_engine("sqlite://")


def test_pool_checkouts_and_overflow_are_reported_as_gauges(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, pool_size=1, max_overflow=2)
    pool = engine.pool
    assert isinstance(pool, QueuePool)

    def gauges() -> tuple[float | None, float | None]:
        return (
            REGISTRY.get_sample_value("candlebus_db_pool_checked_out_connections"),
            REGISTRY.get_sample_value("candlebus_db_pool_overflow_connections"),
        )

    try:
        with engine.connect():
            assert gauges() == (1, 0)
            with engine.connect(), engine.connect():
                assert gauges() == (3, 2)
            # One returned connection waits in the pool, the other is closed: one beyond size.
            assert gauges() == (1, 1) == (pool.checkedout(), pool.overflow())
        assert gauges() == (0, 0)
    finally:
        engine.dispose()


async def test_candle_batch_saved_twice_stores_each_candle_once(store: Store) -> None:
    candles = load_candles("XRP_ETH-1m.json", "XRP/ETH", "1m", 300)
    batch = candles + candles[:25]
    timed = REGISTRY.get_sample_value(
        "candlebus_db_query_seconds_count", {"operation": "save_candles"}
    )

    assert await store.save_candles(batch) == 300
    first = await store.candles_between(symbol="XRP/ETH", timeframe="1m", limit=500)
    assert await store.save_candles(batch) == 0
    second = await store.candles_between(symbol="XRP/ETH", timeframe="1m", limit=500)

    assert first == second
    assert [(r.open_time_ms, r.close) for r in first] == [
        (c.open_time_ms, c.close) for c in candles
    ]
    assert await store.last_candle_times() == {
        ("binance", "XRP/ETH", "1m"): candles[-1].open_time_ms
    }
    after = REGISTRY.get_sample_value(
        "candlebus_db_query_seconds_count", {"operation": "save_candles"}
    )
    assert after == (timed or 0) + 2


async def test_candles_between_bounds_are_inclusive_and_without_start_gives_latest(
    store: Store,
) -> None:
    candles = load_candles("XRP_ETH-1m.json", "XRP/ETH", "1m", 60)
    await store.save_candles(candles)
    times = [c.open_time_ms for c in candles]

    latest = await store.candles_between(symbol="XRP/ETH", timeframe="1m", limit=4)
    window = await store.candles_between(
        symbol="XRP/ETH", timeframe="1m", start_ms=times[5], end_ms=times[9], limit=100
    )
    capped = await store.candles_between(
        symbol="XRP/ETH", timeframe="1m", start_ms=times[5], limit=2
    )

    assert [r.open_time_ms for r in latest] == times[-4:]
    assert [r.open_time_ms for r in window] == times[5:10]
    assert [r.open_time_ms for r in capped] == times[5:7]


async def test_indicator_batch_saved_twice_keeps_nan_and_stores_once(store: Store) -> None:
    rows = indicators_for(load_candles("XRP_ETH-1m.json", "XRP/ETH", "1m", 120))

    assert await store.save_indicators(rows + rows[:3]) == 120
    first = await store.indicators_between(symbol="XRP/ETH", timeframe="1m", limit=500)
    assert await store.save_indicators(rows) == 0
    second = await store.indicators_between(symbol="XRP/ETH", timeframe="1m", limit=500)

    assert [nan_as_none(r) for r in first] == [nan_as_none(r) for r in second]
    assert math.isnan(first[13].atr) and first[14].atr == rows[14].atr
    stored = await store.indicator_at(
        exchange="binance", symbol="XRP/ETH", timeframe="1m", open_time_ms=rows[3].open_time_ms
    )
    assert stored is not None and to_builtins(stored) == to_builtins(rows[3])
    assert await store.last_indicator_times() == {
        ("binance", "XRP/ETH", "1m"): rows[-1].open_time_ms
    }


async def test_signals_saved_twice_are_stored_once(store: Store) -> None:
    signals = [
        SignalEmitted(
            signal_id=signal_id("bands", "binance", "ETH/BTC", "1m", ms),
            strategy="bands",
            exchange="binance",
            symbol="ETH/BTC",
            timeframe="1m",
            open_time_ms=ms,
            side="buy",
            price=0.05,
            reason="crossed",
            candle_closed_at_ms=ms + 60_000,
        )
        for ms in range(0, 10 * 60_000, 60_000)
    ]

    assert await store.save_signals(signals + signals) == 10
    assert await store.save_signals(signals[:4]) == 0
    stored = await store.signals_between(start_ms=120_000, limit=3)

    assert [r.signal_id for r in stored] == [s.signal_id for s in signals[2:5]]


async def test_replayed_execution_records_one_order_and_one_fill(store: Store) -> None:
    signal = signal_id("bands", "binance", "ETH/BTC", "1m", 60_000)

    assert await store.record_execution(**execution(signal, fill_id="fill-a")) is True
    assert await store.record_execution(**execution(signal, fill_id="fill-b")) is False

    assert [o.signal_id for o in await store.orders_between(limit=10)] == [signal]
    assert [f.fill_id for f in await store.fills_between(limit=10)] == ["fill-a"]
    assert await store.order_of_signal(signal) == (
        execution(signal, fill_id="fill-a")["order"],
        [execution(signal, fill_id="fill-a")["fill"]],
    )
    position = await store.position(exchange="binance", symbol="ETH/BTC")
    assert position == execution(signal, fill_id="fill-a")["position"]


async def test_candle_history_returns_each_market_tail_in_one_query(
    store: Store, statements: list[str]
) -> None:
    xrp = load_candles("XRP_ETH-1m.json", "XRP/ETH", "1m", 200)
    eth = load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 200)
    await store.save_candles(xrp + eth)
    markets = [("binance", "XRP/ETH", "1m"), ("binance", "ETH/BTC", "1m"), ("x", "NONE", "1m")]
    statements.clear()

    history = await store.candle_history(
        markets=markets, end_ms={markets[1]: eth[99].open_time_ms}, limit=30
    )

    assert len([sql for sql in statements if sql.lstrip().startswith("SELECT")]) == 1
    assert [r.open_time_ms for r in history[markets[0]]] == [c.open_time_ms for c in xrp[170:]]
    assert [r.open_time_ms for r in history[markets[1]]] == [c.open_time_ms for c in eth[70:100]]
    assert history[markets[2]] == []


async def test_candle_history_of_more_markets_than_sqlite_compounds_in_one_select(
    store: Store,
) -> None:
    candles = [
        CandleClosed(
            exchange="synthetic",
            symbol=f"S{n}/USD",
            timeframe="1m",
            open_time_ms=minute * 60_000,
            open=1.0,
            high=1.0,
            low=1.0,
            close=float(n),
            volume=1.0,
            source="synthetic",
            closed_at_ms=(minute + 1) * 60_000,
        )
        for n in range(600)
        for minute in range(3)
    ]
    await store.save_candles(candles)
    markets = [("synthetic", f"S{n}/USD", "1m") for n in range(600)]

    history = await store.candle_history(markets=markets, limit=2)

    assert all([r.open_time_ms for r in history[m]] == [60_000, 120_000] for m in markets)
    assert history[markets[599]][0].close == 599.0


async def test_concurrent_writers_on_worker_threads_all_land(store: Store) -> None:
    candles = load_candles("XRP_ETH-1m.json", "XRP/ETH", "1m", 400)
    chunks = [candles[start : start + 50] for start in range(0, 400, 50)]

    inserted = await asyncio.gather(*(store.save_candles(chunk) for chunk in chunks))

    assert inserted == [50] * 8
    stored = await store.candles_between(symbol="XRP/ETH", timeframe="1m", limit=1_000)
    assert len(stored) == 400


async def test_revised_candles_replace_stored_ones(store: Store) -> None:
    await store_checks.check_revised_candles_replace_stored_ones(store)


async def test_gap_records_are_overwritten_by_market_and_start(store: Store) -> None:
    await store_checks.check_gap_records_are_overwritten_by_market_and_start(store)
