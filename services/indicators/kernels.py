"""Numba kernels: per-market state rows and one candle each -> indicators (batch in `batch`)."""

from __future__ import annotations

from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt
from numba import njit

OUTPUT_NAMES: Final = (
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
N_OUTPUTS: Final = len(OUTPUT_NAMES)

PARAM_NAMES: Final = (
    "rsi_period",
    "stoch_period",
    "stoch_k_period",
    "stoch_d_period",
    "stochrsi_fastk_period",
    "stochrsi_fastd_period",
    "atr_period",
    "atr_ma_period",
    "base_lower",
    "base_upper",
    "sensitivity",
    "adjustment_factor",
    "min_width",
    "max_width",
)

# A state row is a header (`STEPS`, `PREV_CLOSE`, the Wilder averages, and the last outputs
# that messages carry as `prev_*`) followed by shift registers, newest value last: the RSI
# window, the raw stochastics K smooths, the smoothed K values D averages, the raw StochRSI
# values fastd averages, and the ATR values of the volatility ratio's moving average.
STEPS: Final = 0  # candles the row has seen
PREV_CLOSE: Final = 1
_AVG_GAIN: Final = 2
_AVG_LOSS: Final = 3
_ATR: Final = 4
LAST_STOCH_K: Final = 5
LAST_BAND_LOWER: Final = 6
LAST_BAND_UPPER: Final = 7
_HEADER: Final = 8

F64Array: TypeAlias = npt.NDArray[np.float64]
I64Array: TypeAlias = npt.NDArray[np.int64]
Params: TypeAlias = tuple[
    int, int, int, int, int, int, int, int, float, float, float, float, float, float
]
Outputs: TypeAlias = tuple[float, float, float, float, float, float, float, float, float]


@njit(cache=True, error_model="numpy")
def state_width(
    stoch_period: int,
    stoch_k_period: int,
    stoch_d_period: int,
    stochrsi_fastk_period: int,
    stochrsi_fastd_period: int,
    atr_ma_period: int,
) -> int:
    """Return the number of float64 slots of one market's state row for these periods."""
    rsi_window = max(stoch_period, stochrsi_fastk_period)
    return (
        _HEADER
        + rsi_window
        + stoch_k_period
        + stoch_d_period
        + stochrsi_fastd_period
        + atr_ma_period
    )


@njit(cache=True, error_model="numpy")
def new_state(n_markets: int, width: int) -> F64Array:
    """Return fresh state rows: no candle seen, previous outputs NaN."""
    state = np.zeros((n_markets, width))
    state[:, LAST_STOCH_K] = np.nan
    state[:, LAST_BAND_LOWER] = np.nan
    state[:, LAST_BAND_UPPER] = np.nan
    return state


# --- arithmetic shared by both shapes ---------------------------------------------------------

# References are TA-Lib 0.6's functions; RSI and the raw stochastics reproduce its operation
# order, so they are the same floats, and the rest agree to rounding. The batch (`batch`) and
# the incremental step share every helper below and add the values of each window in the same
# order, so both shapes give the same value for every output. All kernels use NumPy's error
# model: a division by zero gives inf or NaN instead of raising, which lets the compiler
# vectorize divisions (every division here is guarded or by a period).


@njit(cache=True, error_model="numpy", inline="always")
def _smooth(previous: float, value: float, period: int) -> float:
    """Return a Wilder average's next value: (previous * (period - 1) + value) * (1 / period).

    In a loop, the int-to-float conversion and the reciprocal are invariants the compiler
    hoists; what remains is a multiply, an add and a multiply, the chain every candle waits on.
    """
    return (previous * float(period - 1) + value) * (1.0 / period)


@njit(cache=True, error_model="numpy", inline="always")
def _rsi_average(previous: float, value: float, steps: int, period: int) -> float:
    """Return one of RSI's Wilder averages after its `steps`-th change (1-based).

    TA-Lib 0.6's order: the first `period` changes are summed then scaled by 1 / period; later
    ones give (previous * (period - 1) + value) * (1 / period). Equal floats matter: a stochastic
    over a flat RSI window must see it as flat, as TA-Lib does.
    """
    if steps < period:
        return previous + value
    if steps == period:
        return (previous + value) * (1.0 / period)
    return _smooth(previous, value, period)


@njit(cache=True, error_model="numpy", inline="always")
def _rsi(gain: float, loss: float) -> float:
    """Return RSI from the averages; 0 when nothing moved, as TA-Lib gives."""
    total = gain + loss
    return (gain / total) * 100.0 if total > 0.0 else 0.0


@njit(cache=True, error_model="numpy", inline="always")
def _atr_average(previous: float, true_range: float, steps: int, period: int) -> float:
    """Return ATR's Wilder average after its `steps`-th true range: seed mean, then smoothing.

    TA-Lib divides each smoothing step by the period; multiplying by its reciprocal instead
    differs by rounding only (about 1e-15 relative, not compounding: the average forgets) and
    halves the latency of the chain every candle waits on.
    """
    if steps < period:
        return previous + true_range
    if steps == period:
        return (previous + true_range) / period
    return _smooth(previous, true_range, period)


@njit(cache=True, error_model="numpy", inline="always")
def _true_range(high: float, low: float, prev_close: float) -> float:
    """Return the true range of a candle after `prev_close` (TA-Lib TRANGE)."""
    return max(high - low, abs(prev_close - high), abs(prev_close - low))


@njit(cache=True, error_model="numpy", inline="always")
def _mean(values: F64Array, start: int, size: int) -> float:
    """Return the mean of `values[start:start + size]`, re-summed on every call.

    A fixed order (four interleaved partial sums, which shortens the chain of dependent adds)
    instead of a running sum: nothing drifts, a restart from a bounded history gives the same
    floats, and both shapes add the same floats in the same order (`_rolling_means` is this,
    one lane per candle). TA-Lib keeps a running sum, so its SMAs differ by rounding only.
    """
    sum0 = sum1 = sum2 = sum3 = 0.0
    k = start
    end = start + size
    while k + 4 <= end:
        sum0 += values[k]
        sum1 += values[k + 1]
        sum2 += values[k + 2]
        sum3 += values[k + 3]
        k += 4
    while k < end:
        sum0 += values[k]
        k += 1
    return ((sum0 + sum1) + (sum2 + sum3)) / size


@njit(cache=True, error_model="numpy", inline="always")
def _raw_stochastic(value: float, lowest: float, highest: float) -> float:
    """Return TA-Lib's raw %K of `value` in a window with these extremes.

    As TA-Lib 0.6 does, a range within 1e-14 of the window's magnitude counts as flat: 0.
    """
    diff = highest - lowest
    flat = abs(diff) <= (abs(highest) + abs(lowest)) * 1e-14
    return 0.0 if flat else ((value - lowest) / diff) * 100.0


@njit(cache=True, error_model="numpy", inline="always")
def _stochastic(values: F64Array, start: int, size: int, value: float) -> float:
    """Return TA-Lib's raw %K of `value` within `values[start:start + size]`."""
    lowest = float(values[start])
    highest = lowest
    for k in range(start + 1, start + size):
        lowest = min(lowest, values[k])
        highest = max(highest, values[k])
    return _raw_stochastic(value, lowest, highest)


@njit(cache=True, error_model="numpy", inline="always")
def _volatility_ratio(atr: float, atr_ma: float) -> float:
    """Return ATR over its simple moving average (no TA-Lib counterpart).

    A market flat for the whole window has 0 / 0: report 1.0 ("volatility unchanged") so NaN
    keeps meaning "warming up"; the bands come out as the base ones either way.
    """
    return atr / atr_ma if atr_ma != 0.0 else 1.0


@njit(cache=True, error_model="numpy", inline="always")
def _bands(ratio: float, params: Params) -> tuple[float, float]:
    """Return the dynamic StochRSI band (lower, upper) for one volatility ratio.

    No TA-Lib counterpart: the strategy's formula, high volatility tested first.
    """
    base_lower, base_upper, sensitivity, adjustment, min_width, max_width = params[8:]
    if ratio > sensitivity:
        expansion = (ratio - 1.0) * adjustment * 100.0
        lower = max(base_lower - expansion, base_lower - max_width)
        upper = min(base_upper + expansion, base_upper + max_width)
    elif ratio < 1.0 / sensitivity:
        contraction = (1.0 - ratio) * adjustment * 100.0
        lower = min(base_lower + contraction, base_lower + min_width)
        upper = max(base_upper - contraction, base_upper - min_width)
    else:
        lower = base_lower
        upper = base_upper
    if (upper - lower) < min_width:
        mid = (lower + upper) / 2.0
        lower = mid - min_width / 2.0
        upper = mid + min_width / 2.0
    return lower, upper


@njit(cache=True, error_model="numpy", inline="always")
def _check_lengths(n: int, first: F64Array, second: F64Array, third: F64Array) -> None:
    """Raise unless the input arrays all have `n` elements (kernels skip bounds checks)."""
    if first.shape[0] != n or second.shape[0] != n or third.shape[0] != n:
        raise ValueError("input arrays differ in length")


# --- incremental: one candle per market on a state row ----------------------------------------


@njit(cache=True, error_model="numpy", inline="always")
def _push(row: F64Array, start: int, size: int, value: float) -> None:
    """Shift the register `row[start:start + size]` left by one and append `value`."""
    for k in range(start, start + size - 1):
        row[k] = row[k + 1]
    row[start + size - 1] = value


@njit(cache=True, error_model="numpy", inline="always")
def _step(row: F64Array, high: float, low: float, close: float, params: Params) -> Outputs:
    """Advance one market's state row by one candle; return its outputs (NaN while warming up)."""
    rsi_period, stoch_period, stoch_k_period, stoch_d_period = params[:4]
    fastk_period, fastd_period, atr_period, atr_ma_period = params[4:8]
    rsi_window = max(stoch_period, fastk_period)
    raw_k_start = _HEADER + rsi_window
    smooth_k_start = raw_k_start + stoch_k_period
    raw_fastk_start = smooth_k_start + stoch_d_period
    atr_start = raw_fastk_start + fastd_period

    rsi = stoch_k = stoch_d = fastk = fastd = atr = ratio = lower = upper = np.nan
    i = int(row[STEPS])  # this candle's index in the market's series
    if i > 0:
        change = close - row[PREV_CLOSE]
        up = change if change > 0.0 else 0.0
        row[_AVG_GAIN] = _rsi_average(row[_AVG_GAIN], up, i, rsi_period)
        row[_AVG_LOSS] = _rsi_average(row[_AVG_LOSS], up - change, i, rsi_period)
        true_range = _true_range(high, low, row[PREV_CLOSE])
        row[_ATR] = _atr_average(row[_ATR], true_range, i, atr_period)
    row[STEPS] = i + 1
    row[PREV_CLOSE] = close
    if i >= rsi_period:
        rsi = _rsi(row[_AVG_GAIN], row[_AVG_LOSS])
        _push(row, _HEADER, rsi_window, rsi)
        n_rsi = i - rsi_period + 1
        raw = np.nan
        if n_rsi >= stoch_period:
            raw = _stochastic(row, raw_k_start - stoch_period, stoch_period, rsi)
            _push(row, raw_k_start, stoch_k_period, raw)
            n_raw = n_rsi - stoch_period + 1
            if n_raw >= stoch_k_period:
                smooth = _mean(row, raw_k_start, stoch_k_period)
                _push(row, smooth_k_start, stoch_d_period, smooth)
                if n_raw - stoch_k_period + 1 >= stoch_d_period:
                    stoch_k = smooth
                    stoch_d = _mean(row, smooth_k_start, stoch_d_period)
        if n_rsi >= fastk_period:
            if fastk_period != stoch_period:  # else the same window: `raw` is its %K already
                raw = _stochastic(row, raw_k_start - fastk_period, fastk_period, rsi)
            _push(row, raw_fastk_start, fastd_period, raw)
            if n_rsi - fastk_period + 1 >= fastd_period:
                fastk = raw
                fastd = _mean(row, raw_fastk_start, fastd_period)
    if i >= atr_period:
        atr = row[_ATR]
        _push(row, atr_start, atr_ma_period, atr)
        if i - atr_period + 1 >= atr_ma_period:
            ratio = _volatility_ratio(atr, _mean(row, atr_start, atr_ma_period))
            lower, upper = _bands(ratio, params)
    row[LAST_STOCH_K] = stoch_k
    row[LAST_BAND_LOWER] = lower
    row[LAST_BAND_UPPER] = upper
    return rsi, stoch_k, stoch_d, fastk, fastd, atr, ratio, lower, upper


@njit(cache=True, error_model="numpy")
def update_many(
    state: F64Array,
    rows: I64Array,
    high: F64Array,
    low: F64Array,
    close: F64Array,
    out: F64Array,
    rsi_period: int,
    stoch_period: int,
    stoch_k_period: int,
    stoch_d_period: int,
    stochrsi_fastk_period: int,
    stochrsi_fastd_period: int,
    atr_period: int,
    atr_ma_period: int,
    base_lower: float,
    base_upper: float,
    sensitivity: float,
    adjustment_factor: float,
    min_width: float,
    max_width: float,
) -> None:
    """Advance market `rows[j]` of `state` by candle j and write its outputs to `out[j]`.

    References: TA-Lib RSI, STOCH on RSI, STOCHRSI and ATR (see `compute_batch_into`), with
    the batch's values. Give each market at most one candle per call, so that the rows
    stay independent of each other.
    """
    params = (
        rsi_period, stoch_period, stoch_k_period, stoch_d_period, stochrsi_fastk_period,
        stochrsi_fastd_period, atr_period, atr_ma_period, base_lower, base_upper, sensitivity,
        adjustment_factor, min_width, max_width,
    )  # fmt: skip
    n = rows.shape[0]
    _check_lengths(n, high, low, close)
    if out.shape[0] != n or out.shape[1] != N_OUTPUTS:
        raise ValueError("out must have one row of N_OUTPUTS values per candle")
    width = state_width(
        stoch_period, stoch_k_period, stoch_d_period, stochrsi_fastk_period,
        stochrsi_fastd_period, atr_ma_period,
    )  # fmt: skip
    if state.shape[1] != width:
        raise ValueError("state rows were laid out for other periods")
    for j in range(n):
        if rows[j] < 0 or rows[j] >= state.shape[0]:
            raise IndexError("state row out of range")
    for j in range(n):
        values = _step(state[rows[j]], high[j], low[j], close[j], params)
        for k in range(N_OUTPUTS):
            out[j, k] = values[k]


@njit(cache=True, error_model="numpy")
def warm_state(
    high: F64Array,
    low: F64Array,
    close: F64Array,
    rsi_period: int,
    stoch_period: int,
    stoch_k_period: int,
    stoch_d_period: int,
    stochrsi_fastk_period: int,
    stochrsi_fastd_period: int,
    atr_period: int,
    atr_ma_period: int,
    base_lower: float,
    base_upper: float,
    sensitivity: float,
    adjustment_factor: float,
    min_width: float,
    max_width: float,
) -> F64Array:
    """Return the state row of a market that has seen this history (the live step, replayed).

    References: TA-Lib RSI, STOCH on RSI, STOCHRSI and ATR (see `compute_batch_into`); the
    row continues exactly as the row of a market updated live would.
    """
    params = (
        rsi_period, stoch_period, stoch_k_period, stoch_d_period, stochrsi_fastk_period,
        stochrsi_fastd_period, atr_period, atr_ma_period, base_lower, base_upper, sensitivity,
        adjustment_factor, min_width, max_width,
    )  # fmt: skip
    n = close.shape[0]
    _check_lengths(n, high, low, close)
    width = state_width(
        stoch_period, stoch_k_period, stoch_d_period, stochrsi_fastk_period,
        stochrsi_fastd_period, atr_ma_period,
    )  # fmt: skip
    row: F64Array = new_state(1, width)[0]
    for i in range(n):
        _step(row, high[i], low[i], close[i], params)
    return row
