"""Numba batch kernels: OHLC float64 arrays of one series -> indicator columns, NaN in warm-up.

The batch runs block by block. One sequential loop advances the Wilder averages and writes RSI
and ATR: the chains of dependent operations of those averages set its speed. Every windowed
output of the block is then a loop over scratch columns that the compiler turns into vector
instructions: sliding extremes by doubling, moving averages from columns of partial sums. Each
scratch column starts with the last values of the block before, so windows reach across blocks.
References, shared arithmetic and the error model are those of `kernels`: the batch adds the
values of each window in the order of the incremental step, so both give the same floats.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeAlias, TypeVar

import numpy as np
from numba import njit

from services.indicators.kernels import (
    N_OUTPUTS,
    F64Array,
    I64Array,
    Params,
    _atr_average,
    _bands,
    _check_lengths,
    _raw_stochastic,
    _rsi,
    _rsi_average,
    _smooth,
    _true_range,
    _volatility_ratio,
)

_Kernel = TypeVar("_Kernel", bound=Callable[..., Any])

_BLOCK: Final = 4096  # candles per block: its scratch columns stay in the core's L2 cache
# A series of at least this many candles is cut in two, one span per thread (`compute_selected`).
_TWO_THREADS_FROM: Final = 100_000
# The first span's share of the series: the second thread also advances the averages over the
# first span, at about a sixth of the cost of computing it.
_FIRST_SHARE: Final = 0.55

# Rows of the batch's scratch array; the first _WINDOWED keep their last values across blocks.
_RSI: Final = 0
_RAW_K: Final = 1
_SMOOTH_K: Final = 2
_RAW_FASTK: Final = 3
_ATR_COLUMN: Final = 4
_WINDOWED: Final = 5
_STOCH_D: Final = 5
_FASTD: Final = 6
_ATR_MA: Final = 7
_RATIO: Final = 8
_LOWER: Final = 9
_UPPER: Final = 10
_LOW_A: Final = 11
_LOW_B: Final = 12
_HIGH_A: Final = 13
_HIGH_B: Final = 14
_SUMS: Final = 15
_ZERO: Final = 16  # stays 0.0
_SCRATCH_ROWS: Final = 17
Columns: TypeAlias = tuple[
    F64Array, F64Array, F64Array, F64Array, F64Array, F64Array, F64Array, F64Array, F64Array
]

Views: TypeAlias = tuple[
    F64Array, F64Array, F64Array, F64Array, F64Array, F64Array, F64Array, F64Array, F64Array
]
Views4: TypeAlias = tuple[F64Array, F64Array, F64Array, F64Array]


# The block loop and every function it calls take views of `work` and `out` only, which the
# caller keeps alive: they compile without reference counting. Each view would otherwise cost
# an atomic increment and decrement: about a microsecond per block in all.
_blockwise: Callable[[_Kernel], _Kernel] = njit(  # type: ignore[call-overload]  # _nrt: not in the stubs
    cache=True, error_model="numpy", _nrt=False
)

Averages: TypeAlias = tuple[float, float, float]  # RSI's gain and loss, ATR
Prices: TypeAlias = tuple[F64Array, F64Array, F64Array, F64Array]  # high, low, close, close before
Targets: TypeAlias = tuple[F64Array, F64Array, F64Array, F64Array]  # RSI twice, ATR twice


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)  # type: ignore[call-overload, untyped-decorator]
def _moves(candle: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """Return what a candle (high, low, close, close before) adds to the averages: its gain
    and loss (both >= 0) and its true range."""
    high, low, close, previous = candle
    change = close - previous
    up = change if change > 0.0 else 0.0
    return up, up - change, _true_range(high, low, previous)


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)  # type: ignore[call-overload, untyped-decorator]
def _seeding_step(
    averages: Averages,
    candle: tuple[float, float, float, float],
    steps: int,
    periods: tuple[int, int],
) -> Averages:
    """Advance RSI's and ATR's averages by the `steps`-th candle, either perhaps still seeding."""
    gain, loss, average_range = averages
    up, down, true_range = _moves(candle)
    rsi_period, atr_period = periods
    return (
        _rsi_average(gain, up, steps, rsi_period),
        _rsi_average(loss, down, steps, rsi_period),
        _atr_average(average_range, true_range, steps, atr_period),
    )


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)  # type: ignore[call-overload, untyped-decorator]
def _smoothing_step(
    averages: Averages, candle: tuple[float, float, float, float], periods: tuple[int, int]
) -> Averages:
    """Advance seeded averages by one candle: `_seeding_step` past the seeds, without its
    branches. The chains of dependent operations here set the speed of the batch's one
    sequential loop."""
    gain, loss, average_range = averages
    up, down, true_range = _moves(candle)
    rsi_period, atr_period = periods
    return (
        _smooth(gain, up, rsi_period),
        _smooth(loss, down, rsi_period),
        _smooth(average_range, true_range, atr_period),
    )


@_blockwise
def _seed_averages(
    prices: Prices, first: int, averages: Averages, periods: tuple[int, int], targets: Targets
) -> Averages:
    """Advance the averages over candles first, first + 1, ... while either is seeding."""
    now_high, now_low, now_close, before = prices
    rsi, rsi_copy, ranges, ranges_copy = targets
    for j in range(rsi.shape[0]):
        candle = (now_high[j], now_low[j], now_close[j], before[j])
        averages = _seeding_step(averages, candle, first + j, periods)
        rsi[j] = rsi_copy[j] = _rsi(averages[0], averages[1])
        ranges[j] = ranges_copy[j] = averages[2]
    return averages


@_blockwise
def _smooth_averages(
    prices: Prices, averages: Averages, periods: tuple[int, int], targets: Targets
) -> Averages:
    """Advance the seeded averages, storing RSI and ATR: the one sequential loop of the batch.

    The chains of its averages leave the core idle enough for RSI's division and the stores to
    the caller's arrays.
    """
    now_high, now_low, now_close, before = prices
    rsi, rsi_copy, ranges, ranges_copy = targets
    for j in range(rsi.shape[0]):
        averages = _smoothing_step(
            averages, (now_high[j], now_low[j], now_close[j], before[j]), periods
        )
        rsi[j] = rsi_copy[j] = _rsi(averages[0], averages[1])
        ranges[j] = ranges_copy[j] = averages[2]
    return averages


@_blockwise
def _advance_averages(
    high: F64Array,
    low: F64Array,
    close: F64Array,
    start: int,
    end: int,
    averages: Averages,
    work: F64Array,
    offset: int,
    periods: tuple[int, int],
    targets: tuple[F64Array, F64Array],
) -> Averages:
    """Advance RSI's and ATR's Wilder averages over candles [start, end): the block's RSI and
    ATR go to their scratch columns (from `offset` on) and to `targets`."""
    skip = 1 if start == 0 else 0  # the first candle has no change: a 0 nobody reads
    if skip:
        work[_RSI, offset] = work[_ATR_COLUMN, offset] = 0.0
    first = start + skip
    m = end - first
    # Candles before `settled` still seed an average; after it, both only smooth.
    settled = min(max(max(periods) + 1 - first, 0), m)
    now_high, now_low, now_close = high[first:end], low[first:end], close[first:end]
    before = close[first - 1 : end - 1]
    rsi = work[_RSI, offset + skip : offset + skip + m]
    ranges = work[_ATR_COLUMN, offset + skip : offset + skip + m]
    rsi_copy, ranges_copy = targets[0][skip:], targets[1][skip:]
    averages = _seed_averages(
        (now_high[:settled], now_low[:settled], now_close[:settled], before[:settled]), first,
        averages, periods,
        (rsi[:settled], rsi_copy[:settled], ranges[:settled], ranges_copy[:settled]),
    )  # fmt: skip
    return _smooth_averages(
        (now_high[settled:], now_low[settled:], now_close[settled:], before[settled:]),
        averages, periods,
        (rsi[settled:], rsi_copy[settled:], ranges[settled:], ranges_copy[settled:]),
    )  # fmt: skip


# Column loops: each writes a column or two from a few others, all views indexed from 0 (an
# index that might be negative costs a wraparound check on every access). The compiler then
# checks at run time that the columns do not overlap, and turns the loop into vector code.


@_blockwise
def _copy(source: F64Array, target: F64Array) -> None:
    """Copy a column."""
    for j in range(target.shape[0]):
        target[j] = source[j]


@_blockwise
def _extremes_of_four(values: F64Array, lowest: F64Array, highest: F64Array) -> None:
    """Write the extremes of `values[j:j + 4]` to `lowest[j]` and `highest[j]`."""
    for j in range(lowest.shape[0]):
        a, b, c, d = values[j], values[j + 1], values[j + 2], values[j + 3]
        lowest[j] = min(min(a, b), min(c, d))
        highest[j] = max(max(a, b), max(c, d))


@_blockwise
def _extremes_of_pairs(
    low: tuple[F64Array, F64Array],
    high: tuple[F64Array, F64Array],
    lowest: F64Array,
    highest: F64Array,
) -> None:
    """Write the min of the `low` pair of columns and the max of the `high` pair."""
    low_now, low_before = low
    high_now, high_before = high
    for j in range(lowest.shape[0]):
        lowest[j] = min(low_now[j], low_before[j])
        highest[j] = max(high_now[j], high_before[j])


@_blockwise
def _raw_of_extremes(values: F64Array, low: Views4, high: Views4, raw: F64Array) -> None:
    """Write the raw %K of `values[j]` within the extremes of the four `low` and `high` columns."""
    low0, low1, low2, low3 = low
    high0, high1, high2, high3 = high
    for j in range(raw.shape[0]):
        lowest = min(min(low0[j], low1[j]), min(low2[j], low3[j]))
        highest = max(max(high0[j], high1[j]), max(high2[j], high3[j]))
        raw[j] = _raw_stochastic(values[j], lowest, highest)


@_blockwise
def _sum_four(total: F64Array, a: F64Array, b: F64Array, c: F64Array, d: F64Array) -> None:
    """Write the sum of four columns, added in their order to 0.0."""
    for j in range(total.shape[0]):
        total[j] = (((0.0 + a[j]) + b[j]) + c[j]) + d[j]


@_blockwise
def _add_four(total: F64Array, a: F64Array, b: F64Array, c: F64Array, d: F64Array) -> None:
    """Add four columns to a running total, in their order."""
    for j in range(total.shape[0]):
        total[j] = (((total[j] + a[j]) + b[j]) + c[j]) + d[j]


@_blockwise
def _add_one(total: F64Array, a: F64Array) -> None:
    """Add a column to a running total."""
    for j in range(total.shape[0]):
        total[j] = total[j] + a[j]


@_blockwise
def _mean_of_sums(sums: F64Array, size: int, means: F64Array) -> None:
    """Write `_mean`'s last step from its partial sums: `sums[j + r]` is sum r of window j."""
    for j in range(means.shape[0]):
        means[j] = ((sums[j] + sums[j + 1]) + (sums[j + 2] + sums[j + 3])) / size


@_blockwise
def _mean_of_sums_and_tail(
    sums: F64Array, tail: tuple[F64Array, F64Array, F64Array], size: int, means: F64Array
) -> None:
    """Write `_mean`'s last steps: sum 0 adds the tail's values, then the four combine."""
    tail1, tail2, tail3 = tail
    for j in range(means.shape[0]):
        head = ((sums[j] + tail1[j]) + tail2[j]) + tail3[j]
        means[j] = ((head + sums[j + 1]) + (sums[j + 2] + sums[j + 3])) / size


@_blockwise
def _mean_of_tail(
    tail1: F64Array, tail2: F64Array, tail3: F64Array, size: int, means: F64Array
) -> None:
    """Write `_mean` of windows of under four values: sums 1 to 3 stay 0.0."""
    for j in range(means.shape[0]):
        means[j] = ((tail1[j] + tail2[j]) + tail3[j]) / size


@_blockwise
def _bands_of(
    atr: F64Array, atr_ma: F64Array, params: Params, ratio: F64Array, bands: Views
) -> None:
    """Write the volatility ratio and the dynamic bands (`bands[7]`, `bands[8]`) per candle."""
    lower, upper = bands[7], bands[8]
    for j in range(ratio.shape[0]):
        ratio[j] = value = _volatility_ratio(atr[j], atr_ma[j])
        lower[j], upper[j] = _bands(value, params)


@_blockwise
def _bands_of_sums(
    atr: F64Array,
    sums: F64Array,
    last_terms: F64Array,
    params: Params,
    ratio: F64Array,
    bands: Views,
) -> None:
    """`_bands_of` with ATR's moving average from its partial sums: `sums[j + r]` is sum r of
    window j but its last value, `last_terms[j + r]`, which the loop adds (for sizes 4q, q > 1).
    """
    size = params[7]
    lower, upper = bands[7], bands[8]
    for j in range(ratio.shape[0]):
        sum0, sum1 = sums[j] + last_terms[j], sums[j + 1] + last_terms[j + 1]
        sum2, sum3 = sums[j + 2] + last_terms[j + 2], sums[j + 3] + last_terms[j + 3]
        ratio[j] = value = _volatility_ratio(atr[j], ((sum0 + sum1) + (sum2 + sum3)) / size)
        lower[j], upper[j] = _bands(value, params)


@_blockwise
def _rolling_stochastic(
    values: F64Array, work: F64Array, first: int, last: int, size: int, raw: F64Array
) -> None:
    """Write the raw %K of each `values[t]` within its `size` window to `raw[t - first]`.

    Sliding extremes by doubling: one pass gives the extremes of every 4 values, and from a
    column of the extremes of `span` values each further pass gives those of 2 * span values,
    until four such windows, overlapping, cover `size`: the last pass reads them. Min and max
    are exact, so this equals a rescan of every window. `work` lends the passes its columns.
    """
    start = first - size + 1  # the oldest value a window of the block reaches
    low, high = values, values
    span = 1
    flip = True  # ping-pong between two pairs of columns
    if size >= 4:
        _extremes_of_four(
            values[start:last], work[_LOW_A, start + 3 : last], work[_HIGH_A, start + 3 : last]
        )
        low, high = work[_LOW_A], work[_HIGH_A]
        span, flip = 4, False
    while 4 * span <= size:
        a = start + 2 * span - 1  # the end of the first window of 2 * span values
        low_next = work[_LOW_A] if flip else work[_LOW_B]
        high_next = work[_HIGH_A] if flip else work[_HIGH_B]
        _extremes_of_pairs(
            (low[a:last], low[a - span : last - span]),
            (high[a:last], high[a - span : last - span]),
            low_next[a:last],
            high_next[a:last],
        )
        low, high = low_next, high_next
        span *= 2
        flip = not flip
    # Now span <= size < 4 * span: windows of `span` values at these lags cover `size`.
    if size >= 2 * span:
        lag1, lag2, lag3 = span, size - 2 * span, size - span
    else:
        lag1 = lag2 = lag3 = size - span
    _raw_of_extremes(
        values[first:last],
        (low[first:last], low[first - lag1 : last - lag1], low[first - lag2 : last - lag2],
         low[first - lag3 : last - lag3]),
        (high[first:last], high[first - lag1 : last - lag1], high[first - lag2 : last - lag2],
         high[first - lag3 : last - lag3]),
        raw,
    )  # fmt: skip


@_blockwise
def _sum_column(
    values: F64Array, work: F64Array, first: int, last: int, size: int, terms: int
) -> None:
    """Write the running sums of `_rolling_means` over their first `terms` values (>= 1) to
    the `_SUMS` column: sum r of the window ending at t goes to `t - lag + r`, where the lag is
    3 + size % 4 (the tail). The rest of that sum's values and the tail are still to add.
    """
    quads, tail = size // 4, size % 4
    lag = tail + 3  # the window ending at t has its partial sum r at t - lag + r
    column = work[_SUMS, first - lag : last]
    m = column.shape[0]
    oldest = first - lag - 4 * (quads - 1)
    if terms >= 4:
        _sum_four(
            column, values[oldest : oldest + m], values[oldest + 4 : oldest + 4 + m],
            values[oldest + 8 : oldest + 8 + m], values[oldest + 12 : oldest + 12 + m],
        )  # fmt: skip
        k = 4
    else:
        _copy(values[oldest : oldest + m], column)  # 0.0 + the first term
        k = 1
    while k + 4 <= terms:
        at = oldest + 4 * k
        _add_four(
            column, values[at : at + m], values[at + 4 : at + 4 + m],
            values[at + 8 : at + 8 + m], values[at + 12 : at + 12 + m],
        )  # fmt: skip
        k += 4
    while k < terms:
        _add_one(column, values[oldest + 4 * k : oldest + 4 * k + m])
        k += 1


@_blockwise
def _rolling_means(
    values: F64Array, work: F64Array, first: int, last: int, size: int, means: F64Array
) -> None:
    """Write the mean of each `size` window of `values` ending at t to `means[t - first]`.

    `_mean`'s operations, one lane per candle. Its partial sum r adds the values r, r + 4, ...
    of the window: the running sum of q = size // 4 values four apart, which is one column
    read at four lags. Sum 0 then adds the last size % 4 values (the tail). Adding 0.0 (to
    pad the tail, as `_mean`'s zero sums) changes no value.
    """
    zero = work[_ZERO, first:last]
    quads, tail = size // 4, size % 4
    # The tail of the window ending at t: its last `tail` values, then zeros.
    tail1 = values[first - tail + 1 : last - tail + 1] if tail >= 1 else zero
    tail2 = values[first - tail + 2 : last - tail + 2] if tail >= 2 else zero
    tail3 = values[first:last] if tail == 3 else zero
    if quads == 0:
        _mean_of_tail(tail1, tail2, tail3, size, means)
        return
    _sum_column(values, work, first, last, size, quads)
    sums = work[_SUMS, first - tail - 3 : last - tail]
    if tail == 0:
        _mean_of_sums(sums, size, means)
    else:
        _mean_of_sums_and_tail(sums, (tail1, tail2, tail3), size, means)


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)  # type: ignore[call-overload, untyped-decorator]
def _target(
    out: F64Array, row: int, work: F64Array, home: int, offset: int, start: int, end: int
) -> F64Array:
    """Return where an output of the block [start, end) goes: row `row` of `out` if it was
    requested (row >= 0), else its scratch column `home`."""
    if row >= 0:
        return out[row, start:end]
    return work[home, offset : offset + end - start]


@_blockwise
def _block_targets(
    out: F64Array, rows: I64Array, work: F64Array, offset: int, start: int, end: int
) -> Views:
    """Return where each output of the block [start, end) goes, in `OUTPUT_NAMES` order."""
    return (
        _target(out, rows[0], work, _RSI, offset, start, end),
        _target(out, rows[1], work, _SMOOTH_K, offset, start, end),
        _target(out, rows[2], work, _STOCH_D, offset, start, end),
        _target(out, rows[3], work, _RAW_FASTK, offset, start, end),
        _target(out, rows[4], work, _FASTD, offset, start, end),
        _target(out, rows[5], work, _ATR_COLUMN, offset, start, end),
        _target(out, rows[6], work, _RATIO, offset, start, end),
        _target(out, rows[7], work, _LOWER, offset, start, end),
        _target(out, rows[8], work, _UPPER, offset, start, end),
    )


@_blockwise
def _block_columns(
    work: F64Array, offset: int, m: int, params: Params, rows: I64Array, targets: Views
) -> None:
    """Compute the block's windowed outputs from its RSI and ATR columns and their history.

    Columns that later windows read stay in `work`, and are copied to `targets` if requested;
    the others are written to `targets` only.
    """
    stoch_period, stoch_k_period, stoch_d_period = params[1:4]
    fastk_period, fastd_period, atr_ma_period = params[4], params[5], params[7]
    first, last = offset, offset + m
    stoch_wanted = rows[1] >= 0 or rows[2] >= 0
    fastk_wanted = rows[3] >= 0 or rows[4] >= 0
    shared = stoch_period == fastk_period  # one raw stochastic serves both forms
    raw_fastk = _RAW_K if shared else _RAW_FASTK
    if stoch_wanted or (fastk_wanted and shared):
        _rolling_stochastic(work[_RSI], work, first, last, stoch_period, work[_RAW_K, first:last])
    if stoch_wanted:
        smooth_k = work[_SMOOTH_K, first:last]
        _rolling_means(work[_RAW_K], work, first, last, stoch_k_period, smooth_k)
        if rows[1] >= 0:
            _copy(smooth_k, targets[1])
        _rolling_means(work[_SMOOTH_K], work, first, last, stoch_d_period, targets[2])
    if fastk_wanted:
        if not shared:
            raw = work[_RAW_FASTK, first:last]
            _rolling_stochastic(work[_RSI], work, first, last, fastk_period, raw)
        if rows[3] >= 0:
            _copy(work[raw_fastk, first:last], targets[3])
        if stoch_wanted and shared and fastd_period == stoch_k_period:
            _copy(work[_SMOOTH_K, first:last], targets[4])  # the same means of the same values
        else:
            _rolling_means(work[raw_fastk], work, first, last, fastd_period, targets[4])
    if max(rows[6], rows[7], rows[8]) >= 0:
        atr = work[_ATR_COLUMN]
        quads = atr_ma_period // 4
        if atr_ma_period % 4 == 0 and quads > 1:  # one pass less: the bands add the last values
            _sum_column(atr, work, first, last, atr_ma_period, quads - 1)
            sums = work[_SUMS, first - 3 : last]
            last_terms = atr[first - 3 : last]  # each sum's last value, as `sums`
            _bands_of_sums(atr[first:last], sums, last_terms, params, targets[6], targets)
        else:
            atr_ma = work[_ATR_MA, first:last]
            _rolling_means(atr, work, first, last, atr_ma_period, atr_ma)
            _bands_of(atr[first:last], atr_ma, params, targets[6], targets)


@_blockwise
def _keep_history(work: F64Array, offset: int, m: int) -> None:
    """Move the last `offset` values of each windowed column's `m`-candle block in front."""
    for row in range(_WINDOWED):
        column = work[row]
        for t in range(offset):
            column[t] = column[t + m]


@_blockwise
def _run_blocks(
    prices: tuple[F64Array, F64Array, F64Array],
    out: F64Array,
    rows: tuple[I64Array, I64Array],
    work: F64Array,
    history: int,
    params: Params,
    span: tuple[int, int],
    averages: Averages,
    previous: int,
) -> tuple[Averages, int]:
    """Compute the outputs `rows` requests of candles [begin, stop) (`span`) block by block.

    `work` has `history` + block columns, and the averages are those before `begin`; `rows[1]`
    are the outputs to compute (a request of none still fills the windows, in `work`).
    `previous` is the size of the block before (0: none); returns the averages and the size of
    the last block.
    """
    high, low, close = prices
    begin, stop = span
    requested, computed = rows
    block = work.shape[1] - history
    for start in range(begin, stop, block):
        end = min(stop, start + block)
        if previous > 0:
            _keep_history(work, history, previous)
        targets = _block_targets(out, requested, work, history, start, end)
        averages = _advance_averages(
            high, low, close, start, end, averages, work, history, (params[0], params[6]),
            (targets[0], targets[5]),
        )  # fmt: skip
        _block_columns(work, history, end - start, params, computed, targets)
        previous = end - start
    return averages, previous


@_blockwise
def _averages_before(
    high: F64Array, low: F64Array, close: F64Array, end: int, periods: tuple[int, int]
) -> Averages:
    """Return RSI's and ATR's Wilder averages after candles [0, end), as `_advance_averages`
    leaves them (the same steps: the same floats), storing nothing."""
    averages = (0.0, 0.0, 0.0)
    settled = min(max(periods) + 1, end)
    for t in range(1, settled):
        averages = _seeding_step(averages, (high[t], low[t], close[t], close[t - 1]), t, periods)
    for t in range(max(settled, 1), end):
        averages = _smoothing_step(averages, (high[t], low[t], close[t], close[t - 1]), periods)
    return averages


@njit(cache=True, error_model="numpy", nogil=True)
def compute_span_into(
    high: F64Array,
    low: F64Array,
    close: F64Array,
    out: F64Array,
    rows: I64Array,
    params: Params,
    span: tuple[int, int, int],
) -> None:
    """Compute the outputs of candles [warm, stop) into `out`, `span` being (begin, warm, stop).

    `rows` is `output_rows`'s answer. The Wilder averages advance alone over candles
    [0, begin); candles [begin, warm) then only fill the windows. With `begin` = 0, or at
    least `span_lead(params)` candles before `warm`, every output equals that of one pass from
    candle 0. Warm-up NaNs are `fill_undefined`'s. Runs without the GIL, so two threads can
    each take a span of one series.
    """
    begin, warm, stop = span
    history = _history(params)
    block = min(_BLOCK, max(stop - begin, 1))
    work = np.zeros((_SCRATCH_ROWS, history + block))
    averages = _averages_before(high, low, close, begin, (params[0], params[6]))
    none = np.full(N_OUTPUTS, -1, dtype=np.int64)
    prices = (high, low, close)
    averages, previous = _run_blocks(
        prices, out, (none, rows), work, history, params, (begin, warm), averages, 0
    )
    _run_blocks(prices, out, (rows, rows), work, history, params, (warm, stop), averages, previous)


@njit(cache=True, error_model="numpy", inline="always")
def _history(params: Params) -> int:
    """Return how many values before a block its windows reach back to."""
    return max(params[1], params[2], params[3], params[4], params[5], params[7]) - 1


@njit(cache=True, error_model="numpy")
def span_lead(params: Params) -> int:
    """Return the candles a span needs before its first output to give every output exactly:
    the longest chain of windows (raw %K, its mean, their mean; the StochRSI pair; ATR's mean).
    """
    stoch = params[1] + params[2] + params[3] - 3
    stochrsi = params[4] + params[5] - 2
    return max(stoch, stochrsi, params[7] - 1)


@njit(cache=True, error_model="numpy")
def fill_undefined(out: F64Array, rows: I64Array, params: Params) -> None:
    """Set each requested output to NaN before its first defined value (TA-Lib's lookback).

    STOCH and STOCHRSI give K (fastk) only where D (fastd) is defined.
    """
    rsi_period, stoch_period, stoch_k_period, stoch_d_period = params[:4]
    fastk_period, fastd_period, atr_period, atr_ma_period = params[4:8]
    stoch = rsi_period + stoch_period + stoch_k_period + stoch_d_period - 3
    stochrsi = rsi_period + fastk_period + fastd_period - 2
    bands = atr_period + atr_ma_period - 1
    firsts = (rsi_period, stoch, stoch, stochrsi, stochrsi, atr_period, bands, bands, bands)
    for k in range(N_OUTPUTS):
        if rows[k] >= 0:
            out[rows[k], : min(firsts[k], out.shape[1])] = np.nan


@njit(cache=True, error_model="numpy")
def output_rows(
    high: F64Array, low: F64Array, close: F64Array, outputs: I64Array, out: F64Array
) -> I64Array:
    """Return the row of `out` each output goes to (-1: not requested), checking the request."""
    n = close.shape[0]
    _check_lengths(n, high, low, close)
    if out.shape[0] != outputs.shape[0] or out.shape[1] != n:
        raise ValueError("out must have one row per requested output, one value per candle")
    rows = np.full(N_OUTPUTS, -1, dtype=np.int64)
    for r in range(outputs.shape[0]):
        k = outputs[r]
        if k < 0 or k >= N_OUTPUTS or rows[k] >= 0:
            raise ValueError("outputs must be distinct indices into OUTPUT_NAMES")
        rows[k] = r
    return rows


@njit(cache=True, error_model="numpy")
def compute_selected_into(
    high: F64Array,
    low: F64Array,
    close: F64Array,
    outputs: I64Array,
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
    """Compute output `outputs[r]` (an index into `OUTPUT_NAMES`) into `out[r]`, for every r.

    References and floats as in `compute_batch_into`. Work that no requested output needs is
    skipped: without the STOCHRSI pair, its smoothing; without K and D, theirs; without the
    ratio and the bands, ATR's moving average.
    """
    params = (
        rsi_period, stoch_period, stoch_k_period, stoch_d_period, stochrsi_fastk_period,
        stochrsi_fastd_period, atr_period, atr_ma_period, base_lower, base_upper, sensitivity,
        adjustment_factor, min_width, max_width,
    )  # fmt: skip
    rows = output_rows(high, low, close, outputs, out)
    compute_span_into(high, low, close, out, rows, params, (0, 0, close.shape[0]))
    fill_undefined(out, rows, params)


def compute_in_two(
    high: F64Array,
    low: F64Array,
    close: F64Array,
    outputs: I64Array,
    out: F64Array,
    params: Params,
    cut: int,
) -> None:
    """`compute_selected_into` (`params` in `PARAM_NAMES` order) in two threads, cut at candle
    `cut`: the same floats.

    This thread computes candles [0, cut). A helper thread advances the Wilder averages alone
    up to `span_lead` candles before `cut` (a few nanoseconds a candle: no outputs, no
    windows), fills the windows over those, then computes [cut, n).
    """
    rows = output_rows(high, low, close, outputs, out)
    n = close.shape[0]
    if not 0 <= cut <= n:
        raise ValueError(f"cut must lie in [0, {n}], not {cut}")
    second = _helper().submit(
        compute_span_into, high, low, close, out, rows, params,
        (max(cut - span_lead(params), 0), cut, n),
    )  # fmt: skip
    try:
        compute_span_into(high, low, close, out, rows, params, (0, 0, cut))
    finally:
        second.result()
    fill_undefined(out, rows, params)


def compute_selected(
    high: F64Array,
    low: F64Array,
    close: F64Array,
    outputs: I64Array,
    out: F64Array,
    params: Params,
) -> None:
    """`compute_selected_into` (`params` in `PARAM_NAMES` order), on two cores where the series
    is long enough to gain from it and the process may use two; the same floats either way."""
    n = close.shape[0]
    if n < _TWO_THREADS_FROM or len(os.sched_getaffinity(0)) < 2:
        compute_selected_into(high, low, close, outputs, out, *params)
    else:
        compute_in_two(high, low, close, outputs, out, params, round(n * _FIRST_SHARE))


def _helper() -> ThreadPoolExecutor:
    """Return the thread that computes the second span of a series cut in two."""
    global _helper_pool
    with _helper_lock:
        if _helper_pool is None:
            _helper_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="indicators-batch")
        return _helper_pool


_helper_pool: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


@njit(cache=True, error_model="numpy")
def compute_batch_into(
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
    """Compute every indicator over one series into `out[k]`, k in `OUTPUT_NAMES`.

    References, warm-up NaNs included: TA-Lib `RSI(close, rsi_period)`; `STOCH(rsi, rsi, rsi,
    stoch_period, stoch_k_period, 0, stoch_d_period, 0)` for stoch_k and stoch_d; `STOCHRSI(close,
    rsi_period, stochrsi_fastk_period, stochrsi_fastd_period, 0)` for the fastk and fastd;
    `ATR(high, low, close, atr_period)`; then ATR over its `atr_ma_period` SMA and the bands.
    Callers in Python should allocate `out` with NumPy: on large series its huge pages make this
    several times cheaper than an allocation inside the kernel.
    """
    compute_selected_into(
        high, low, close, np.arange(N_OUTPUTS), out, rsi_period, stoch_period, stoch_k_period,
        stoch_d_period, stochrsi_fastk_period, stochrsi_fastd_period, atr_period, atr_ma_period,
        base_lower, base_upper, sensitivity, adjustment_factor, min_width, max_width,
    )  # fmt: skip


@njit(cache=True, error_model="numpy")
def compute_batch(
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
) -> Columns:
    """Compute every indicator over one series; columns in `OUTPUT_NAMES` order.

    References: TA-Lib RSI, STOCH on RSI, STOCHRSI and ATR, parameters as in
    `compute_batch_into`.
    """
    out = np.empty((N_OUTPUTS, close.shape[0]))
    compute_selected_into(
        high, low, close, np.arange(N_OUTPUTS), out, rsi_period, stoch_period, stoch_k_period,
        stoch_d_period, stochrsi_fastk_period, stochrsi_fastd_period, atr_period, atr_ma_period,
        base_lower, base_upper, sensitivity, adjustment_factor, min_width, max_width,
    )  # fmt: skip
    return out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7], out[8]
