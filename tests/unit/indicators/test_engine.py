"""The engine: parameters, the missing-candle policy, and live, batched and restored updates
giving the very numbers of the batch path."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from services.indicators import batch, kernels
from services.indicators.engine import (
    IndicatorEngine,
    IndicatorParams,
    compute_frame,
    fill_gaps,
    warm_up_jit,
)
from shared.messages import TIMEFRAME_MS, CandleClosed, IndicatorsComputed
from tests.conftest import ohlcv_path

Array = npt.NDArray[np.float64]
MESSAGE_FIELDS = (*kernels.OUTPUT_NAMES, "prev_stoch_k", "prev_band_lower", "prev_band_upper")
CUSTOM = IndicatorParams(
    rsi_period=6,
    stoch_period=9,
    stoch_k_period=2,
    stoch_d_period=4,
    stochrsi_fastk_period=5,
    stochrsi_fastd_period=2,
    atr_period=7,
    atr_ma_period=12,
    sensitivity=1.1,
)


class Series:
    """One market's stored candles, as rows of arrays and as CandleClosed messages."""

    def __init__(self, path: Path, exchange: str = "binance") -> None:
        rows = np.array(json.loads(path.read_text()), dtype=np.float64)
        symbol, timeframe = path.stem.rsplit("-", 1)
        self.market = (exchange, symbol.replace("_", "/"), timeframe)
        self.timeframe_ms = TIMEFRAME_MS[timeframe]
        self.times = rows[:, 0].astype(np.int64)
        self.high, self.low, self.close = rows[:, 2].copy(), rows[:, 3].copy(), rows[:, 4].copy()
        self.candles = [
            CandleClosed(
                exchange=exchange,
                symbol=self.market[1],
                timeframe=timeframe,
                open_time_ms=int(row[0]),
                open=row[1],
                high=row[2],
                low=row[3],
                close=row[4],
                volume=row[5],
                source="test",
                closed_at_ms=int(row[0]) + self.timeframe_ms + 7,
            )
            for row in rows
        ]

    def frame(self, params: IndicatorParams, *, fill: bool = True) -> dict[str, npt.NDArray[Any]]:
        return compute_frame(
            self.times,
            self.high,
            self.low,
            self.close,
            timeframe_ms=self.timeframe_ms,
            params=params,
            fill_gaps=fill,
        )


def assert_messages_match_frame(
    messages: list[IndicatorsComputed],
    frame: dict[str, npt.NDArray[Any]],
    rows: slice = slice(None),
) -> None:
    """Every field of the messages equals the batch frame's rows, bit for bit (NaN included)."""
    np.testing.assert_array_equal([m.open_time_ms for m in messages], frame["open_time_ms"][rows])
    np.testing.assert_array_equal([m.close for m in messages], frame["close"][rows])
    for name in MESSAGE_FIELDS:
        got = np.array([getattr(m, name) for m in messages])
        np.testing.assert_array_equal(got, frame[name][rows], err_msg=name)


def by_time(*series: Series) -> list[CandleClosed]:
    """Return the candles of several markets merged in time order."""
    merged = [candle for s in series for candle in s.candles]
    return sorted(merged, key=lambda candle: candle.open_time_ms)


def windows(candles: list[CandleClosed], width_ms: int) -> Iterator[list[CandleClosed]]:
    """Group time-ordered candles into batches of `width_ms` (what a consumer reads at once)."""
    for _, window in itertools.groupby(candles, key=lambda c: c.open_time_ms // width_ms):
        yield list(window)


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"rsi_period": 0},
        {"atr_ma_period": -3},
        {"stoch_period": 2.5},
        {"stoch_k_period": True},
        {"min_width": -1.0},
        {"max_width": -0.1},
        {"sensitivity": 0.0},
        {"sensitivity": -1.0},
        {"base_lower": float("nan")},
    ],
)
def test_params_reject_invalid_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        IndicatorParams(**bad)  # type: ignore[arg-type]


def test_params_pass_every_field_to_the_kernels_in_their_order() -> None:
    assert CUSTOM.kernel_args == tuple(getattr(CUSTOM, name) for name in kernels.PARAM_NAMES)
    integral = IndicatorParams(base_lower=30, min_width=12)
    assert isinstance(integral.base_lower, float) and isinstance(integral.min_width, float)


@pytest.mark.parametrize("params", [IndicatorParams(), CUSTOM], ids=["default", "custom"])
def test_warm_up_candles_is_the_first_index_with_every_output(params: IndicatorParams) -> None:
    rng = np.random.default_rng(2)
    close = 50.0 + np.cumsum(rng.normal(size=200))
    columns = np.array(batch.compute_batch(close + 1, close - 1, close, *params.kernel_args))
    complete = np.asarray(~np.isnan(columns).any(axis=0))
    assert complete.argmax() == params.warm_up_candles
    assert complete[params.warm_up_candles :].all()


# --- missing candles --------------------------------------------------------------------------


def test_fill_gaps_inserts_flat_candles_at_the_previous_close() -> None:
    minute = 60_000
    times, o, h, lo, c, v, is_real = fill_gaps(
        [0, minute, 4 * minute, 5 * minute],
        [1.0, 2.0, 3.0, 4.0],
        [1.5, 2.5, 3.5, 4.5],
        [0.5, 1.5, 2.5, 3.5],
        [1.2, 2.2, 3.2, 4.2],
        [10.0, 20.0, 30.0, 40.0],
        minute,
    )
    np.testing.assert_array_equal(times, np.arange(6) * minute)
    np.testing.assert_array_equal(o, [1.0, 2.0, 2.2, 2.2, 3.0, 4.0])
    np.testing.assert_array_equal(h, [1.5, 2.5, 2.2, 2.2, 3.5, 4.5])
    np.testing.assert_array_equal(lo, [0.5, 1.5, 2.2, 2.2, 2.5, 3.5])
    np.testing.assert_array_equal(c, [1.2, 2.2, 2.2, 2.2, 3.2, 4.2])
    np.testing.assert_array_equal(v, [10.0, 20.0, 0.0, 0.0, 30.0, 40.0])
    np.testing.assert_array_equal(is_real, [True, True, False, False, True, True])


def test_fill_gaps_keeps_complete_series_and_fills_only_whole_timeframes() -> None:
    times, *_, is_real = fill_gaps(
        [0, 300_000, 600_000], [1] * 3, [1] * 3, [1] * 3, [1] * 3, [1] * 3, 300_000
    )
    assert is_real.all() and times.tolist() == [0, 300_000, 600_000]
    times, *_, is_real = fill_gaps(
        [0, 150_000], [1] * 2, [1] * 2, [1] * 2, [1] * 2, [1] * 2, 60_000
    )
    assert times.tolist() == [0, 60_000, 120_000, 150_000]  # off-grid row: fill up to it
    assert is_real.tolist() == [True, False, False, True]


@pytest.mark.parametrize("times", [[0, 60_000, 60_000], [120_000, 60_000]])
def test_fill_gaps_rejects_times_not_strictly_increasing(times: list[int]) -> None:
    ones = [1.0] * len(times)
    with pytest.raises(ValueError, match="strictly increasing"):
        fill_gaps(times, ones, ones, ones, ones, ones, 60_000)


def test_compute_frame_is_the_batch_over_filled_candles_at_the_input_rows() -> None:
    series = Series(ohlcv_path("XMR_BTC-1m.json"))
    frame = series.frame(IndicatorParams())
    _, _, high, low, close, _, is_real = fill_gaps(
        series.times, series.close, series.high, series.low, series.close, series.close, 60_000
    )
    assert (~is_real).sum() > 1_000  # the file really has gaps
    filled = np.array(batch.compute_batch(high, low, close, *IndicatorParams().kernel_args))
    np.testing.assert_array_equal(frame["open_time_ms"], series.times)
    np.testing.assert_array_equal(frame["close"], series.close)
    for k, name in enumerate(kernels.OUTPUT_NAMES):
        np.testing.assert_array_equal(frame[name], filled[k][is_real], err_msg=name)
    real_rows = np.flatnonzero(is_real)[1:]
    np.testing.assert_array_equal(frame["prev_stoch_k"][1:], filled[1][real_rows - 1])
    np.testing.assert_array_equal(frame["prev_band_upper"][1:], filled[8][real_rows - 1])


# --- live updates -----------------------------------------------------------------------------


def test_one_candle_at_a_time_equals_batch_with_gaps_filled() -> None:
    series = Series(ohlcv_path("XMR_BTC-1m.json"))
    engine = IndicatorEngine()
    messages = [m for candle in series.candles for m in engine.update([candle])]
    assert_messages_match_frame(messages, series.frame(IndicatorParams()))
    assert [m.candle_closed_at_ms for m in messages] == [c.closed_at_ms for c in series.candles]
    assert engine.last_time(series.market) == series.times[-1]


@pytest.mark.parametrize("params", [IndicatorParams(), CUSTOM], ids=["default", "custom"])
def test_batches_of_many_markets_equal_batch_per_market(params: IndicatorParams) -> None:
    names = ["XMR_BTC-1m.json", "DASH_BTC-1m.json", "ETH_BTC-1m.json", "ZEC_BTC-5m.json"]
    markets = [Series(ohlcv_path(name)) for name in names]
    markets.append(Series(ohlcv_path("XMR_BTC-1m.json"), exchange="kraken"))  # same symbol
    engine = IndicatorEngine(params, capacity=1)  # grows as markets appear
    messages = [
        m for batch in windows(by_time(*markets), 15 * 60_000) for m in engine.update(batch)
    ]
    for series in markets:
        own = [m for m in messages if (m.exchange, m.symbol, m.timeframe) == series.market]
        assert_messages_match_frame(own, series.frame(params))
    assert sorted(engine.markets) == sorted(series.market for series in markets)


def test_one_kernel_call_per_round_of_candles() -> None:
    def candle(symbol: str, minute: int, close: float) -> CandleClosed:
        return CandleClosed(
            exchange="x", symbol=symbol, timeframe="1m", open_time_ms=minute * 60_000,
            open=close, high=close, low=close, close=close, volume=1.0, source="test",
            closed_at_ms=(minute + 1) * 60_000,
        )  # fmt: skip

    engine = IndicatorEngine()
    engine.update([candle(s, 0, 1.0) for s in ("A", "B", "C")])
    assert engine.kernel_calls == 1
    engine.update([candle("A", 1, 2.0), candle("B", 3, 2.0), candle("C", 1, 2.0)])
    assert engine.kernel_calls == 1 + 3  # B's two filled minutes come first
    engine.update([candle("A", 2, 3.0), candle("A", 3, 3.0)])  # same market twice
    assert engine.kernel_calls == 4 + 2


def test_candles_at_or_before_the_last_time_are_skipped() -> None:
    series = Series(ohlcv_path("ETH_BTC-1m.json"))
    frame = series.frame(IndicatorParams())
    engine = IndicatorEngine()
    first = engine.update(series.candles[:500])
    replayed = engine.update([series.candles[499], series.candles[200], series.candles[499]])
    assert replayed == []
    rest = engine.update([series.candles[499], *series.candles[500:700], series.candles[650]])
    assert_messages_match_frame(first + rest, frame, slice(0, 700))
    assert engine.last_time(series.market) == series.times[699]


def test_without_gap_filling_rows_are_taken_as_given() -> None:
    series = Series(ohlcv_path("XMR_BTC-1m.json"))
    engine = IndicatorEngine(fill_gaps=False)
    messages = [m for batch in windows(series.candles, 30 * 60_000) for m in engine.update(batch)]
    frame = series.frame(IndicatorParams(), fill=False)
    assert_messages_match_frame(messages, frame)
    assert not np.array_equal(frame["rsi"], series.frame(IndicatorParams())["rsi"], equal_nan=True)


def test_invalid_candles_raise_before_any_state_changes() -> None:
    series = Series(ohlcv_path("ETH_BTC-1m.json"))
    engine = IndicatorEngine()
    engine.update(series.candles[:100])
    broken = msgspec.structs.replace(series.candles[101], close=float("nan"))
    unknown = msgspec.structs.replace(series.candles[100], timeframe="7m")
    for bad in (broken, unknown):
        with pytest.raises(ValueError):
            engine.update([series.candles[100], bad])
    assert engine.last_time(series.market) == series.times[99]
    messages = engine.update(series.candles[100:300])
    assert_messages_match_frame(messages, series.frame(IndicatorParams()), slice(100, 300))


# --- restarts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["XMR_BTC-1m.json", "ZEC_BTC-5m.json"])
@pytest.mark.parametrize("params", [IndicatorParams(), CUSTOM], ids=["default", "custom"])
def test_restart_from_stored_candles_continues_exactly(name: str, params: IndicatorParams) -> None:
    series = Series(ohlcv_path(name))
    split = int(series.times.size * 0.6)
    stored = slice(0, split)  # the store holds real candles only: gaps stay gaps
    engine = IndicatorEngine(params)
    engine.warm(
        series.market, series.times[stored], series.high[stored], series.low[stored],
        series.close[stored],
    )  # fmt: skip
    assert engine.last_time(series.market) == series.times[split - 1]
    rest = series.candles[split - 5 :]  # the first five were already stored: skipped
    messages = [m for batch in windows(rest, 10 * 60_000) for m in engine.update(batch)]
    assert_messages_match_frame(messages, series.frame(params), slice(split, None))


@pytest.mark.parametrize("name", ["XMR_BTC-1m.json", "ZEC_BTC-5m.json"])
def test_restart_from_the_last_1000_stored_candles_gives_the_same_floats(name: str) -> None:
    # Wilder averages forget their seed as (13/14)^n: a bounded history is enough.
    series = Series(ohlcv_path(name))
    split = int(series.times.size * 0.6)
    tail = slice(split - 1_000, split)
    engine = IndicatorEngine()
    engine.warm(
        series.market, series.times[tail], series.high[tail], series.low[tail], series.close[tail]
    )
    messages = engine.update(series.candles[split:])
    assert_messages_match_frame(messages, series.frame(IndicatorParams()), slice(split, None))


def test_warm_replaces_the_state_a_market_had() -> None:
    series = Series(ohlcv_path("ETH_BTC-1m.json"))
    engine = IndicatorEngine()
    engine.update(series.candles[:50])
    engine.warm(
        series.market, series.times[:400], series.high[:400], series.low[:400], series.close[:400]
    )
    messages = engine.update(series.candles[400:450])
    assert_messages_match_frame(messages, series.frame(IndicatorParams()), slice(400, 450))


def test_warm_up_jit_runs_every_kernel_with_the_given_params() -> None:
    warm_up_jit(CUSTOM)
    assert kernels.update_many.signatures and batch.compute_batch_into.signatures
