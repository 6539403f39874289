"""StochRsiBands: crossings of K through the dynamic bands, and nothing else."""

from __future__ import annotations

import math

import pytest

from services.signals.strategy import StochRsiBands
from shared.messages import IndicatorsComputed


def indicators(
    prev_k: float,
    k: float,
    *,
    lower: float = 35.0,
    upper: float = 90.0,
    prev_lower: float | None = None,
    prev_upper: float | None = None,
) -> IndicatorsComputed:
    return IndicatorsComputed(
        exchange="binance",
        symbol="ETH/BTC",
        timeframe="1m",
        open_time_ms=1_516_423_920_000,
        close=0.1,
        rsi=50.0,
        stoch_k=k,
        stoch_d=k,
        stochrsi_fastk=k,
        stochrsi_fastd=k,
        atr=0.001,
        volatility_ratio=1.0,
        band_lower=lower,
        band_upper=upper,
        prev_stoch_k=prev_k,
        prev_band_lower=lower if prev_lower is None else prev_lower,
        prev_band_upper=upper if prev_upper is None else prev_upper,
        candle_closed_at_ms=1,
    )


def test_k_crossing_up_through_the_lower_band_is_a_buy_at_the_close() -> None:
    signal = StochRsiBands().evaluate(indicators(30.0, 40.0))
    assert signal is not None and signal.side == "buy" and signal.price == 0.1
    assert signal.signal_id == "stochrsi_bands:binance:ETH/BTC:1m:1516423920000"


def test_k_crossing_down_through_the_upper_band_is_a_sell() -> None:
    signal = StochRsiBands().evaluate(indicators(95.0, 85.0))
    assert signal is not None and signal.side == "sell"


@pytest.mark.parametrize(("prev_k", "k"), [(40.0, 50.0), (30.0, 32.0), (50.0, 30.0), (80.0, 95.0)])
def test_k_moving_without_crossing_a_band_gives_nothing(prev_k: float, k: float) -> None:
    assert StochRsiBands().evaluate(indicators(prev_k, k)) is None


def test_a_band_moving_under_a_flat_k_counts_as_a_cross() -> None:
    # K stays at 38 while the lower band drops from 40 to 36: K is now above it
    signal = StochRsiBands().evaluate(indicators(38.0, 38.0, lower=36.0, prev_lower=40.0))
    assert signal is not None and signal.side == "buy"


def test_warming_up_indicators_give_nothing() -> None:
    assert StochRsiBands().evaluate(indicators(math.nan, 40.0)) is None
    assert StochRsiBands().evaluate(indicators(30.0, 40.0, prev_lower=math.nan)) is None


def test_the_same_candle_gives_the_same_signal_id_every_time() -> None:
    first = StochRsiBands().evaluate(indicators(30.0, 40.0))
    again = StochRsiBands().evaluate(indicators(30.0, 40.0))
    assert first == again
