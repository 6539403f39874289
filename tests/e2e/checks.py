"""What a finished pipeline run must satisfy, read back from the real Postgres."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import redis
import sqlalchemy as sa

from services.executor.backtest import BacktestConfig, run_backtest
from services.executor.candles import CandleArrays
from services.executor.settings import ExecutorSettings
from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.strategy import StochRsiBands
from shared.messages import TIMEFRAME_MS, IndicatorsComputed, Stream, TicksDecided, decode
from tests.fakes import trade_directly

INDICATOR_FIELDS = (
    "rsi",
    "stoch_k",
    "stoch_d",
    "stochrsi_fastk",
    "stochrsi_fastd",
    "atr",
    "volatility_ratio",
    "band_lower",
    "band_upper",
)


def file_candles(paths: list[Path]) -> dict[str, set[int]]:
    """Return the open times of every candle in replay files, by symbol."""
    out: dict[str, set[int]] = {}
    for path in paths:
        symbol = path.name.split("-")[0].replace("_", "/")
        out[symbol] = {int(row[0]) for row in json.loads(path.read_text())}
    return out


def query(url: str, sql: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def count(url: str, table: str) -> int:
    return int(query(url, f"SELECT count(*) FROM {table}")[0][0])


def assert_candles_exactly_once(url: str, expected: dict[str, set[int]]) -> None:
    rows = query(url, "SELECT symbol, open_time_ms, count(*) FROM candles GROUP BY 1, 2")
    stored: dict[str, set[int]] = defaultdict(set)
    for symbol, open_time, copies in rows:
        assert copies == 1, f"{symbol} {open_time} stored {copies} times"
        stored[str(symbol)].add(int(open_time))  # type: ignore[call-overload]
    for symbol, times in expected.items():
        missing, extra = times - stored[symbol], stored[symbol] - times
        assert not missing and not extra, f"{symbol}: {len(missing)} missing, {len(extra)} extra"


def _same(a: float | None, b: float, tolerance: float) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return math.isnan(b)
    return not math.isnan(b) and abs(a - b) <= tolerance


def assert_indicators_match_batch(url: str, tolerance: float = 1e-9) -> int:
    """Every stored indicator row equals a batch recomputation over the stored candles."""
    markets = query(url, "SELECT DISTINCT exchange, symbol, timeframe FROM candles")
    checked = 0
    for exchange, symbol, timeframe in markets:
        candles = query(
            url,
            "SELECT open_time_ms, high, low, close FROM candles WHERE exchange = :e AND "
            "symbol = :s AND timeframe = :t ORDER BY open_time_ms",
            e=exchange,
            s=symbol,
            t=timeframe,
        )
        columns = np.array([tuple(row) for row in candles], dtype=np.float64)
        frame = compute_frame(
            columns[:, 0].astype(np.int64),
            columns[:, 1],
            columns[:, 2],
            columns[:, 3],
            timeframe_ms=TIMEFRAME_MS[str(timeframe)],
            params=IndicatorParams(),
            fill_gaps=True,
        )
        by_time = {int(t): i for i, t in enumerate(frame["open_time_ms"])}
        rows = query(
            url,
            f"SELECT open_time_ms, {', '.join(INDICATOR_FIELDS)} FROM indicators WHERE "
            "exchange = :e AND symbol = :s AND timeframe = :t ORDER BY open_time_ms",
            e=exchange,
            s=symbol,
            t=timeframe,
        )
        assert len(rows) == len(candles), (
            f"{symbol}: {len(rows)} indicator rows, {len(candles)} candles"
        )
        for row in rows:
            i = by_time[int(row[0])]
            for name, value in zip(INDICATOR_FIELDS, row[1:], strict=True):
                expected = float(frame[name][i])
                assert _same(value, expected, tolerance), (
                    f"{symbol} {row[0]} {name}: stored {value}, batch {expected}"
                )
            checked += 1
    return checked


def assert_signals_follow_strategy(url: str) -> int:
    """The stored signals are exactly what the strategy says of the stored indicator rows."""
    strategy = StochRsiBands()
    rows = query(url, "SELECT * FROM indicators ORDER BY exchange, symbol, open_time_ms")
    expected = set()
    for row in rows:
        fields = {k: (math.nan if v is None else v) for k, v in row._mapping.items()}
        fields.pop("stored_at_ms", None)
        signal = strategy.evaluate(IndicatorsComputed(**fields))
        if signal is not None:
            expected.add((signal.signal_id, signal.side))
    stored = {(r[0], r[1]) for r in query(url, "SELECT signal_id, side FROM signals")}
    assert stored == expected, f"{len(stored ^ expected)} signals differ from the strategy's"
    return len(stored)


def assert_orders_exactly_once(url: str, redis_url: str, settings: ExecutorSettings) -> int:
    """Orders and fills are exactly those one uninterrupted trader makes of the executor's
    input (the ticks stream, read back whole), each once; every signal is decided once."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(Stream.TICKS.value)
    finally:
        client.close()
    ticks = []
    for _, fields in entries:
        message = decode(Stream.TICKS, fields[b"m"])
        assert isinstance(message, TicksDecided)
        ticks += message.ticks
    candles = {(s, t) for s, t in query(url, "SELECT symbol, open_time_ms FROM candles")}
    covered = {(tick.symbol, tick.open_time_ms) for tick in ticks}
    assert covered == candles, (
        f"the ticks stream does not hold every candle once read back ({len(candles - covered)} "
        "missing): was it trimmed? (STREAM_RETAIN_TICKS)"
    )
    fills, trader, decided = trade_directly(ticks, settings)
    expected = [(f.client_order_id, f.price, f.quantity, f.time_ms) for f in fills]
    stored = sorted(
        (cid, price, quantity, time)
        for cid, price, quantity, time in query(
            url, "SELECT client_order_id, price, quantity, filled_at_ms FROM fills"
        )
    )
    assert stored == sorted(expected), (
        f"fills differ: {len(set(stored) - set(expected))} unexpected, "
        f"{len(set(expected) - set(stored))} missing"
    )
    orders = query(url, "SELECT client_order_id FROM orders")
    assert len(orders) == len({cid for (cid,) in orders}), "duplicate client order ids"
    assert {cid for cid, *_ in stored} <= {cid for (cid,) in orders}, "a fill without its order"
    assert count(url, "decisions") == len(decided), "every signal is decided exactly once"
    for symbol, quantity in query(url, "SELECT symbol, quantity FROM positions"):
        holding = trader.holdings.get(symbol)
        assert abs(quantity - (holding.quantity if holding else 0.0)) <= 1e-12, symbol
    return len(orders)


def assert_fills_match_backtest(url: str, paths: list[Path]) -> int:
    """The live fills are exactly the backtest's of the same files: symbol, side, time, price
    and quantity (to 1e-9), and the client order id."""
    markets = {}
    for path in paths:
        rows = np.array(json.loads(path.read_text()), dtype=float)
        symbol = path.name.split("-")[0].replace("_", "/")
        markets[symbol] = CandleArrays(
            rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
        )
    result = run_backtest(markets, BacktestConfig())
    expected = sorted(
        (f.client_order_id, f.symbol, f.side, f.time_ms, f.price, f.quantity) for f in result.fills
    )
    stored = sorted(
        query(
            url,
            "SELECT f.client_order_id, f.symbol, f.side, f.filled_at_ms, f.price, f.quantity "
            "FROM fills f",
        )
    )
    assert len(stored) == len(expected), f"{len(stored)} live fills, {len(expected)} backtested"
    for live, backtested in zip(stored, expected, strict=True):
        assert live[:4] == backtested[:4], (live, backtested)
        assert abs(live[4] - backtested[4]) <= 1e-9 and abs(live[5] - backtested[5]) <= 1e-9
    return len(stored)
