"""Kernels against TA-Lib on real and generated candles, the bands against their formula, the
incremental shape against the batch one (over series and windows longer than the batch's
blocks), and selected outputs against all of them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import talib

from services.indicators import batch as batch_kernels
from services.indicators import kernels
from services.indicators.engine import IndicatorParams
from tests.conftest import DATA_DIR

Array = npt.NDArray[np.float64]
REAL_FILES = sorted(DATA_DIR.glob("*.json"))
CUSTOM = IndicatorParams(
    rsi_period=9,
    stoch_period=10,
    stoch_k_period=4,
    stoch_d_period=2,
    stochrsi_fastk_period=7,
    stochrsi_fastd_period=5,
    atr_period=5,
    atr_ma_period=11,
)
# Bands whose every branch shows up on real candles: high and low volatility, neither, narrow.
ALL_BRANCHES = IndicatorParams(
    base_lower=45.0,
    base_upper=60.0,
    sensitivity=1.25,
    adjustment_factor=0.5,
    min_width=20.0,
    max_width=30.0,
)


def load_hlc(path: Path) -> tuple[Array, Array, Array]:
    """Return high, low and close of a ccxt OHLCV file ([ms, o, h, l, c, v] rows)."""
    rows = np.array(json.loads(path.read_text()), dtype=np.float64)
    return rows[:, 2].copy(), rows[:, 3].copy(), rows[:, 4].copy()


def talib_reference(high: Array, low: Array, close: Array, p: IndicatorParams) -> dict[str, Array]:
    """Return the TA-Lib calls each kernel output is specified by."""
    rsi = talib.RSI(close, p.rsi_period)
    # Every moving average left at TA-Lib's default matype, 0: SMA.
    stoch_k, stoch_d = talib.STOCH(
        rsi,
        rsi,
        rsi,
        fastk_period=p.stoch_period,
        slowk_period=p.stoch_k_period,
        slowd_period=p.stoch_d_period,
    )
    fastk, fastd = talib.STOCHRSI(
        close,
        timeperiod=p.rsi_period,
        fastk_period=p.stochrsi_fastk_period,
        fastd_period=p.stochrsi_fastd_period,
    )
    atr = talib.ATR(high, low, close, p.atr_period)
    return {
        "rsi": rsi,
        "stoch_k": stoch_k,
        "stoch_d": stoch_d,
        "stochrsi_fastk": fastk,
        "stochrsi_fastd": fastd,
        "atr": atr,
    }


def batch(high: Array, low: Array, close: Array, p: IndicatorParams) -> dict[str, Array]:
    columns = batch_kernels.compute_batch(high, low, close, *p.kernel_args)
    return dict(zip(kernels.OUTPUT_NAMES, columns, strict=True))


def assert_matches_talib(high: Array, low: Array, close: Array, p: IndicatorParams) -> None:
    ours = batch(high, low, close, p)
    for name, expected in talib_reference(high, low, close, p).items():
        np.testing.assert_array_equal(np.isnan(ours[name]), np.isnan(expected), err_msg=name)
        defined = ~np.isnan(expected)
        assert defined.any(), name
        np.testing.assert_allclose(ours[name][defined], expected[defined], rtol=0, atol=1e-9)


def reference_bands(atr: Array, p: IndicatorParams) -> dict[str, Array]:
    """The dynamic-band formula, transcribed as written with pandas and NumPy."""
    atr_series = pd.Series(atr)
    atr_ma = atr_series.rolling(p.atr_ma_period).mean()
    volatility_ratio = (atr_series / atr_ma).to_numpy()
    high_vol = volatility_ratio > p.sensitivity
    low_vol = volatility_ratio < 1 / p.sensitivity
    expansion = (volatility_ratio - 1) * p.adjustment_factor * 100
    contraction = (1 - volatility_ratio) * p.adjustment_factor * 100
    bl, bu = p.base_lower, p.base_upper
    lower = np.where(
        high_vol,
        np.maximum(bl - expansion, bl - p.max_width),
        np.where(low_vol, np.minimum(bl + contraction, bl + p.min_width), bl),
    )
    upper = np.where(
        high_vol,
        np.minimum(bu + expansion, bu + p.max_width),
        np.where(low_vol, np.maximum(bu - contraction, bu - p.min_width), bu),
    )
    narrow = (upper - lower) < p.min_width
    mid = (lower + upper) / 2
    lower = np.where(narrow, mid - p.min_width / 2, lower)
    upper = np.where(narrow, mid + p.min_width / 2, upper)
    return {
        "volatility_ratio": volatility_ratio,
        "band_lower": lower,
        "band_upper": upper,
        "high_vol": high_vol,
        "low_vol": low_vol & ~high_vol,
        "neither": ~low_vol & ~high_vol,
        "narrow": narrow,
    }


def random_walk(rng: np.random.Generator, n: int, scale: float) -> tuple[Array, Array, Array]:
    close = scale * (100.0 + np.cumsum(rng.normal(size=n)))
    high = close + scale * rng.random(n)
    low = close - scale * rng.random(n)
    return high, low, close


def generated_cases() -> dict[str, tuple[Array, Array, Array]]:
    rng = np.random.default_rng(7)
    flat = np.full(400, 0.0123)
    spike_close = np.full(400, 2.5)
    spike_close[200] = 2_500_000.0
    runs_high, runs_low, runs_close = random_walk(rng, 1_200, 1.0)
    for start in (100, 400, 700):  # long constant runs: every change in RSI's window is zero
        runs_close[start : start + 150] = runs_close[start - 1]
        runs_high[start : start + 150] = runs_close[start - 1]
        runs_low[start : start + 150] = runs_close[start - 1]
    tiny = random_walk(rng, 1_000, 1e-8)  # satoshi-sized prices
    return {
        "flat": (flat, flat, flat),
        "huge_spike": (spike_close, spike_close, spike_close),
        "constant_runs": (runs_high, runs_low, runs_close),
        "tiny_prices": tiny,
    }


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda path: path.name)
def test_batch_matches_talib_on_real_candles(path: Path) -> None:
    assert_matches_talib(*load_hlc(path), IndicatorParams())


@pytest.mark.parametrize("path", REAL_FILES[:3], ids=lambda path: path.name)
def test_batch_matches_talib_with_other_periods(path: Path) -> None:
    assert_matches_talib(*load_hlc(path), CUSTOM)


@pytest.mark.parametrize("case", sorted(generated_cases()))
def test_batch_matches_talib_on_edge_cases_and_is_nan_free_after_warm_up(case: str) -> None:
    high, low, close = generated_cases()[case]
    params = IndicatorParams()
    assert_matches_talib(high, low, close, params)
    for name, column in batch(high, low, close, params).items():
        assert not np.isnan(column[params.warm_up_candles :]).any(), name


def test_flat_market_has_zero_rsi_and_stochastics_and_base_bands() -> None:
    flat = np.full(100, 7.0)
    out = batch(flat, flat, flat, IndicatorParams())
    warm = IndicatorParams().warm_up_candles
    for name in ("rsi", "stoch_k", "stoch_d", "stochrsi_fastk", "stochrsi_fastd", "atr"):
        assert (out[name][warm:] == 0.0).all(), name
    # 0 / 0: reported as unchanged volatility, so NaN still means only "warming up".
    assert (out["volatility_ratio"][warm:] == 1.0).all()
    assert (out["band_lower"][warm:] == 35.0).all()
    assert (out["band_upper"][warm:] == 100.0).all()


@pytest.mark.parametrize("params", [IndicatorParams(), ALL_BRANCHES], ids=["default", "branches"])
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda path: path.name)
def test_bands_follow_the_formula(path: Path, params: IndicatorParams) -> None:
    high, low, close = load_hlc(path)
    ours = batch(high, low, close, params)
    expected = reference_bands(talib.ATR(high, low, close, params.atr_period), params)
    first = params.atr_period + params.atr_ma_period - 1
    for name in ("volatility_ratio", "band_lower", "band_upper"):
        assert np.isnan(ours[name][:first]).all(), name
        np.testing.assert_allclose(
            ours[name][first:], expected[name][first:], rtol=0, atol=1e-9, err_msg=name
        )
    if params is ALL_BRANCHES:
        for branch in ("high_vol", "low_vol", "neither", "narrow"):
            assert expected[branch][first:].any(), branch


def test_bands_follow_the_formula_when_a_flat_window_makes_the_ratio_zero_over_zero() -> None:
    rng = np.random.default_rng(5)
    close = np.full(300, 4.0)
    close[150:] += np.cumsum(rng.normal(size=150))  # flat from the start, then moving
    high, low = close + 0.5 * (np.arange(300) >= 150), close - 0.5 * (np.arange(300) >= 150)
    for params in (IndicatorParams(), ALL_BRANCHES):
        ours = batch(high, low, close, params)
        expected = reference_bands(talib.ATR(high, low, close, params.atr_period), params)
        first = params.atr_period + params.atr_ma_period - 1
        zero_over_zero = np.isnan(expected["volatility_ratio"][first:])
        assert zero_over_zero[:50].all() and not zero_over_zero[-50:].any()
        assert (ours["volatility_ratio"][first:][zero_over_zero] == 1.0).all()
        np.testing.assert_allclose(
            ours["volatility_ratio"][first:][~zero_over_zero],
            expected["volatility_ratio"][first:][~zero_over_zero],
            rtol=0,
            atol=1e-9,
        )
        for name in ("band_lower", "band_upper"):
            np.testing.assert_allclose(ours[name][first:], expected[name][first:], atol=1e-9)


def test_batch_into_numpy_array_equals_batch() -> None:
    high, low, close = random_walk(np.random.default_rng(1), 500, 3.0)
    out = np.empty((kernels.N_OUTPUTS, close.size))
    batch_kernels.compute_batch_into(high, low, close, out, *CUSTOM.kernel_args)
    np.testing.assert_array_equal(
        out, np.array(batch_kernels.compute_batch(high, low, close, *CUSTOM.kernel_args))
    )


@pytest.mark.parametrize("params", [IndicatorParams(), CUSTOM], ids=["default", "custom"])
def test_update_many_for_10000_markets_in_one_call_equals_per_market_results(
    params: IndicatorParams,
) -> None:
    rng = np.random.default_rng(3)
    n_markets, n_candles = 10_000, 60
    scales = 10.0 ** rng.uniform(-8, 4, size=n_markets)
    close = scales[:, None] * (100.0 + np.cumsum(rng.normal(size=(n_markets, n_candles)), axis=1))
    close[::7, 20:45] = close[::7, 19:20]  # some markets go flat for a while
    high = close + scales[:, None] * rng.random((n_markets, n_candles))
    low = close - scales[:, None] * rng.random((n_markets, n_candles))
    args = params.kernel_args

    state = kernels.new_state(n_markets, params.state_width)
    together = np.empty((n_candles, n_markets, kernels.N_OUTPUTS))
    for t in range(n_candles):
        rows = rng.permutation(n_markets).astype(np.int64)  # any order of markets in a call
        out = np.empty((n_markets, kernels.N_OUTPUTS))
        kernels.update_many(state, rows, high[rows, t], low[rows, t], close[rows, t], out, *args)
        together[t, rows] = out

    for market in range(n_markets):
        expected = np.array(
            batch_kernels.compute_batch(high[market], low[market], close[market], *args)
        )
        np.testing.assert_array_equal(together[:, market].T, expected)
        np.testing.assert_array_equal(
            state[market], kernels.warm_state(high[market], low[market], close[market], *args)
        )

    # And literally one market per call, for a few of them.
    for market in range(0, n_markets, 500):
        alone = kernels.new_state(1, params.state_width)
        row = np.zeros(1, dtype=np.int64)
        out = np.empty((1, kernels.N_OUTPUTS))
        for t in range(n_candles):
            h, lo, c = high[market, t : t + 1], low[market, t : t + 1], close[market, t : t + 1]
            kernels.update_many(alone, row, h, lo, c, out, *args)
            np.testing.assert_array_equal(out[0], together[t, market])
        np.testing.assert_array_equal(alone[0], state[market])


def test_update_many_rejects_state_laid_out_for_other_periods() -> None:
    state = kernels.new_state(2, CUSTOM.state_width)
    prices = np.ones(1)
    with pytest.raises(ValueError, match="other periods"):
        kernels.update_many(
            state, np.zeros(1, np.int64), prices, prices, prices, np.empty((1, kernels.N_OUTPUTS)),
            *IndicatorParams().kernel_args,
        )  # fmt: skip


def test_update_many_rejects_a_row_outside_the_state() -> None:
    params = IndicatorParams()
    state = kernels.new_state(2, params.state_width)
    prices = np.ones(1)
    with pytest.raises(IndexError):
        kernels.update_many(
            state, np.array([2], np.int64), prices, prices, prices,
            np.empty((1, kernels.N_OUTPUTS)), *params.kernel_args,
        )  # fmt: skip


# Windows longer than one of the batch's blocks: every column's history spans blocks.
LONG = IndicatorParams(
    rsi_period=30,
    stoch_period=200,
    stoch_k_period=9,
    stoch_d_period=17,
    stochrsi_fastk_period=21,
    stochrsi_fastd_period=8,
    atr_period=40,
    atr_ma_period=batch_kernels._BLOCK + 300,
)
SEVERAL_BLOCKS = 3 * batch_kernels._BLOCK + 123


def stepped(high: Array, low: Array, close: Array, p: IndicatorParams) -> Array:
    """Return the outputs of one market fed one candle per `update_many` call, per candle."""
    state = kernels.new_state(1, p.state_width)
    row = np.zeros(1, dtype=np.int64)
    out = np.empty((close.size, kernels.N_OUTPUTS))
    for t in range(close.size):
        span = slice(t, t + 1)
        kernels.update_many(
            state, row, high[span], low[span], close[span], out[span], *p.kernel_args
        )
    return out.T


@pytest.mark.parametrize(
    "params", [IndicatorParams(), CUSTOM, LONG], ids=["default", "custom", "long"]
)
def test_batch_over_several_blocks_equals_the_incremental_step(params: IndicatorParams) -> None:
    high, low, close = random_walk(np.random.default_rng(8), SEVERAL_BLOCKS, 2.0)
    close[5_000:5_300] = close[4_999]  # a flat stretch inside a block
    high[5_000:5_300] = low[5_000:5_300] = close[4_999]
    columns = np.array(batch_kernels.compute_batch(high, low, close, *params.kernel_args))
    np.testing.assert_array_equal(columns, stepped(high, low, close, params))


def test_batch_matches_talib_and_the_bands_formula_with_windows_longer_than_a_block() -> None:
    high, low, close = random_walk(np.random.default_rng(9), SEVERAL_BLOCKS, 5.0)
    assert_matches_talib(high, low, close, LONG)
    ours = batch(high, low, close, LONG)
    expected = reference_bands(talib.ATR(high, low, close, LONG.atr_period), LONG)
    first = LONG.atr_period + LONG.atr_ma_period - 1
    for name in ("volatility_ratio", "band_lower", "band_upper"):
        assert np.isnan(ours[name][:first]).all(), name
        np.testing.assert_allclose(ours[name][first:], expected[name][first:], rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [0, 1, 2, 25])
def test_batch_of_fewer_candles_than_the_warm_up_is_nan_until_each_output_is_defined(
    n: int,
) -> None:
    high, low, close = random_walk(np.random.default_rng(n), n, 1.0)
    columns = np.array(
        batch_kernels.compute_batch(high, low, close, *IndicatorParams().kernel_args)
    )
    assert columns.shape == (kernels.N_OUTPUTS, n)
    np.testing.assert_array_equal(columns, stepped(high, low, close, IndicatorParams()))
    assert np.isnan(columns[1:5]).all()  # K, D, fastk and fastd need 29 candles or more
    assert np.isnan(columns[0, :14]).all() and not np.isnan(columns[0, 14:]).any()


SELECTIONS = [
    ("rsi", "stoch_k", "stoch_d", "atr", "band_lower", "band_upper"),
    ("band_upper", "stoch_d", "rsi"),
    ("stochrsi_fastk",),
    ("stochrsi_fastd", "volatility_ratio"),
    ("stoch_k",),
    ("atr",),
    (),
]


@pytest.mark.parametrize("names", SELECTIONS, ids=lambda names: "+".join(names) or "none")
@pytest.mark.parametrize(
    "params", [IndicatorParams(), CUSTOM, LONG], ids=["default", "custom", "long"]
)
def test_selected_outputs_equal_their_rows_of_all_outputs(
    names: tuple[str, ...], params: IndicatorParams
) -> None:
    high, low, close = random_walk(np.random.default_rng(4), SEVERAL_BLOCKS, 1.0)
    everything = np.array(batch_kernels.compute_batch(high, low, close, *params.kernel_args))
    outputs = np.array([kernels.OUTPUT_NAMES.index(name) for name in names], dtype=np.int64)
    out = np.full((len(names), close.size), -7.0)  # every value must be overwritten
    batch_kernels.compute_selected_into(high, low, close, outputs, out, *params.kernel_args)
    for row, k in enumerate(outputs):
        np.testing.assert_array_equal(out[row], everything[k], err_msg=kernels.OUTPUT_NAMES[k])


@pytest.mark.parametrize(
    ("outputs", "rows"),
    [([0, 0], 2), ([9], 1), ([-1], 1), ([0, 1], 3)],
    ids=["repeated", "unknown", "negative", "rows-mismatch"],
)
def test_selected_rejects_a_bad_request(outputs: list[int], rows: int) -> None:
    prices = np.linspace(1.0, 2.0, 50)
    with pytest.raises(ValueError):
        batch_kernels.compute_selected_into(
            prices, prices, prices, np.array(outputs, dtype=np.int64), np.empty((rows, 50)),
            *IndicatorParams().kernel_args,
        )  # fmt: skip


# --- one series in two threads ------------------------------------------------------------------

CUTS = [0, 1, 17, 500, batch_kernels._BLOCK, batch_kernels._BLOCK + 1, SEVERAL_BLOCKS // 2,
        SEVERAL_BLOCKS - 1, SEVERAL_BLOCKS]  # fmt: skip


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize(
    "params", [IndicatorParams(), CUSTOM, LONG], ids=["default", "custom", "long"]
)
def test_a_series_cut_in_two_threads_gives_the_floats_of_one_pass(
    cut: int, params: IndicatorParams
) -> None:
    high, low, close = random_walk(np.random.default_rng(12), SEVERAL_BLOCKS, 1.0)
    close[6_000:6_400] = close[5_999]  # a flat stretch: raw %K of a flat window
    high[6_000:6_400] = low[6_000:6_400] = close[5_999]
    everything = np.array(batch_kernels.compute_batch(high, low, close, *params.kernel_args))
    outputs = np.array([7, 2, 0, 5, 1], dtype=np.int64)  # some, out of order
    out = np.full((outputs.size, close.size), -7.0)  # every value must be overwritten
    batch_kernels.compute_in_two(high, low, close, outputs, out, params.kernel_args, cut)
    np.testing.assert_array_equal(out, everything[outputs])


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda path: path.stem)
def test_real_candles_in_two_threads_give_the_floats_of_one_pass(path: Path) -> None:
    high, low, close = load_hlc(path)
    args = IndicatorParams().kernel_args
    everything = np.array(batch_kernels.compute_batch(high, low, close, *args))
    out = np.empty_like(everything)
    for cut in (close.size // 3, close.size // 2):
        batch_kernels.compute_in_two(high, low, close, np.arange(9), out, args, cut)
        np.testing.assert_array_equal(out, everything)


def test_a_span_needs_its_whole_lead_to_be_exact() -> None:
    """One candle less of lead than `span_lead` and the first output of the span is off: the
    lead is as long as it must be, no shorter."""
    high, low, close = random_walk(np.random.default_rng(13), 3_000, 1.0)
    args = IndicatorParams().kernel_args
    everything = np.array(batch_kernels.compute_batch(high, low, close, *args))
    rows = np.arange(9, dtype=np.int64)
    lead, warm = batch_kernels.span_lead(args), 2_000
    for begin, exact in ((warm - lead, True), (warm - lead + 1, False)):
        out = np.full_like(everything, np.nan)
        batch_kernels.compute_span_into(high, low, close, out, rows, args, (begin, warm, 3_000))
        assert np.array_equal(out[:, warm:], everything[:, warm:]) is exact


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_long_series_is_computed_on_two_cores_with_the_same_floats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cuts: list[int] = []
    in_two = batch_kernels.compute_in_two

    def spy(*args: Any) -> None:
        cuts.append(args[-1])
        in_two(*args)

    monkeypatch.setattr(batch_kernels, "compute_in_two", spy)
    args = IndicatorParams().kernel_args
    for n, expected_cuts in ((batch_kernels._TWO_THREADS_FROM - 1, 0), (400_000, 1)):
        high, low, close = random_walk(np.random.default_rng(14), n, 1.0)
        everything = np.array(batch_kernels.compute_batch(high, low, close, *args))
        out = np.empty_like(everything)
        batch_kernels.compute_selected(high, low, close, np.arange(9), out, args)
        np.testing.assert_array_equal(out, everything)
        assert len(cuts) == expected_cuts
    assert 0.4 * 400_000 < cuts[0] < 0.6 * 400_000


@pytest.mark.parametrize("cut", [-1, 51])
def test_a_cut_outside_the_series_is_refused(cut: int) -> None:
    prices = np.linspace(1.0, 2.0, 50)
    with pytest.raises(ValueError, match="cut must lie in"):
        batch_kernels.compute_in_two(
            prices, prices, prices, np.arange(9), np.empty((9, 50)),
            IndicatorParams().kernel_args, cut,
        )  # fmt: skip


def test_a_bad_request_is_refused_before_any_thread_starts() -> None:
    prices = np.linspace(1.0, 2.0, 50)
    with pytest.raises(ValueError, match="input arrays differ"):
        batch_kernels.compute_in_two(
            prices, prices[:-1], prices, np.arange(9), np.empty((9, 50)),
            IndicatorParams().kernel_args, 25,
        )  # fmt: skip
