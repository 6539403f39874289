"""The store against a real Postgres: migrations, idempotent batch writes, and query plans."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.messages import (
    SignalEmitted,
    client_order_id,
    signal_id,
    to_builtins,
)
from shared.store import IndicatorRow, Store, create_engine, downgrade, metadata, upgrade
from tests import store_checks
from tests.fakes import execution, indicators_for, load_candles, nan_as_none

pytestmark = pytest.mark.integration

TABLES = {
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
INDEXES = {
    "pk_trading_controls",
    "pk_symbol_controls",
    "pk_close_requests",
    "pk_strategy_params",
    "pk_trader_state",
    "pk_candle_gaps",
    "ix_candle_gaps_state",
    "pk_candles",
    "ix_candles_symbol_timeframe_time",
    "pk_indicators",
    "pk_signals",
    "uq_signals_market",
    "ix_signals_symbol_time",
    "pk_orders",
    "uq_orders_client_order_id",
    "ix_orders_symbol_created",
    "ix_orders_signal_id",
    "pk_fills",
    "ix_fills_symbol_filled",
    "ix_fills_client_order_id",
    "pk_positions",
    "pk_decisions",
    "ix_decisions_symbol_decided",
}


def walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every node of an EXPLAIN (FORMAT JSON) plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from walk(child)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(create_engine(database_url, pool_size=2, max_overflow=2))
    yield store
    await store.close()


@pytest.fixture
def statements(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """Record every SQL statement (and its parameters) the store's engine sends."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seen.append((sql, params))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(store.engine, "before_cursor_execute", record)


def schema_of(url: str) -> tuple[set[str], dict[str, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            indexes: dict[str, str] = dict(
                conn.execute(
                    sa.text(
                        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    return tables, indexes


def test_upgrade_creates_every_table_and_index(empty_database_url: str) -> None:
    upgrade(empty_database_url)

    tables, indexes = schema_of(empty_database_url)
    assert tables == TABLES | {"alembic_version"}
    assert set(indexes) == INDEXES | {"alembic_version_pkc"}
    latest = indexes["ix_candles_symbol_timeframe_time"]
    assert "(symbol, timeframe, open_time_ms DESC)" in latest
    assert "INCLUDE (exchange, open, high, low, close, volume)" in latest
    # Written at the candle rate, so one index: the key, which also serves the latest rows.
    assert "(symbol, timeframe, open_time_ms, exchange)" in indexes["pk_indicators"]


def test_migrated_schema_matches_the_store_tables(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_downgrade_removes_everything_and_upgrade_works_again(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    downgrade(empty_database_url)

    tables, indexes = schema_of(empty_database_url)
    assert tables == {"alembic_version"}
    assert set(indexes) == {"alembic_version_pkc"}

    upgrade(empty_database_url)
    assert schema_of(empty_database_url)[0] == TABLES | {"alembic_version"}


async def test_candle_batch_saved_twice_stores_each_candle_once(
    store: Store, statements: list[tuple[str, Any]]
) -> None:
    candles = load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 300)
    batch = candles + candles[100:150] + candles[:10]  # duplicates inside the batch

    assert await store.save_candles(batch) == 300
    sent = [sql for sql, _ in statements]
    assert any(sql.startswith("SAVEPOINT") for sql in sent)  # COPY, straight into the table
    assert not any(sql.startswith("INSERT INTO candles") for sql in sent)
    first = await store.candles_between(symbol="ETH/BTC", timeframe="1m", limit=1_000)
    statements.clear()
    assert await store.save_candles(batch) == 0
    assert any("candles_incoming" in sql for sql, _ in statements)  # then through staging
    second = await store.candles_between(symbol="ETH/BTC", timeframe="1m", limit=1_000)

    assert first == second
    assert [row.open_time_ms for row in first] == [c.open_time_ms for c in candles]
    assert (first[7].open, first[7].close, first[7].volume) == (
        candles[7].open,
        candles[7].close,
        candles[7].volume,
    )
    assert await store.last_candle_times() == {
        ("binance", "ETH/BTC", "1m"): candles[-1].open_time_ms
    }


async def test_revised_candles_replace_stored_ones(store: Store) -> None:
    await store_checks.check_revised_candles_replace_stored_ones(store)


async def test_gap_records_are_overwritten_by_market_and_start(store: Store) -> None:
    await store_checks.check_gap_records_are_overwritten_by_market_and_start(store)


async def test_small_candle_batch_counts_only_new_rows(store: Store) -> None:
    candles = load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 30)

    assert await store.save_candles(candles[:10] + candles[:3]) == 10
    assert await store.save_candles(candles) == 20
    assert await store.save_candles(candles[5:25]) == 0


async def test_candles_between_bounds_are_inclusive_and_without_start_gives_latest(
    store: Store,
) -> None:
    candles = load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 100)
    await store.save_candles(candles)
    times = [c.open_time_ms for c in candles]

    latest = await store.candles_between(symbol="ETH/BTC", timeframe="1m", limit=5)
    assert [row.open_time_ms for row in latest] == times[-5:]
    capped = await store.candles_between(
        symbol="ETH/BTC", timeframe="1m", end_ms=times[50], limit=3
    )
    assert [row.open_time_ms for row in capped] == times[48:51]
    window = await store.candles_between(
        exchange="binance",
        symbol="ETH/BTC",
        timeframe="1m",
        start_ms=times[10],
        end_ms=times[20],
        limit=100,
    )
    assert [row.open_time_ms for row in window] == times[10:21]
    other_exchange = await store.candles_between(
        exchange="kraken", symbol="ETH/BTC", timeframe="1m", limit=5
    )
    assert other_exchange == []


async def test_indicator_batch_saved_twice_keeps_nan_and_stores_once(store: Store) -> None:
    rows = indicators_for(load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 250))
    batch = rows + rows[:20]

    assert await store.save_indicators(batch) == 250
    first = await store.indicators_between(symbol="ETH/BTC", timeframe="1m", limit=1_000)
    assert await store.save_indicators(batch) == 0
    assert await store.save_indicators(rows[:5]) == 0  # the small-batch path skips them too
    second = await store.indicators_between(symbol="ETH/BTC", timeframe="1m", limit=1_000)

    assert len(first) == 250
    assert [nan_as_none(r) for r in first] == [nan_as_none(r) for r in second]
    assert math.isnan(first[0].rsi) and math.isnan(first[14].prev_stoch_k)
    assert first[14].rsi == rows[14].rsi
    for original in (rows[0], rows[14], rows[200]):
        stored = await store.indicator_at(
            exchange="binance",
            symbol="ETH/BTC",
            timeframe="1m",
            open_time_ms=original.open_time_ms,
        )
        assert stored is not None
        assert to_builtins(stored) == to_builtins(original)
    assert await store.last_indicator_times() == {
        ("binance", "ETH/BTC", "1m"): rows[-1].open_time_ms
    }


async def test_a_new_batch_is_copied_straight_in_and_a_partly_stored_one_inserts_the_rest(
    store: Store, statements: list[tuple[str, Any]]
) -> None:
    rows = indicators_for(load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 400))

    assert await store.save_indicators(rows[:200]) == 200
    inserts = [sql for sql, _ in statements if sql.startswith("INSERT INTO indicators")]
    assert inserts == []  # straight into the table: no staging, no INSERT ... SELECT
    statements.clear()
    assert await store.save_indicators(rows[100:]) == 200  # 100 stored already, 200 new
    sent = [sql.split(" (")[0] for sql, _ in statements]
    assert any(sql.startswith("ROLLBACK TO SAVEPOINT") for sql in sent)
    assert "INSERT INTO indicators" in sent

    stored = await store.indicators_between(symbol="ETH/BTC", timeframe="1m", limit=1_000)
    fields = list(IndicatorRow.__dataclass_fields__)
    assert [nan_as_none(r) for r in stored] == [
        nan_as_none(IndicatorRow(*(getattr(r, name) for name in fields))) for r in rows
    ]  # NaN went in as NULL and comes back as NaN
    with store.engine.connect() as conn:
        nulls = conn.execute(sa.text("SELECT count(*) FROM indicators WHERE rsi IS NULL"))
        assert nulls.scalar() == 14


async def test_indicators_of_many_candles_come_back_in_one_query(
    store: Store, statements: list[tuple[str, Any]]
) -> None:
    rows = indicators_for(load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 1_000))
    await store.save_indicators(rows)
    wanted = [("binance", "ETH/BTC", "1m", r.open_time_ms) for r in rows[::3]]
    missing = [("binance", "ETH/BTC", "1m", 1), ("kraken", "ETH/BTC", "1m", rows[0].open_time_ms)]

    statements.clear()
    found = await store.indicators_at([*missing, *wanted])

    assert len(statements) == 1
    assert [to_builtins(m) for m in found] == [to_builtins(r) for r in rows[::3]]


async def test_signals_saved_twice_are_stored_once(store: Store) -> None:
    signals = [
        SignalEmitted(
            signal_id=signal_id("stochrsi_bands", "binance", "ETH/BTC", "1m", ms),
            strategy="stochrsi_bands",
            exchange="binance",
            symbol="ETH/BTC",
            timeframe="1m",
            open_time_ms=ms,
            side="buy" if ms % 120_000 else "sell",
            price=0.05,
            reason="stoch_k crossed above the lower band",
            candle_closed_at_ms=ms + 60_000,
        )
        for ms in range(1_700_000_040_000, 1_700_000_040_000 + 60 * 60_000, 60_000)
    ]

    assert await store.save_signals(signals + signals[:7]) == 60
    assert await store.save_signals(signals) == 0
    stored = await store.signals_between(symbol="ETH/BTC", limit=100)

    assert [row.signal_id for row in stored] == [s.signal_id for s in signals]
    assert stored[3].reason == signals[3].reason and stored[3].side == signals[3].side
    assert await store.signals_between(symbol="XRP/ETH", limit=100) == []


async def test_replayed_execution_records_one_order_and_one_fill(store: Store) -> None:
    signal = signal_id("stochrsi_bands", "binance", "ETH/BTC", "1m", 1_699_999_940_000)

    assert await store.record_execution(**execution(signal, fill_id="fill-1")) is True
    assert await store.record_execution(**execution(signal, fill_id="fill-2")) is False

    orders = await store.orders_between(limit=10)
    fills = await store.fills_between(symbol="ETH/BTC", limit=10)
    assert [(o.client_order_id, o.status) for o in orders] == [(client_order_id(signal), "filled")]
    assert [f.fill_id for f in fills] == ["fill-1"]
    found = await store.order_of_signal(signal)
    assert found is not None
    assert found[0] == execution(signal, fill_id="fill-1")["order"]
    assert found[1] == [execution(signal, fill_id="fill-1")["fill"]]
    position = await store.position(exchange="binance", symbol="ETH/BTC")
    assert position == execution(signal, fill_id="fill-1")["position"]


async def test_every_signal_is_decided_once_ordered_or_skipped(store: Store) -> None:
    ordered = signal_id("stochrsi_bands", "binance", "ETH/BTC", "1m", 1_699_999_940_000)
    skipped = SignalEmitted(
        signal_id=signal_id("stochrsi_bands", "binance", "ETH/BTC", "1m", 1_700_000_000_000),
        strategy="stochrsi_bands",
        exchange="binance",
        symbol="ETH/BTC",
        timeframe="1m",
        open_time_ms=1_700_000_000_000,
        side="buy",
        price=0.05,
        reason="",
        candle_closed_at_ms=0,
    )

    assert await store.record_execution(**execution(ordered, fill_id="fill-1"))
    assert await store.record_skip(signal=skipped, reason="already_long", decided_at_ms=5)
    assert not await store.record_skip(signal=skipped, reason="no_position", decided_at_ms=6)

    first = await store.decision_of(ordered)
    second = await store.decision_of(skipped.signal_id)
    assert first is not None and first.outcome == "ordered"
    assert first.client_order_id == client_order_id(ordered)
    assert second is not None and (second.outcome, second.reason) == ("skipped", "already_long")
    assert await store.decision_of("never-emitted") is None


async def test_next_execution_updates_the_position_in_place(store: Store) -> None:
    first = signal_id("s", "binance", "ETH/BTC", "1m", 1)
    second = signal_id("s", "binance", "ETH/BTC", "1m", 2)

    assert await store.record_execution(**execution(first, fill_id="f1", quantity=1.0))
    assert await store.record_execution(**execution(second, fill_id="f2", quantity=3.0))

    assert [(p.quantity, p.cause_fill_id) for p in await store.positions()] == [(3.0, "f2")]
    assert await store.order_of_signal("never-emitted") is None


async def test_latest_candles_query_scans_the_composite_index_without_sorting(
    store: Store, statements: list[tuple[str, Any]]
) -> None:
    await store.save_candles(load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 10_000))
    await store.save_candles(load_candles("ADA_BTC-1m.json", "ADA/BTC", "1m", 10_000))
    with store.engine.begin() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM candles")) == 20_000
        conn.execute(sa.text("ANALYZE candles"))
    statements.clear()

    latest = await store.candles_between(symbol="ETH/BTC", timeframe="1m", limit=200)
    assert len(latest) == 200
    [(sql, params)] = statements

    with store.engine.connect() as conn:
        cursor = conn.connection.cursor()
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        [[explained]] = cursor.fetchall()
        plan = explained[0]["Plan"]
    nodes = list(walk(plan))
    kinds = {node["Node Type"] for node in nodes}
    assert any(
        node["Node Type"] in {"Index Scan", "Index Only Scan"}
        and node.get("Index Name") == "ix_candles_symbol_timeframe_time"
        for node in nodes
    ), plan
    assert not kinds & {"Sort", "Incremental Sort", "Seq Scan", "Bitmap Heap Scan"}, plan


async def test_candle_history_returns_each_market_tail_in_one_query(
    store: Store, statements: list[tuple[str, Any]]
) -> None:
    eth = load_candles("ETH_BTC-1m.json", "ETH/BTC", "1m", 400)
    ada = load_candles("ADA_BTC-1m.json", "ADA/BTC", "1m", 400)
    ltc = load_candles("LTC_BTC-5m.json", "LTC/BTC", "5m", 400)
    for batch in (eth, ada, ltc):
        await store.save_candles(batch)
    markets = [
        ("binance", "ETH/BTC", "1m"),
        ("binance", "ADA/BTC", "1m"),
        ("binance", "LTC/BTC", "5m"),
        ("binance", "XRP/ETH", "1m"),
    ]
    statements.clear()

    history = await store.candle_history(
        markets=markets,
        end_ms={markets[0]: eth[249].open_time_ms, markets[2]: ltc[20].open_time_ms + 1},
        limit=50,
    )

    assert len(statements) == 1
    assert [r.open_time_ms for r in history[markets[0]]] == [c.open_time_ms for c in eth[200:250]]
    assert [r.open_time_ms for r in history[markets[1]]] == [c.open_time_ms for c in ada[350:]]
    assert [r.open_time_ms for r in history[markets[2]]] == [c.open_time_ms for c in ltc[:21]]
    assert history[markets[3]] == []
    assert history[markets[1]][-1].close == ada[-1].close


async def test_bulk_copy_keeps_text_that_the_copy_format_reserves(store: Store) -> None:
    reasons = ["tab\there", "back\\slash", "new\nline", "carriage\rreturn", "\\N", "plain"]
    batch = [
        SignalEmitted(
            signal_id=f"s-{i}",
            strategy="s",
            exchange="binance",
            symbol="ETH/BTC",
            timeframe="1m",
            open_time_ms=i * 60_000,
            side="buy",
            price=0.05 + i,
            reason=reasons[i % len(reasons)],
            candle_closed_at_ms=0,
        )
        for i in range(120)  # past the COPY threshold
    ]
    assert await store.save_signals(batch) == 120
    stored = await store.signals_between(symbol="ETH/BTC", limit=200)
    assert [(row.reason, row.price) for row in stored] == [(s.reason, s.price) for s in batch]
