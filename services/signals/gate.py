"""Which indicator messages the strategy need not see (pure): messages in -> evaluate or skip.

A symbol whose strategy inputs (`Strategy.inputs`, or every indicator value for a strategy
without one) are those of its last evaluation is skipped: the strategy decides from its inputs
only, so it would decide the same, and a decision to signal cannot repeat (for the bands
strategy: equal inputs mean the line equals its previous value and so do the bands, and nothing
crosses). Skipping never misses a signal. An optional minimum price move skips more, at the
cost of possibly missing a crossing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.messages import IndicatorsComputed

Inputs = tuple[float, ...]


def inputs_of(m: IndicatorsComputed) -> Inputs:
    """Every indicator value a strategy may read (close and times excluded)."""
    return (
        m.rsi, m.stoch_k, m.stoch_d, m.stochrsi_fastk, m.stochrsi_fastd, m.atr,
        m.volatility_ratio, m.band_lower, m.band_upper, m.prev_stoch_k, m.prev_band_lower,
        m.prev_band_upper,
    )  # fmt: skip


@dataclass(slots=True)
class ChangeGate:
    """Remembers each symbol's last evaluated inputs (and close) to skip what cannot matter.

    `min_price_move_pct` > 0 also skips a candle whose close moved less than that (percent)
    from the last evaluated one: cheaper, but a band crossing on a small move is then missed.
    """

    min_price_move_pct: float = 0.0
    _last: dict[str, tuple[Inputs, float]] = field(default_factory=dict)
    skipped: int = 0

    def admit(self, m: IndicatorsComputed, inputs: Inputs | None = None) -> bool:
        """Return whether the strategy must evaluate this message (and note it if so);
        `inputs`: what the strategy decides from (default: every indicator value)."""
        inputs = inputs_of(m) if inputs is None else inputs
        last = self._last.get(m.key)
        if last is not None:
            last_inputs, last_close = last
            if inputs == last_inputs or (
                self.min_price_move_pct > 0
                and last_close > 0
                and abs(m.close - last_close) / last_close * 100 < self.min_price_move_pct
            ):
                self.skipped += 1
                return False
        self._last[m.key] = (inputs, m.close)
        return True
