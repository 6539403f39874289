"""Backtest figures (pure): an equity curve, exposure and trade results in, a `Report` out.

Definitions (every ratio a plain fraction, not a percentage):

- total_return: last equity / initial equity - 1.
- trades: closed round trips (entry to flat, partial exits included in their round trip).
- win_rate: round trips with a net result > 0 / round trips; None without round trips.
- profit_factor: sum of winning round trips' net results / |sum of losing ones|; None when
  there is no losing round trip (no trades, or only winners: the ratio is undefined).
- max_drawdown: the largest fall of equity from its running peak, as a fraction of that peak
  (0.25 = a quarter of the peak lost); the initial equity counts as the first peak.
- sharpe: mean / standard deviation (ddof 1) of the per-candle simple returns of equity,
  times sqrt(candles per year), where a year is 365 days (crypto trades every day) and a candle
  is `timeframe_ms` long; risk-free rate 0. None with fewer than two returns or no variation.
- exposure: candles in a position / candles (a candle counts when a holding was open during
  any part of it).
- candles: the points of the equity curve (one per candle open time of any market).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

YEAR_MS = 365 * 24 * 3_600_000


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of one backtest; see the module docstring for each definition."""

    initial_equity: float
    final_equity: float
    total_return: float
    trades: int
    win_rate: float | None
    profit_factor: float | None
    max_drawdown: float
    sharpe: float | None
    exposure: float
    candles: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Return the figures as a plain mapping (JSON-ready: None for undefined figures)."""
        return asdict(self)


def max_drawdown(equity: npt.ArrayLike, initial_equity: float) -> float:
    """Return the largest fall from a running peak, as a fraction of that peak."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return 0.0
    peaks = np.maximum.accumulate(np.maximum(values, initial_equity))
    return float(np.max(1.0 - values / peaks))


def drawdown_curve(equity: npt.ArrayLike, initial_equity: float) -> npt.NDArray[np.float64]:
    """Return the drawdown at every point: 1 - equity / running peak (0 at a new peak)."""
    values = np.asarray(equity, dtype=np.float64)
    peaks = np.maximum.accumulate(np.maximum(values, initial_equity))
    result: npt.NDArray[np.float64] = 1.0 - values / peaks
    return result


def sharpe_ratio(equity: npt.ArrayLike, initial_equity: float, timeframe_ms: int) -> float | None:
    """Return the annualised Sharpe ratio of the per-candle returns of `equity`.

    The first return is measured from `initial_equity` to the first candle's equity.
    """
    values = np.concatenate(([initial_equity], np.asarray(equity, dtype=np.float64)))
    returns = values[1:] / values[:-1] - 1.0
    if returns.size < 2:
        return None
    deviation = float(np.std(returns, ddof=1))
    if not deviation > 0:
        return None
    return float(np.mean(returns)) / deviation * math.sqrt(YEAR_MS / timeframe_ms)


def compute_report(
    *,
    equity: npt.ArrayLike,
    in_position: npt.ArrayLike,
    trade_results: Sequence[float],
    initial_equity: float,
    timeframe_ms: int,
) -> Report:
    """Return the report of a backtest.

    `equity`: the equity at the close of every candle; `in_position`: per candle, whether a
    holding was open during it; `trade_results`: the net result (fees included) of every
    closed round trip.
    """
    values = np.asarray(equity, dtype=np.float64)
    exposed = np.asarray(in_position, dtype=np.bool_)
    if values.shape != exposed.shape:
        raise ValueError("equity and in_position must have one value per candle")
    results = np.asarray(trade_results, dtype=np.float64)
    gains = float(results[results > 0].sum())
    losses = float(-results[results < 0].sum())
    final = float(values[-1]) if values.size else initial_equity
    return Report(
        initial_equity=initial_equity,
        final_equity=final,
        total_return=final / initial_equity - 1.0,
        trades=int(results.size),
        win_rate=float(np.mean(results > 0)) if results.size else None,
        profit_factor=gains / losses if losses > 0 else None,
        max_drawdown=max_drawdown(values, initial_equity),
        sharpe=sharpe_ratio(values, initial_equity, timeframe_ms),
        exposure=float(np.mean(exposed)) if exposed.size else 0.0,
        candles=int(values.size),
    )
