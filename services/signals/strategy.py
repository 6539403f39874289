"""Pure strategy rules: IndicatorsComputed -> SignalEmitted or nothing."""

from __future__ import annotations

import math
from typing import Protocol

from shared.messages import IndicatorsComputed, Side, SignalEmitted, signal_id


class Strategy(Protocol):
    """A rule that turns one candle's indicators into a signal, or into nothing."""

    name: str

    def evaluate(self, indicators: IndicatorsComputed) -> SignalEmitted | None:
        """Return the signal this candle's indicators call for, if any."""
        ...


class StochRsiBands:
    """Buy when StochRSI K crosses up through the dynamic lower band; sell when it crosses
    down through the dynamic upper band.

    A cross compares the previous candle's K and band with this candle's, both carried by the
    message, so the rule keeps no state and decides the same after any restart.
    """

    name = "stochrsi_bands"

    def evaluate(self, indicators: IndicatorsComputed) -> SignalEmitted | None:
        m = indicators
        values = (
            m.stoch_k,
            m.prev_stoch_k,
            m.band_lower,
            m.prev_band_lower,
            m.band_upper,
            m.prev_band_upper,
        )
        if any(math.isnan(value) for value in values):
            return None
        side: Side
        if m.prev_stoch_k < m.prev_band_lower and m.stoch_k >= m.band_lower:
            side, reason = "buy", f"K {m.stoch_k:.2f} crossed up through lower {m.band_lower:.2f}"
        elif m.prev_stoch_k > m.prev_band_upper and m.stoch_k <= m.band_upper:
            side, reason = (
                "sell",
                f"K {m.stoch_k:.2f} crossed down through upper {m.band_upper:.2f}",
            )
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
