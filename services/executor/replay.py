"""Candles to a trader in global time order (backtests): markets and signals in, fills out.

Every market's candles reach the one `Trader` in open-time order (a tie goes to the market
given first); for each candle `on_candle` runs first, then `on_signal` if the candle made a
signal. With `fast` (the default), only what can change something costs a Python call:

- an idle market (no holding, no pending order) jumps to its next signal candle: for any other
  candle `on_candle` would only note its time;
- a signal the trader can only skip is not handed over: a buy while the symbol is held
  (`already_long`) and a sell while it is not (`no_position`); at a signal a market has no
  pending order, as an order fills on the candle after its signal, before that candle's signal;
- a holding's quiet run is one call. A candle is quiet when its open, high and low stay
  strictly between the stop in force and the first take-profit, so `exits.step` exits nothing
  on it. A run also ends after a candle making a new high when a trailing stop is set (that
  raises the next candle's stop), and at a sell signal (its candle is the run's last). The run
  goes to the trader as one candle (first open, highest high, lowest low, last close, the last
  open time): `step` exits nothing on it either and leaves the same holding (highest high, same
  stop and targets) and the same mark. Only the holding's candle count differs, so nothing is
  merged under a time stop. A run never crosses another market's next needed candle, so every
  decision sees the marks it would see candle by candle.

`fast=False` hands every candle of an active market and every signal over one by one; tests
compare the two on real data (same fills, same decisions on the signals both hand over).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from services.executor.exits import effective_stop
from services.executor.kernels import quiet_run_end
from services.executor.orders import Decision, Fill
from services.executor.trader import Trader
from shared.messages import CandleClosed, SignalEmitted

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]

CANDLE_SOURCE = "backtest"
PROGRESS_STEPS = 100  # calls of `progress` over a run, at most


@dataclass(frozen=True, slots=True)
class ReplayMarket:
    """One market as the replay reads it (rows of the candle arrays, one per candle)."""

    index: int
    symbol: str
    exchange: str
    timeframe: str
    timeframe_ms: int
    times: I64Array
    open: F64Array
    high: F64Array
    low: F64Array
    close: F64Array
    atr: F64Array
    signal_side: dict[int, int]  # signal row -> 1 buy, -1 sell
    signal_at: Callable[[int], SignalEmitted]  # a signal row's live message, built on demand
    # Per row and one past the end: the first signal (sell signal) row at or after it.
    next_signal: I64Array
    next_sell: I64Array

    @property
    def size(self) -> int:
        """Return the number of candles."""
        return int(self.times.size)


class Reporter:
    """Calls `progress(done, total)` at most `PROGRESS_STEPS` times, by market time reached."""

    def __init__(self, markets: Sequence[ReplayMarket], progress: Progress | None) -> None:
        self.markets = markets
        self.progress = progress
        self.total = sum(market.size for market in markets)
        start = min(market.times.item(0) for market in markets)
        end = max(market.times.item(-1) for market in markets)
        self.step = max(1, (end - start) // PROGRESS_STEPS)
        self.next_ms: float = start + self.step if progress is not None else math.inf

    def reached(self, time_ms: int) -> None:
        """Report the candles opening before `time_ms` as done."""
        if self.progress is None:
            return
        done = sum(int(np.searchsorted(market.times, time_ms)) for market in self.markets)
        self.progress(done, self.total)
        self.next_ms = time_ms + self.step

    def finished(self) -> None:
        """Report every candle as done."""
        if self.progress is not None:
            self.progress(self.total, self.total)


def _quiet_end(market: ReplayMarket, start: int, limit: int, trader: Trader) -> int:
    """Return the end (exclusive, at most `limit`) of the quiet run of the market's holding
    that starts at row `start`; see the module docstring."""
    rules = trader.rules
    holding = trader.holdings[market.symbol]
    stop, _kind = effective_stop(holding, rules)
    trailing = rules.trailing_pct is not None or rules.trailing_atr is not None
    end: int = quiet_run_end(
        market.open, market.high, market.low, start, limit,
        -math.inf if stop is None else stop,
        holding.targets[0][0] if holding.targets else math.inf,
        holding.highest if trailing else math.inf,
    )  # fmt: skip
    return end


def _merged(market: ReplayMarket, start: int, end: int) -> CandleClosed:
    """Return rows [start, end) of the market as one candle at the last row's open time."""
    last_ms = market.times.item(end - 1)
    return CandleClosed(
        exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe,
        open_time_ms=last_ms, open=market.open.item(start),
        high=market.high[start:end].max().item(), low=market.low[start:end].min().item(),
        close=market.close.item(end - 1), volume=0.0, source=CANDLE_SOURCE,
        closed_at_ms=last_ms + market.timeframe_ms,
    )  # fmt: skip


def replay_market(
    trader: Trader,
    market: ReplayMarket,
    row: int,
    end: int,
    out: tuple[list[Fill], list[Decision]],
    reporter: Reporter,
    *,
    fast: bool,
) -> int:
    """Feed the market's rows from `row` up to `end` (exclusive) as far as the trader needs
    them; return the next row it needs (at least `end`: the row count when done)."""
    fills, decisions = out
    symbol, signal_side, signal_at = market.symbol, market.signal_side, market.signal_at
    times, opens, highs, lows, closes = (
        market.times, market.open, market.high, market.low, market.close
    )  # fmt: skip
    next_signal, next_sell, atr = market.next_signal, market.next_sell, market.atr
    exchange, timeframe, length = market.exchange, market.timeframe, market.timeframe_ms
    holdings, pending = trader.holdings, trader.pending
    merge = fast and trader.rules.time_stop_candles is None
    while row < end:
        time_ms: int = times.item(row)
        if time_ms >= reporter.next_ms:
            reporter.reached(time_ms)
        last = row  # the last row of this call: a quiet run's, or this one
        if merge and symbol in holdings and symbol not in pending:
            last = _quiet_end(market, row, min(next_sell.item(row) + 1, end), trader) - 1
        if last > row:
            trader.on_candle(_merged(market, row, last + 1))  # quiet: no fills
            row = last  # the run's last candle may have a sell signal, decided below
        else:
            filled = trader.on_candle(
                CandleClosed(
                    exchange=exchange, symbol=symbol, timeframe=timeframe, open_time_ms=time_ms,
                    open=opens.item(row), high=highs.item(row), low=lows.item(row),
                    close=closes.item(row), volume=0.0, source=CANDLE_SOURCE,
                    closed_at_ms=time_ms + length,
                )
            )  # fmt: skip
            if filled:
                fills += filled
        side = signal_side.get(row)
        # Fast: a buy while held and a sell while flat can only be skipped by the trader.
        if side is not None and (not fast or (side > 0) != (symbol in holdings)):
            decisions += trader.on_signal(signal_at(row), atr=atr.item(row))
        row = row + 1 if trader.is_active(symbol) else next_signal.item(row + 1)
    return row


def replay(
    trader: Trader,
    markets: Sequence[ReplayMarket],
    reporter: Reporter,
    *,
    fast: bool = True,
) -> tuple[list[Fill], list[Decision]]:
    """Feed every market's needed candles to the trader in global time order; return the
    fills and the decisions on the signals handed over, in the order they happened."""
    out: tuple[list[Fill], list[Decision]] = ([], [])
    queue = [
        (market.times.item(first), market.index, first)
        for market in markets
        if (first := market.next_signal.item(0)) < market.size
    ]
    heapq.heapify(queue)
    while queue:
        _time, index, row = heapq.heappop(queue)
        market = markets[index]
        end = market.size
        if queue:  # stop before the next market's candle: ties go to the lower index
            next_ms, next_index = queue[0][0], queue[0][1]
            side: Literal["left", "right"] = "left" if next_index < index else "right"
            end = int(np.searchsorted(market.times, next_ms, side=side))
        row = replay_market(trader, market, row, end, out, reporter, fast=fast)
        if row < market.size:
            heapq.heappush(queue, (market.times.item(row), index, row))
    reporter.finished()
    return out
