"""The strategy's batch path (backtests) decides exactly what its per-message path (live) does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.strategy import StochRsiBands
from shared.messages import IndicatorsComputed
from tests.conftest import ohlcv_path


@pytest.mark.parametrize("name", ["ETH_BTC-1m.json", "XMR_BTC-1m.json", "ZEC_BTC-5m.json"])
def test_batch_signals_equal_the_live_evaluation_of_every_row(name: str) -> None:
    rows = np.array(json.loads(ohlcv_path(name).read_text()), dtype=float)
    timeframe_ms = int(np.median(np.diff(rows[:, 0])))
    frame = compute_frame(
        rows[:, 0].astype(np.int64), rows[:, 2], rows[:, 3], rows[:, 4],
        timeframe_ms=timeframe_ms, params=IndicatorParams(),
    )  # fmt: skip
    strategy = StochRsiBands()

    batch = strategy.signals(frame)

    live = np.zeros(len(rows), dtype=np.int8)
    for i in range(len(rows)):
        values = {key: float(frame[key][i]) for key in ("stoch_k", "band_lower", "band_upper")}
        values |= {f"prev_{key}": float(frame[f"prev_{key}"][i]) for key in values}
        message = IndicatorsComputed(
            exchange="binance", symbol="X/BTC", timeframe="1m",
            open_time_ms=int(frame["open_time_ms"][i]), close=float(frame["close"][i]),
            rsi=0.0, stoch_d=0.0, stochrsi_fastk=0.0, stochrsi_fastd=0.0, atr=0.0,
            volatility_ratio=1.0, candle_closed_at_ms=0, **values,
        )  # fmt: skip
        signal = strategy.evaluate(message)
        live[i] = 0 if signal is None else (1 if signal.side == "buy" else -1)
    assert np.array_equal(batch, live)
    assert (batch == 1).sum() > 10 and (batch == -1).sum() > 10
