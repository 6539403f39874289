"""Pure strategy rules: IndicatorsComputed (and the symbol's recent ones) -> a signal or nothing.

A strategy is one small class: a `name`, and `evaluate(indicators, history)` returning a
`SignalEmitted` or None, where `history` holds the symbol's previous indicator messages, oldest
first. Optionally a batch path, `signals(frame)`, for backtests (which fall back to `evaluate`
row by row without it); it must decide exactly what `evaluate` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from shared.messages import IndicatorsComputed, Side, SignalEmitted, signal_id

History = Sequence[IndicatorsComputed]
KLine = Literal["stoch_k", "stoch_d", "stochrsi_fastk", "stochrsi_fastd"]


class Strategy(Protocol):
    """A rule that turns one candle's indicators into a signal, or into nothing."""

    name: str

    def evaluate(
        self, indicators: IndicatorsComputed, history: History = ()
    ) -> SignalEmitted | None:
        """Return the signal this candle's indicators call for, if any."""
        ...


@dataclass(frozen=True, slots=True)
class BandsParams:
    """What a user tunes in the StochRSI dynamic-bands strategy (the bands themselves are the
    indicators' parameters).

    `line`: the StochRSI line that must cross the bands (the chart-platform K by default).
    `buy`, `sell`: each side can be switched off.
    """

    line: KLine = "stoch_k"
    buy: bool = True
    sell: bool = True


class StochRsiBands:
    """Buy when StochRSI K crosses up through the dynamic lower band; sell when it crosses
    down through the dynamic upper band.

    A cross compares the previous candle's K and band with this candle's, both carried by the
    message, so the rule keeps no state and decides the same after any restart.
    """

    name = "stochrsi_bands"

    def __init__(self, params: BandsParams | None = None) -> None:
        self.params = params or BandsParams()

    def inputs(self, indicators: IndicatorsComputed, history: History = ()) -> tuple[float, ...]:
        """Return everything `evaluate` decides from: the line now and before, both bands now
        and before. Equal inputs, equal decision (`gate.ChangeGate` skips on that)."""
        m, line = indicators, self.params.line
        if line == "stoch_k":
            before = m.prev_stoch_k
        else:
            before = getattr(history[-1], line) if history else math.nan
        now = getattr(m, line)
        return (now, before, m.band_lower, m.prev_band_lower, m.band_upper, m.prev_band_upper)

    def evaluate(
        self, indicators: IndicatorsComputed, history: History = ()
    ) -> SignalEmitted | None:
        """Decide on one candle. The previous value of K comes with the message; another line's
        comes from `history` (no decision on a symbol's first candle after a start)."""
        m, p = indicators, self.params
        now = getattr(m, p.line)
        if p.line == "stoch_k":
            before = m.prev_stoch_k
        elif history:
            before = getattr(history[-1], p.line)
        else:
            return None
        values = (now, before, m.band_lower, m.prev_band_lower, m.band_upper, m.prev_band_upper)
        if any(math.isnan(value) for value in values):
            return None
        side: Side
        if p.buy and before < m.prev_band_lower and now >= m.band_lower:
            side, reason = "buy", f"K {now:.2f} crossed up through lower {m.band_lower:.2f}"
        elif p.sell and before > m.prev_band_upper and now <= m.band_upper:
            side, reason = "sell", f"K {now:.2f} crossed down through upper {m.band_upper:.2f}"
        else:
            return None
        return SignalEmitted(
            signal_id=signal_id(self.name, m.exchange, m.symbol, m.timeframe, m.open_time_ms),
            strategy=self.name,
            exchange=m.exchange,
            symbol=m.symbol,
            timeframe=m.timeframe,
            open_time_ms=m.open_time_ms,
            side=side,
            price=m.close,
            reason=reason,
            candle_closed_at_ms=m.candle_closed_at_ms,
        )

    def signals(self, frame: Mapping[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.int8]:
        """Return, per row of an indicator frame (`engine.compute_frame`: each column plus the
        `prev_*` ones a message carries), what `evaluate` decides on that row's message: 1 buy,
        -1 sell, 0 nothing. The batch path of backtests, with the same comparisons."""
        p = self.params
        k = frame[p.line]
        # the previous row's value: the message's prev_stoch_k, or the history's last message
        prev_k = frame["prev_stoch_k"] if p.line == "stoch_k" else np.append(np.nan, k[:-1])
        lower, prev_lower = frame["band_lower"], frame["prev_band_lower"]
        upper, prev_upper = frame["band_upper"], frame["prev_band_upper"]
        out = np.zeros(k.shape[0], dtype=np.int8)
        with np.errstate(invalid="ignore"):  # NaN compares False: warming up gives nothing
            buy = (prev_k < prev_lower) & (k >= lower) if p.buy else np.zeros(k.shape, bool)
            sell = (prev_k > prev_upper) & (k <= upper) if p.sell else np.zeros(k.shape, bool)
        out[buy] = 1
        out[sell & ~buy] = -1
        return out
