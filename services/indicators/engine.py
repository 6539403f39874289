"""Per-market indicator state: closed candles (or stored history) in, IndicatorsComputed out.

Pure: no I/O, no clock. One policy for missing candles everywhere: by default a minute an
exchange omitted (no trades) is filled as a flat candle at the previous close with zero volume,
as Freqtrade does; a filled candle advances the indicators but yields no row of its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.indicators.batch import (
    compute_batch,
    compute_batch_into,
    compute_in_two,
    compute_selected,
)
from services.indicators.kernels import (
    LAST_BAND_LOWER,
    LAST_BAND_UPPER,
    LAST_STOCH_K,
    N_OUTPUTS,
    OUTPUT_NAMES,
    PARAM_NAMES,
    PREV_CLOSE,
    Params,
    new_state,
    state_width,
    update_many,
    warm_state,
)
from shared.messages import TIMEFRAME_MS, CandleClosed, IndicatorsComputed

Market = tuple[str, str, str]  # (exchange, symbol, timeframe)
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_PREVIOUS_SLOTS = [LAST_STOCH_K, LAST_BAND_LOWER, LAST_BAND_UPPER]
_ALL_OUTPUTS = np.arange(N_OUTPUTS, dtype=np.int64)  # the batch kernels' request: every output


@dataclass(frozen=True, slots=True)
class IndicatorParams:
    """Periods (in candles) and dynamic-band parameters; every field is configurable."""

    rsi_period: int = 14
    stoch_period: int = 14  # window of the stochastic of RSI behind stoch_k
    stoch_k_period: int = 3  # SMA smoothing the raw stochastic into K
    stoch_d_period: int = 3  # SMA of K into D
    stochrsi_fastk_period: int = 14  # TA-Lib STOCHRSI fastk_period
    stochrsi_fastd_period: int = 3  # TA-Lib STOCHRSI fastd_period
    atr_period: int = 14
    atr_ma_period: int = 20  # SMA of ATR that the volatility ratio divides by
    base_lower: float = 35.0
    base_upper: float = 100.0
    sensitivity: float = 0.7
    adjustment_factor: float = 0.3
    min_width: float = 10.0
    max_width: float = 50.0

    def __post_init__(self) -> None:
        for name in PARAM_NAMES[:8]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in PARAM_NAMES[8:]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            # Kernels are compiled for float64 scalars: store floats, not ints.
            object.__setattr__(self, name, float(value))
        if self.sensitivity <= 0:
            raise ValueError(f"sensitivity must be > 0, got {self.sensitivity!r}")
        for name in ("adjustment_factor", "min_width", "max_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def kernel_args(self) -> Params:
        """Return the parameters as the kernels take them, in `PARAM_NAMES` order."""
        return (
            self.rsi_period, self.stoch_period, self.stoch_k_period, self.stoch_d_period,
            self.stochrsi_fastk_period, self.stochrsi_fastd_period, self.atr_period,
            self.atr_ma_period, self.base_lower, self.base_upper, self.sensitivity,
            self.adjustment_factor, self.min_width, self.max_width,
        )  # fmt: skip

    @property
    def state_width(self) -> int:
        """Return the float64 slots of one market's state row."""
        width: int = state_width(
            self.stoch_period,
            self.stoch_k_period,
            self.stoch_d_period,
            self.stochrsi_fastk_period,
            self.stochrsi_fastd_period,
            self.atr_ma_period,
        )
        return width

    @property
    def warm_up_candles(self) -> int:
        """Return the index of the first candle at which every output is defined."""
        stoch = self.rsi_period + self.stoch_period + self.stoch_k_period + self.stoch_d_period - 3
        stochrsi = self.rsi_period + self.stochrsi_fastk_period + self.stochrsi_fastd_period - 2
        bands = self.atr_period + self.atr_ma_period - 1
        return max(stoch, stochrsi, bands)


def _gap_layout(times: I64Array, timeframe_ms: int) -> tuple[I64Array, I64Array]:
    """Return, for every candle of the filled series, its source row and timeframes after it.

    A filled candle's source is the row before the gap; a row is its own source, at offset 0.
    """
    if timeframe_ms <= 0:
        raise ValueError(f"timeframe_ms must be > 0, got {timeframe_ms}")
    steps = np.diff(times)
    if np.any(steps <= 0):
        raise ValueError("candle times must be strictly increasing")
    missing = (steps - 1) // timeframe_ms  # open times on the grid strictly inside each gap
    source = np.repeat(np.arange(times.size), np.append(missing, 0) + 1)
    offset = np.arange(source.size) - np.searchsorted(source, source)
    return source, offset


def fill_gaps(
    times_ms: npt.ArrayLike,
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    timeframe_ms: int,
) -> tuple[I64Array, F64Array, F64Array, F64Array, F64Array, F64Array, BoolArray]:
    """Insert the candles missing between rows: flat at the previous close, zero volume.

    Times are open times, strictly increasing; a missing candle is every `timeframe_ms` step
    after a row that opens before the next row. Returns the filled columns and `is_real`, True
    on the input rows.
    """
    times = np.asarray(times_ms, dtype=np.int64)
    opens, highs, lows, closes, volumes = (
        np.asarray(column, dtype=np.float64) for column in (open_, high, low, close, volume)
    )
    if times.ndim != 1 or any(
        c.shape != times.shape for c in (opens, highs, lows, closes, volumes)
    ):
        raise ValueError("times and OHLCV columns must be 1-D and of the same length")
    source, offset = _gap_layout(times, timeframe_ms)
    is_real = offset == 0
    filled_close = closes[source]  # a filled candle is flat at the close before the gap
    return (
        times[source] + offset * timeframe_ms,
        np.where(is_real, opens[source], filled_close),
        np.where(is_real, highs[source], filled_close),
        np.where(is_real, lows[source], filled_close),
        filled_close,
        np.where(is_real, volumes[source], 0.0),
        is_real,
    )


def _as_series(
    times_ms: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike
) -> tuple[I64Array, F64Array, F64Array, F64Array]:
    """Return contiguous int64 times and float64 prices (the layout the kernels are built for)."""
    times = np.ascontiguousarray(times_ms, dtype=np.int64)
    prices = [np.ascontiguousarray(column, dtype=np.float64) for column in (high, low, close)]
    if times.ndim != 1 or any(column.shape != times.shape for column in prices):
        raise ValueError("times, high, low and close must be 1-D and of the same length")
    return times, prices[0], prices[1], prices[2]


def compute_frame(
    times_ms: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    *,
    timeframe_ms: int,
    params: IndicatorParams,
    fill_gaps: bool = True,
) -> dict[str, npt.NDArray[Any]]:
    """Compute the indicators of one market's candles in one batch pass.

    Returns columns aligned with the input rows: "open_time_ms", "close", every name of
    `OUTPUT_NAMES`, and the `prev_*` values a message carries (one step earlier, filled steps
    included). With `fill_gaps`, missing candles are filled first; otherwise rows are taken as
    given.
    """
    times, highs, lows, closes = _as_series(times_ms, high, low, close)
    if fill_gaps:
        source, offset = _gap_layout(times, timeframe_ms)
        is_real = offset == 0
        series_close = closes[source]
        series_high = np.where(is_real, highs[source], series_close)
        series_low = np.where(is_real, lows[source], series_close)
        rows: I64Array | slice = np.flatnonzero(is_real)
    else:
        series_high, series_low, series_close, rows = highs, lows, closes, slice(None)
    out = np.empty((N_OUTPUTS, series_close.size))  # NumPy's allocation: see compute_batch_into
    compute_selected(series_high, series_low, series_close, _ALL_OUTPUTS, out, params.kernel_args)
    frame: dict[str, npt.NDArray[Any]] = {"open_time_ms": times, "close": closes}
    for name, column in zip(OUTPUT_NAMES, out, strict=True):
        frame[name] = column[rows]
        if name in ("stoch_k", "band_lower", "band_upper"):
            frame[f"prev_{name}"] = np.append(np.nan, column[:-1])[rows]
    return frame


def _timeframe_ms(timeframe: str) -> int:
    """Return the length of a timeframe in milliseconds, rejecting unknown ones."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}") from None


def _check_candle(candle: CandleClosed) -> None:
    """Raise ValueError for a candle that would poison its market's state for good."""
    _timeframe_ms(candle.timeframe)
    if not (
        math.isfinite(candle.high) and math.isfinite(candle.low) and math.isfinite(candle.close)
    ):
        raise ValueError(f"{candle.key} at {candle.open_time_ms}: non-finite price")


def _message(
    candle: CandleClosed, values: Sequence[float], previous: Sequence[float]
) -> IndicatorsComputed:
    """Return the message of one candle from its outputs (`OUTPUT_NAMES` order) and `prev_*`."""
    rsi, stoch_k, stoch_d, fastk, fastd, atr, ratio, band_lower, band_upper = values
    return IndicatorsComputed(
        exchange=candle.exchange,
        symbol=candle.symbol,
        timeframe=candle.timeframe,
        open_time_ms=candle.open_time_ms,
        close=candle.close,
        rsi=rsi,
        stoch_k=stoch_k,
        stoch_d=stoch_d,
        stochrsi_fastk=fastk,
        stochrsi_fastd=fastd,
        atr=atr,
        volatility_ratio=ratio,
        band_lower=band_lower,
        band_upper=band_upper,
        prev_stoch_k=previous[0],
        prev_band_lower=previous[1],
        prev_band_upper=previous[2],
        candle_closed_at_ms=candle.closed_at_ms,
        open=candle.open,
        high=candle.high,
        low=candle.low,
    )


class _Steps:
    """Kernel steps planned for one `update` call, in input order (filled candles included)."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.rounds: list[int] = []  # the step's position in its market's own sequence
        self.high: list[float] = []
        self.low: list[float] = []
        self.close: list[float] = []
        self.candle: list[int] = []  # index of the input candle, -1 for a filled one

    def add(
        self, row: int, round_: int, high: float, low: float, close: float, candle: int
    ) -> None:
        self.rows.append(row)
        self.rounds.append(round_)
        self.high.append(high)
        self.low.append(low)
        self.close.append(close)
        self.candle.append(candle)


class IndicatorEngine:
    """Indicator state of many markets, advanced by closed candles in one kernel call per round.

    A market is (exchange, symbol, timeframe). Its state is one row of a 2-D float64 array
    that grows as markets appear, so a minute's closes for thousands of markets are one call.
    """

    def __init__(
        self, params: IndicatorParams | None = None, *, fill_gaps: bool = True, capacity: int = 256
    ) -> None:
        self.params = params if params is not None else IndicatorParams()
        self.fill_gaps = fill_gaps
        self.kernel_calls = 0  # update_many calls so far: one per round of candles
        self._args = self.params.kernel_args
        self._state: F64Array = new_state(max(capacity, 1), self.params.state_width)
        self._rows: dict[Market, int] = {}
        self._last_times: list[int | None] = []

    @property
    def markets(self) -> list[Market]:
        """Return the markets with state, in the order they appeared."""
        return list(self._rows)

    def last_time(self, market: Market) -> int | None:
        """Return the open time of the market's last candle, or None if it has none."""
        row = self._rows.get(market)
        return None if row is None else self._last_times[row]

    def warm(
        self,
        market: Market,
        times_ms: npt.ArrayLike,
        high: npt.ArrayLike,
        low: npt.ArrayLike,
        close: npt.ArrayLike,
    ) -> None:
        """Restore a market's state from its stored candles, replacing any state it had.

        Gaps are filled as live, and the replay runs the live step: the state is the one a
        market fed these candles live would have. Wilder averages forget their seed as
        ((period - 1) / period)^n: with the default periods the last 1,000 stored candles
        already give the same floats as the whole history; far fewer give close values.
        """
        timeframe_ms = _timeframe_ms(market[2])
        times, highs, lows, closes = _as_series(times_ms, high, low, close)
        if not (np.isfinite(highs).all() and np.isfinite(lows).all() and np.isfinite(closes).all()):
            raise ValueError(f"{market}: non-finite price in the history")
        source, offset = _gap_layout(times, timeframe_ms)
        if self.fill_gaps:
            is_real = offset == 0
            closes = closes[source]
            highs = np.where(is_real, highs[source], closes)
            lows = np.where(is_real, lows[source], closes)
        row = self._row(market)
        self._state[row] = warm_state(highs, lows, closes, *self._args)
        self._last_times[row] = int(times[-1]) if times.size else None

    def update(self, candles: Sequence[CandleClosed]) -> list[IndicatorsComputed]:
        """Advance the markets by closed candles (time order per market); return their messages.

        A candle at or before its market's last time is skipped and has no message. Missing
        candles before one are filled first (with `fill_gaps`). Raises ValueError, before
        changing any state, if a candle has an unknown timeframe or a non-finite price.
        """
        for candle in candles:
            _check_candle(candle)
        steps = self._plan(candles)
        if not steps.rows:
            return []
        rows = np.array(steps.rows, dtype=np.int64)
        high = np.array(steps.high)
        low = np.array(steps.low)
        close = np.array(steps.close)
        rounds = np.array(steps.rounds, dtype=np.int64)
        out = np.empty((rows.size, N_OUTPUTS))
        previous = np.empty((rows.size, len(_PREVIOUS_SLOTS)))
        # Round r holds every market's r-th step: each call sees a market at most once.
        order = np.argsort(rounds, kind="stable")
        bounds = np.searchsorted(rounds[order], np.arange(rounds.max() + 2))
        for start, end in itertools.pairwise(bounds):
            chosen = order[start:end]
            chosen_rows = rows[chosen]
            previous[chosen] = self._state[chosen_rows[:, None], _PREVIOUS_SLOTS]
            round_out = np.empty((chosen.size, N_OUTPUTS))
            update_many(
                self._state, chosen_rows, high[chosen], low[chosen], close[chosen], round_out,
                *self._args,
            )  # fmt: skip
            self.kernel_calls += 1
            out[chosen] = round_out
        real = np.flatnonzero(np.array(steps.candle) >= 0)  # planned in input order
        return [
            _message(candles[steps.candle[step]], values, before)
            for step, values, before in zip(
                real.tolist(), out[real].tolist(), previous[real].tolist(), strict=True
            )
        ]

    def _plan(self, candles: Sequence[CandleClosed]) -> _Steps:
        """Return the steps of the candles (gap fills first); record the markets' last times."""
        steps = _Steps()
        next_round: dict[int, int] = {}
        last_close: dict[int, float] = {}
        for index, candle in enumerate(candles):
            row = self._row((candle.exchange, candle.symbol, candle.timeframe))
            last = self._last_times[row]
            if last is not None and candle.open_time_ms <= last:
                continue
            round_ = next_round.get(row, 0)
            if self.fill_gaps and last is not None:
                missing = (candle.open_time_ms - last - 1) // _timeframe_ms(candle.timeframe)
                flat = last_close.get(row, float(self._state[row, PREV_CLOSE]))
                for _ in range(missing):
                    steps.add(row, round_, flat, flat, flat, -1)
                    round_ += 1
            steps.add(row, round_, candle.high, candle.low, candle.close, index)
            next_round[row] = round_ + 1
            last_close[row] = candle.close
            self._last_times[row] = candle.open_time_ms
        return steps

    def _row(self, market: Market) -> int:
        """Return the market's state row, adding a fresh one (growing the array) if it is new."""
        row = self._rows.get(market)
        if row is None:
            row = len(self._rows)
            if row == self._state.shape[0]:
                grown: F64Array = new_state(2 * row, self._state.shape[1])
                grown[:row] = self._state
                self._state = grown
            self._rows[market] = row
            self._last_times.append(None)
        return row


def warm_up_jit(params: IndicatorParams | None = None, *, batch: bool = True) -> None:
    """Compile the kernels (or load them from Numba's disk cache) before the first real candle:
    the incremental ones, and with `batch` those of whole series too.

    The indicators service runs the incremental kernels only: loading the batch ones as well
    would add about 0.2 s to its start.
    """
    params = params if params is not None else IndicatorParams()
    args = params.kernel_args
    prices = np.linspace(1.0, 2.0, 8)
    if batch:
        compute_batch(prices, prices, prices, *args)
        out = np.empty((N_OUTPUTS, prices.size))
        compute_batch_into(prices, prices, prices, out, *args)
        compute_in_two(prices, prices, prices, _ALL_OUTPUTS, out, args, prices.size // 2)
    warm_state(prices, prices, prices, *args)
    state = new_state(2, params.state_width)
    rows = np.array([1, 0], dtype=np.int64)
    update_many(state, rows, prices[:2], prices[:2], prices[:2], np.empty((2, N_OUTPUTS)), *args)
