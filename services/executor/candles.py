"""One market's candles as arrays (the backtester's input), checked once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.collector.sources import REPLAY_EXCHANGE
from shared.messages import TIMEFRAME_MS

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """One market's candles: open times strictly increasing, gaps allowed, prices > 0."""

    times_ms: I64Array
    open: F64Array
    high: F64Array
    low: F64Array
    close: F64Array
    timeframe: str = "1m"
    exchange: str = REPLAY_EXCHANGE

    def __post_init__(self) -> None:
        times = np.ascontiguousarray(self.times_ms, dtype=np.int64)
        object.__setattr__(self, "times_ms", times)
        for name in ("open", "high", "low", "close"):
            column = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if column.shape != times.shape or times.ndim != 1:
                raise ValueError("times and OHLC columns must be 1-D and of the same length")
            object.__setattr__(self, name, column)
        if self.timeframe not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {self.timeframe!r}")
        if times.size == 0:
            raise ValueError("no candles")
        if (np.diff(times) <= 0).any():
            raise ValueError("candle open times must be strictly increasing")
        prices = np.stack([self.open, self.high, self.low, self.close])
        if not (np.isfinite(prices) & (prices > 0)).all():
            raise ValueError("every price must be finite and > 0")

    @property
    def timeframe_ms(self) -> int:
        """Return the candle length in milliseconds."""
        return TIMEFRAME_MS[self.timeframe]
