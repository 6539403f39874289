"""Synthetic source: a seed and symbol count in -> endless paced batches of CandleClosed out."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Final

import numpy as np

from services.collector.sources.replay import _candle
from shared.messages import TIMEFRAME_MS, CandleClosed

if TYPE_CHECKING:
    from services.collector.sources import Market

SYNTHETIC_EXCHANGE: Final = "synthetic"  # never mistaken for a real venue in the store


# Per-step volatility of log returns on a 1m candle (scaled by sqrt(minutes) for longer ones),
# and the chance per step of leaving each regime: calm spells last ~500 steps, volatile ~60.
_SIGMA_CALM: Final = 0.001
_SIGMA_VOLATILE: Final = 0.004
_LEAVE_CALM: Final = 1 / 500
_LEAVE_VOLATILE: Final = 1 / 60
# The default start is a whole number of weeks since the epoch, minus a warm-up, so restarts
# within the same week regenerate the same path.
_WEEK_MS: Final = 7 * 86_400_000
_WARM_UP_PERIODS: Final = 1_000


class _RandomWalk:
    """Log-normal random walks, one per symbol, with a calm/volatile Markov regime switch."""

    def __init__(self, symbols: int, seed: int, timeframe_ms: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._scale = math.sqrt(timeframe_ms / 60_000)
        self._close = 10.0 ** self._rng.uniform(-2, 4, symbols)  # base prices 0.01 .. 10,000
        self._base_volume = 10.0 ** self._rng.uniform(1, 4, symbols)
        self._volatile = np.zeros(symbols, dtype=bool)

    def step(self) -> list[list[float]]:
        """Advance one candle; return [open, high, low, close, volume] of each symbol."""
        # Always the same draws per step, whatever is kept: that is what makes it replayable.
        normal = self._rng.standard_normal((4, self._close.size))
        switch = self._rng.random(self._close.size)
        leave = np.where(self._volatile, _LEAVE_VOLATILE, _LEAVE_CALM)
        self._volatile ^= switch < leave
        sigma = np.where(self._volatile, _SIGMA_VOLATILE, _SIGMA_CALM) * self._scale
        open_ = self._close
        close = open_ * np.exp(sigma * normal[0] - sigma**2 / 2)  # no drift in expectation
        # exp(-|x|) <= 1 <= exp(|x|): low <= open, close <= high by construction.
        high = np.maximum(open_, close) * np.exp(sigma * np.abs(normal[1]) / 2)
        low = np.minimum(open_, close) * np.exp(-sigma * np.abs(normal[2]) / 2)
        volume = self._base_volume * np.exp(normal[3] / 2) * np.where(self._volatile, 3.0, 1.0)
        self._close = close
        ohlcv: list[list[float]] = np.stack([open_, high, low, close, volume], axis=1).tolist()
        return ohlcv


class SyntheticSource:
    """A seeded synthetic market on an accelerated clock: one candle per symbol per interval."""

    name: str = "synthetic"

    def __init__(
        self,
        *,
        symbols: int = 20,
        timeframe: str = "1m",
        seed: int = 7,
        candle_interval_s: float = 1.0,
        start_ms: int | None = None,
        exchange: str = SYNTHETIC_EXCHANGE,
    ) -> None:
        if symbols < 1:
            raise ValueError(f"symbols must be >= 1, got {symbols}")
        if timeframe not in TIMEFRAME_MS:
            raise ValueError(
                f"unknown timeframe {timeframe!r}, expected one of {list(TIMEFRAME_MS)}"
            )
        if not candle_interval_s >= 0:
            raise ValueError(f"candle_interval_s must be >= 0, got {candle_interval_s}")
        self._timeframe_ms = TIMEFRAME_MS[timeframe]
        if start_ms is None:
            start_ms = int(time.time() * 1000) // _WEEK_MS * _WEEK_MS
            start_ms -= _WARM_UP_PERIODS * self._timeframe_ms
        if start_ms % self._timeframe_ms:
            raise ValueError(f"start_ms {start_ms} is not on the {timeframe} grid")
        self._symbols = symbols
        self._timeframe = timeframe
        self._seed = seed
        self._interval_s = candle_interval_s
        self._start_ms = start_ms
        self._exchange = exchange
        self._clock_ms = 0

    def markets(self) -> list[Market]:
        """Return the markets SYN0/USD .. SYN<n-1>/USD."""
        return [(self._exchange, f"SYN{i}/USD", self._timeframe) for i in range(self._symbols)]

    def now_ms(self) -> int:
        """Return the accelerated clock: the close of the last candle handed out, or later."""
        return max(int(time.time() * 1000), self._clock_ms)

    async def batches(
        self, resume_after: Mapping[Market, int]
    ) -> AsyncIterator[list[CandleClosed]]:
        """Yield one candle per symbol per tick, endlessly; resumed runs repeat the same path."""
        markets = self.markets()
        skip_until = [resume_after.get(market, -1) for market in markets]
        walk = _RandomWalk(self._symbols, self._seed, self._timeframe_ms)
        open_time = self._start_ms - self._timeframe_ms
        next_due = time.monotonic()
        while True:
            open_time += self._timeframe_ms
            ohlcv = walk.step()
            kept = [i for i, after in enumerate(skip_until) if open_time > after]
            if not kept:
                if open_time % (1024 * self._timeframe_ms) == 0:
                    await asyncio.sleep(0)  # skipping is fast, but not free: stay responsive
                next_due = time.monotonic()  # the pace starts with the first candle handed out
                continue
            await asyncio.sleep(max(next_due - time.monotonic(), 0))
            next_due += self._interval_s
            # The clock runs ahead of the wall clock once it catches up with it: by then these
            # candles are closed on the synthetic clock, which is the one that counts here.
            self._clock_ms = max(self._clock_ms, open_time + self._timeframe_ms)
            yield [_candle(markets[i], open_time, ohlcv[i], self.name) for i in kept]
