"""What a finished pipeline run must satisfy, read back from the real Postgres."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from services.executor.positions import Skip, apply_fill, order_quantity
from services.executor.settings import ExecutorSettings
from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.strategy import StochRsiBands
from shared.messages import (
    TIMEFRAME_MS,
    IndicatorsComputed,
    OrderFilled,
    PositionChanged,
    client_order_id,
)

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


def assert_orders_exactly_once(url: str, settings: ExecutorSettings) -> int:
    """Orders are exactly those a single uninterrupted executor makes of the stored signals."""
    signals = query(
        url,
        "SELECT signal_id, exchange, symbol, timeframe, open_time_ms, side, price "
        "FROM signals ORDER BY exchange, symbol, open_time_ms",
    )
    positions: dict[tuple[str, str], PositionChanged | None] = defaultdict(lambda: None)
    expected: dict[str, tuple[str, float]] = {}
    from shared.messages import SignalEmitted

    for sid, exchange, symbol, timeframe, open_time, side, price in signals:
        signal = SignalEmitted(
            signal_id=sid,
            strategy="",
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            open_time_ms=open_time,
            side=side,
            price=price,
            reason="",
            candle_closed_at_ms=0,
        )
        market = (exchange, symbol)
        quantity = order_quantity(
            signal, positions[market], quote_amount=settings.order_quote_amount
        )
        if isinstance(quantity, Skip):
            continue
        cid = client_order_id(sid)
        expected[cid] = (side, quantity)
        fill_price = price * (1 + (1 if side == "buy" else -1) * settings.slippage_bps / 10_000)
        positions[market] = apply_fill(
            positions[market],
            OrderFilled(
                fill_id=cid + "-1",
                client_order_id=cid,
                exchange=exchange,
                symbol=symbol,
                side=side,
                price=fill_price,
                quantity=quantity,
                fee=fill_price * quantity * settings.fee_bps / 1e4,
                filled_at_ms=0,
            ),
        )
    orders = query(url, "SELECT client_order_id, side, quantity FROM orders")
    stored = {cid: (side, quantity) for cid, side, quantity in orders}
    assert len(orders) == len(stored), "duplicate client order ids"
    assert set(stored) == set(expected), (
        f"orders differ: {len(set(stored) - set(expected))} unexpected, "
        f"{len(set(expected) - set(stored))} missing"
    )
    for cid, (side, quantity) in expected.items():
        assert stored[cid][0] == side and abs(stored[cid][1] - quantity) <= 1e-12 * quantity
    assert count(url, "fills") == len(orders), "every order has exactly one fill"
    assert count(url, "decisions") == len(signals), "every signal is decided exactly once"
    for market, position in positions.items():
        row = query(
            url,
            "SELECT quantity, realized_pnl FROM positions WHERE exchange = :e AND symbol = :s",
            e=market[0],
            s=market[1],
        )
        assert position is not None and row, f"no stored position for {market}"
        assert abs(row[0][0] - position.quantity) <= 1e-12
        assert abs(row[0][1] - position.realized_pnl) <= 1e-12
    return len(orders)
