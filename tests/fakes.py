"""Small builders shared by the tests: real candles as wire messages, one trade's messages,
a real market's ticks."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from services.executor.records import candle_of, signal_of
from services.executor.settings import ExecutorSettings
from services.executor.trader import Fill, Trader
from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.strategy import StochRsiBands
from shared.messages import (
    TIMEFRAME_MS,
    CandleClosed,
    IndicatorsComputed,
    OrderFilled,
    OrderPlaced,
    PositionChanged,
    SignalEmitted,
    Tick,
    client_order_id,
    signal_id,
)
from tests.conftest import ohlcv_path

OPEN_TIME_MS = 1_516_423_980_000  # the first candle of ETH_BTC-1m.json


def real_candles(count: int, name: str = "ETH_BTC-1m.json") -> list[CandleClosed]:
    """Return the first `count` candles of a real ccxt file as wire messages."""
    symbol = name.split("-")[0].replace("_", "/")
    rows = json.loads(ohlcv_path(name).read_text())[:count]
    return [
        CandleClosed(
            exchange="binance",
            symbol=symbol,
            timeframe="1m",
            open_time_ms=int(ms),
            open=o,
            high=h,
            low=low,
            close=c,
            volume=v,
            source="replay",
            closed_at_ms=int(ms) + 60_000,
        )
        for ms, o, h, low, c, v in rows
    ]


def candle(symbol: str = "ETH/BTC", open_time_ms: int = OPEN_TIME_MS) -> CandleClosed:
    return CandleClosed(
        exchange="binance",
        symbol=symbol,
        timeframe="1m",
        open_time_ms=open_time_ms,
        open=0.0894,
        high=0.0894,
        low=0.0891,
        close=0.0891,
        volume=81.45,
        source="replay",
        closed_at_ms=open_time_ms + 60_000,
    )


def indicators(symbol: str = "ETH/BTC", open_time_ms: int = OPEN_TIME_MS) -> IndicatorsComputed:
    """Indicators of a candle early in the series: RSI and the previous K still warming up."""
    return IndicatorsComputed(
        exchange="binance",
        symbol=symbol,
        timeframe="1m",
        open_time_ms=open_time_ms,
        close=0.0891,
        rsi=math.nan,
        stoch_k=50.0,
        stoch_d=48.5,
        stochrsi_fastk=50.0,
        stochrsi_fastd=50.0,
        atr=0.0003,
        volatility_ratio=1.0,
        band_lower=35.0,
        band_upper=90.0,
        prev_stoch_k=math.nan,
        prev_band_lower=35.0,
        prev_band_upper=90.0,
        candle_closed_at_ms=open_time_ms + 60_000,
    )


def signal(symbol: str = "ETH/BTC", open_time_ms: int = OPEN_TIME_MS) -> SignalEmitted:
    return SignalEmitted(
        signal_id=signal_id("stochrsi_bands", "binance", symbol, "1m", open_time_ms),
        strategy="stochrsi_bands",
        exchange="binance",
        symbol=symbol,
        timeframe="1m",
        open_time_ms=open_time_ms,
        side="buy",
        price=0.0891,
        reason="k crossed the lower band",
        candle_closed_at_ms=open_time_ms + 60_000,
    )


def order(symbol: str = "ETH/BTC", open_time_ms: int = OPEN_TIME_MS) -> OrderPlaced:
    emitted = signal(symbol, open_time_ms)
    return OrderPlaced(
        client_order_id=client_order_id(emitted.signal_id),
        signal_id=emitted.signal_id,
        exchange="binance",
        symbol=symbol,
        side="buy",
        quantity=1.5,
        created_at_ms=open_time_ms + 61_000,
        candle_closed_at_ms=open_time_ms + 60_000,
    )


def fill(symbol: str = "ETH/BTC", open_time_ms: int = OPEN_TIME_MS) -> OrderFilled:
    placed = order(symbol, open_time_ms)
    return OrderFilled(
        fill_id=placed.client_order_id + ":1",
        client_order_id=placed.client_order_id,
        exchange="binance",
        symbol=symbol,
        side="buy",
        price=0.0891,
        quantity=1.5,
        fee=0.0001,
        filled_at_ms=open_time_ms + 61_500,
    )


def position(symbol: str = "ETH/BTC", open_time_ms: int = OPEN_TIME_MS) -> PositionChanged:
    filled = fill(symbol, open_time_ms)
    return PositionChanged(
        exchange="binance",
        symbol=symbol,
        quantity=1.5,
        avg_price=0.0891,
        realized_pnl=0.0,
        updated_at_ms=filled.filled_at_ms,
        cause_fill_id=filled.fill_id,
    )


def load_candles(name: str, symbol: str, timeframe: str, count: int) -> list[CandleClosed]:
    """Return the first `count` real candles of a data file as wire messages."""
    with ohlcv_path(name).open() as file:
        rows = json.load(file)[:count]
    return [
        CandleClosed(
            exchange="binance",
            symbol=symbol,
            timeframe=timeframe,
            open_time_ms=int(ms),
            open=float(o),
            high=float(h),
            low=float(low),
            close=float(c),
            volume=float(v),
            source="replay",
            closed_at_ms=int(ms) + TIMEFRAME_MS[timeframe],
        )
        for ms, o, h, low, c, v in rows
    ]


def indicators_for(candles: list[CandleClosed]) -> list[IndicatorsComputed]:
    """Return indicator messages for candles, NaN during a 14-candle warm-up as the kernels do."""
    out = []
    for i, candle in enumerate(candles):
        warm = i >= 14
        value = (lambda x: x) if warm else (lambda x: math.nan)
        out.append(
            IndicatorsComputed(
                exchange=candle.exchange,
                symbol=candle.symbol,
                timeframe=candle.timeframe,
                open_time_ms=candle.open_time_ms,
                close=candle.close,
                rsi=value(40.0 + i % 20),
                stoch_k=value(10.0 + i % 80),
                stoch_d=value(12.5),
                stochrsi_fastk=value(i % 100 / 1.0),
                stochrsi_fastd=value(33.3),
                atr=value(candle.high - candle.low),
                volatility_ratio=value(1.25),
                band_lower=value(candle.low * 0.99),
                band_upper=value(candle.high * 1.01),
                prev_stoch_k=value(9.0) if i > 14 else math.nan,
                prev_band_lower=value(candle.low) if i > 14 else math.nan,
                prev_band_upper=value(candle.high) if i > 14 else math.nan,
                candle_closed_at_ms=candle.closed_at_ms,
            )
        )
    return out


def execution(signal: str, *, fill_id: str, quantity: float = 2.0) -> dict[str, Any]:
    """Return the order, fill and position messages the executor records for one signal."""
    order_id = client_order_id(signal)
    return {
        "order": OrderPlaced(
            client_order_id=order_id,
            signal_id=signal,
            exchange="binance",
            symbol="ETH/BTC",
            side="buy",
            quantity=quantity,
            created_at_ms=1_700_000_000_000,
            candle_closed_at_ms=1_699_999_999_000,
        ),
        "fill": OrderFilled(
            fill_id=fill_id,
            client_order_id=order_id,
            exchange="binance",
            symbol="ETH/BTC",
            side="buy",
            price=0.05,
            quantity=quantity,
            fee=0.0001,
            filled_at_ms=1_700_000_000_050,
        ),
        "position": PositionChanged(
            exchange="binance",
            symbol="ETH/BTC",
            quantity=quantity,
            avg_price=0.05,
            realized_pnl=0.0,
            updated_at_ms=1_700_000_000_050,
            cause_fill_id=fill_id,
        ),
    }


def nan_as_none(row: Any) -> tuple[Any, ...]:
    """Return a row's fields with NaN as None, so rows compare equal when NaN matches NaN."""
    values = (getattr(row, name) for name in row.__dataclass_fields__)
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values)


def ticks_of(name: str, symbol: str) -> list[Tick]:
    """A real file's candles as the signals service would hand them to the executor."""
    rows = np.array(json.loads(ohlcv_path(name).read_text()), dtype=float)
    frame = compute_frame(
        rows[:, 0].astype(np.int64), rows[:, 2], rows[:, 3], rows[:, 4],
        timeframe_ms=60_000, params=IndicatorParams(),
    )  # fmt: skip
    sides = StochRsiBands().signals(frame)
    ticks = []
    for i, row in enumerate(rows.tolist()):
        t = int(row[0])
        side = {1: "buy", -1: "sell"}.get(int(sides[i]), "")
        sid = signal_id("stochrsi_bands", "binance", symbol, "1m", t) if side else ""
        ticks.append(
            Tick("binance", symbol, "1m", t, row[1], row[2], row[3], row[4],
                 float(frame["atr"][i]), side, sid, t + 60_000)
        )  # fmt: skip
    return ticks


def trade_directly(
    ticks: list[Tick], settings: ExecutorSettings | None = None
) -> tuple[list[Fill], Trader, set[str]]:
    """The reference trader: one Trader fed each tick once, in order (the candle, then its
    signal), as no crash ever happened. Returns its fills, the trader, and the signals decided."""
    trader = (settings or ExecutorSettings()).new_trader()
    fills: list[Fill] = []
    decided: set[str] = set()
    for tick in ticks:
        if not trader.is_new(tick.symbol, tick.open_time_ms):
            continue  # delivered twice
        fills += trader.on_candle(candle_of(tick), atr=tick.atr)
        if tick.side:
            trader.on_signal(signal_of(tick), atr=tick.atr)
            decided.add(tick.signal_id)
    return fills, trader, decided
