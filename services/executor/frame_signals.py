"""A market's signals for backtests (pure): candles in, signal rows and their live messages out.

The indicators come from the batch kernels (`compute_frame`, missing candles filled as the live
indicators service fills them) and the signal rows from the strategy's batch path. A signal
row's message is built when the trader needs it, the live way: the row's `IndicatorsComputed`
(as the indicators service publishes it) through `StochRsiBands.evaluate`, with the previous
row's message as history, as the signals service passes it (built only if the strategy reads
it: the message carries the previous K itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

from services.executor.candles import CandleArrays
from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.strategy import BandsParams, StochRsiBands
from shared.messages import IndicatorsComputed, SignalEmitted

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]


_PRICES = ("open", "high", "low", "close")
_OUTPUTS = (
    "rsi", "stoch_k", "stoch_d", "stochrsi_fastk", "stochrsi_fastd", "atr", "volatility_ratio",
    "band_lower", "band_upper", "prev_stoch_k", "prev_band_lower", "prev_band_upper",
)  # fmt: skip


class FrameSignals:
    """One market's indicator frame and signals: `side` per signal row, `message(row)`."""

    def __init__(
        self,
        symbol: str,
        candles: CandleArrays,
        indicators: IndicatorParams,
        strategy: BandsParams,
        *,
        fill_gaps: bool = True,
        sells: bool = True,
    ) -> None:
        """Compute the frame and the signal rows; `sells=False` drops every sell signal."""
        self.symbol = symbol
        self.candles = candles
        self.strategy = StochRsiBands(strategy)
        self.frame: Mapping[str, F64Array] = compute_frame(
            candles.times_ms, candles.high, candles.low, candles.close,
            timeframe_ms=candles.timeframe_ms, params=indicators, fill_gaps=fill_gaps,
        )  # fmt: skip
        sides = self.strategy.signals(self.frame)
        if not sells:
            sides[sides < 0] = 0
        self.rows: I64Array = np.flatnonzero(sides)
        chosen = sides[self.rows]
        self.side: dict[int, int] = dict(zip(self.rows.tolist(), chosen.tolist(), strict=True))
        self.sell_rows: I64Array = self.rows[chosen < 0]
        # Each signal row's values and the row's before it, read in bulk (`message` needs few).
        self._number = {row: number for number, row in enumerate(self.rows.tolist())}
        self._now = self._values(self.rows)
        self._before = self._values(np.maximum(self.rows - 1, 0))

    def _values(self, rows: I64Array) -> list[list[float]]:
        """Return, per row, its `_PRICES` then its `_OUTPUTS` (floats) and open time."""
        columns = [getattr(self.candles, name)[rows] for name in _PRICES]
        columns += [self.frame[name][rows] for name in _OUTPUTS]
        columns.append(self.candles.times_ms[rows].astype(np.float64))  # exact below 2**53
        values: list[list[float]] = np.column_stack(columns).tolist()
        return values

    @property
    def atr(self) -> F64Array:
        """Return the ATR of every row."""
        return self.frame["atr"]

    def indicators(self, row: int, *, before: bool = False) -> IndicatorsComputed:
        """Return the message the live indicators service publishes for a signal row (with
        `before`: for the row before it)."""
        values = (self._before if before else self._now)[self._number[row]]
        (
            open_, high, low, close, rsi, k, d, fastk, fastd, atr, ratio, lower, upper, prev_k,
            prev_lower, prev_upper, time_float,
        ) = values  # fmt: skip
        c, time_ms = self.candles, int(time_float)
        return IndicatorsComputed(
            exchange=c.exchange, symbol=self.symbol, timeframe=c.timeframe, open_time_ms=time_ms,
            open=open_, high=high, low=low, close=close, rsi=rsi, stoch_k=k, stoch_d=d,
            stochrsi_fastk=fastk, stochrsi_fastd=fastd, atr=atr, volatility_ratio=ratio,
            band_lower=lower, band_upper=upper, prev_stoch_k=prev_k, prev_band_lower=prev_lower,
            prev_band_upper=prev_upper, candle_closed_at_ms=time_ms + c.timeframe_ms,
        )  # fmt: skip

    def message(self, row: int) -> SignalEmitted:
        """Return the signal of a signal row, built as the live signals service builds it."""
        history = _History(self, row) if row > 0 else ()
        signal = self.strategy.evaluate(self.indicators(row), history)
        if signal is None or (signal.side == "buy") != (self.side[row] > 0):
            raise RuntimeError(f"{self.symbol} row {row}: batch and live strategy paths differ")
        return signal


class _History(Sequence[IndicatorsComputed]):
    """The message of the row before a signal row, as the live history's last entry, built
    only if read."""

    def __init__(self, signals: FrameSignals, row: int) -> None:
        self._signals, self._row = signals, row

    def __len__(self) -> int:
        return 1

    @overload
    def __getitem__(self, index: int) -> IndicatorsComputed: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[IndicatorsComputed]: ...

    def __getitem__(self, index: int | slice) -> IndicatorsComputed | Sequence[IndicatorsComputed]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if index not in (0, -1):
            raise IndexError(index)
        return self._signals.indicators(self._row, before=True)
