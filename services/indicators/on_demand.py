"""A market, a time range and parameters in -> indicators of its stored candles out, cached."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from services.indicators.engine import IndicatorParams, compute_frame
from shared import metrics
from shared.messages import TIMEFRAME_MS
from shared.store import CandleRow, Store

Frame: TypeAlias = dict[str, npt.NDArray[Any]]

MIN_WARM_UP_CANDLES = 1_000


class FrameKey(NamedTuple):
    """What an on-demand result depends on; the market's newest candle time invalidates it."""

    exchange: str
    symbol: str
    timeframe: str
    params: IndicatorParams
    start_ms: int | None
    end_ms: int | None
    limit: int
    last_open_time_ms: int | None  # newest stored candle of the market, None if it has none


class IndicatorCache:
    """Least-recently-used frames, each kept at most `ttl_s` seconds; counts hits and misses.

    The TTL bounds how long a candle stored late inside an already cached range (a backfill,
    which leaves the newest candle time unchanged) can go unseen.
    """

    def __init__(
        self,
        *,
        max_entries: int = 256,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[FrameKey, tuple[float, Frame]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: FrameKey) -> Frame | None:
        """Return the live frame stored under `key` (marking it recently used), else None."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= self._clock():
            del self._entries[key]
            entry = None
        if entry is None:
            metrics.INDICATOR_CACHE.labels("miss").inc()
            return None
        self._entries.move_to_end(key)
        metrics.INDICATOR_CACHE.labels("hit").inc()
        return entry[1]

    def put(self, key: FrameKey, frame: Frame) -> None:
        """Store a frame, evicting the least recently used ones beyond `max_entries`."""
        self._entries[key] = (self._clock() + self.ttl_s, frame)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def warm_up_history(params: IndicatorParams) -> int:
    """Return how many candles before a range to load so its values equal the full history's.

    Wilder averages (RSI, ATR) forget their seed as ((period - 1) / period)^n: ten times the
    longest period, and never fewer than 1,000 candles, leaves the seed below float precision.
    """
    longest = max(params.kernel_args[:8])  # the eight periods come first
    return max(10 * longest, params.warm_up_candles, MIN_WARM_UP_CANDLES)


async def compute_stored(
    store: Store,
    cache: IndicatorCache,
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    params: IndicatorParams,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int,
) -> Frame:
    """Return `compute_frame` columns for the stored candles `candles_between` selects.

    The range is computed after the `warm_up_history` candles stored before it, with missing
    candles filled as live, so it holds the values a pass over the whole history gives. The
    arrays are shared with the cache and therefore read-only.
    """
    if timeframe not in TIMEFRAME_MS:
        raise ValueError(f"unknown timeframe {timeframe!r}, expected one of {list(TIMEFRAME_MS)}")
    newest = await store.candles_between(
        exchange=exchange, symbol=symbol, timeframe=timeframe, limit=1
    )
    key = FrameKey(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        params=params,
        start_ms=start_ms,
        end_ms=end_ms,
        limit=limit,
        last_open_time_ms=newest[0].open_time_ms if newest else None,
    )
    cached = cache.get(key)
    if cached is not None:
        return cached
    history, rows = await _load_range(store, key)
    frame = _compute_range(history, rows, timeframe_ms=TIMEFRAME_MS[timeframe], params=params)
    cache.put(key, frame)
    return frame


async def _load_range(store: Store, key: FrameKey) -> tuple[list[CandleRow], list[CandleRow]]:
    """Return the warm-up candles stored before the key's range, and the range's candles."""
    exchange, symbol, timeframe = key.exchange, key.symbol, key.timeframe
    rows = await store.candles_between(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        start_ms=key.start_ms,
        end_ms=key.end_ms,
        limit=key.limit,
    )
    if not rows:
        return [], []
    history = await store.candles_between(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        end_ms=rows[0].open_time_ms - 1,
        limit=warm_up_history(key.params),
    )
    return history, rows


def _compute_range(
    history: list[CandleRow],
    rows: list[CandleRow],
    *,
    timeframe_ms: int,
    params: IndicatorParams,
) -> Frame:
    """Compute over history and range together; return the range's columns, read-only."""
    candles = history + rows
    full = compute_frame(
        np.array([candle.open_time_ms for candle in candles], dtype=np.int64),
        np.array([candle.high for candle in candles], dtype=np.float64),
        np.array([candle.low for candle in candles], dtype=np.float64),
        np.array([candle.close for candle in candles], dtype=np.float64),
        timeframe_ms=timeframe_ms,
        params=params,
    )
    frame: Frame = {}
    for name, column in full.items():
        kept = column[len(history) :]
        kept.setflags(write=False)  # a caller writing into it would corrupt later cache hits
        frame[name] = kept
    return frame
