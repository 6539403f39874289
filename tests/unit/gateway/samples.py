"""Sample wire messages for gateway tests: real ETH/BTC candles and one trade's messages."""

from __future__ import annotations

import json
import math

from shared.messages import (
    CandleClosed,
    IndicatorsComputed,
    OrderFilled,
    OrderPlaced,
    PositionChanged,
    SignalEmitted,
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
