"""Candle sources (I/O): replay files or a synthetic market in -> batches of CandleClosed out."""

from __future__ import annotations

import asyncio
import bisect
import csv
import math
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, TypeAlias

import msgspec
import numpy as np

from services.collector.settings import CollectorSettings
from shared.messages import TIMEFRAME_MS, CandleClosed

Market: TypeAlias = tuple[str, str, str]  # (exchange, symbol, timeframe)
Row: TypeAlias = tuple[int, float, float, float, float, float]  # ccxt: ms, o, h, l, c, v

REPLAY_EXCHANGE: Final = "binance"  # where the team's recorded files come from
SYNTHETIC_EXCHANGE: Final = "synthetic"  # never mistaken for a real venue in the store


class CandleSource(Protocol):
    """Where closed candles come from; the collector validates, stores and publishes them."""

    name: str

    def markets(self) -> list[Market]:
        """Return the (exchange, symbol, timeframe) markets this source produces."""
        ...

    def now_ms(self) -> int:
        """Return the source's clock, which decides whether a candle has closed yet."""
        ...

    def batches(self, resume_after: Mapping[Market, int]) -> AsyncIterator[list[CandleClosed]]:
        """Yield closed candles, skipping each market's candles at or before its resume time."""
        ...


class ReplayFileError(ValueError):
    """A replay file whose name or content cannot be read as OHLCV candles."""


_FILE_NAME: Final = re.compile(r"(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)-(?P<tf>\w+)")
_FILE_SUFFIXES: Final = (".json", ".csv")
_CSV_COLUMNS: Final = ("open_time", "open", "high", "low", "close", "volume")
_JSON_ROWS: Final = msgspec.json.Decoder(list[tuple[float, float, float, float, float, float]])


def parse_file_name(path: Path) -> tuple[str, str]:
    """Return the (symbol, timeframe) a replay file is named for: ETH_BTC-1m.json -> ETH/BTC, 1m."""
    match = _FILE_NAME.fullmatch(path.stem)
    if path.suffix not in _FILE_SUFFIXES or match is None:
        raise ReplayFileError(
            f"{path}: expected a name like ETH_BTC-1m.json or ETH_BTC-1m.csv (BASE_QUOTE-timeframe)"
        )
    if match["tf"] not in TIMEFRAME_MS:
        raise ReplayFileError(f"{path}: unknown timeframe {match['tf']!r} in the file name")
    return f"{match['base']}/{match['quote']}", match["tf"]


def read_rows(path: Path) -> list[Row]:
    """Read ccxt OHLCV rows from a JSON array of arrays or a CSV file with a header row."""
    if path.suffix == ".csv":
        return _read_csv(path)
    try:
        rows = _JSON_ROWS.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise ReplayFileError(
            f"{path}: not a ccxt OHLCV array [[ms, o, h, l, c, v], ...]: {exc}"
        ) from exc
    return [_row(path, f"row {index}", row) for index, row in enumerate(rows)]


def _read_csv(path: Path) -> list[Row]:
    with path.open(newline="") as file:
        lines = csv.reader(file)
        header = [name.strip().lower() for name in next(lines, [])]
        if missing := [name for name in _CSV_COLUMNS if name not in header]:
            raise ReplayFileError(f"{path}: header lacks columns {missing}, need {_CSV_COLUMNS}")
        columns = [header.index(name) for name in _CSV_COLUMNS]
        rows: list[Row] = []
        for line, fields in enumerate(lines, start=2):
            if not fields:
                continue
            try:
                values = tuple(float(fields[column]) for column in columns)
            except (ValueError, IndexError) as exc:
                raise ReplayFileError(f"{path} line {line}: not a number in {fields}") from exc
            rows.append(_row(path, f"line {line}", values))
        return rows


def _row(path: Path, where: str, values: tuple[float, ...]) -> Row:
    open_time, open_, high, low, close, volume = values
    if not open_time.is_integer():
        raise ReplayFileError(f"{path} {where}: open time {open_time} is not a whole ms")
    return int(open_time), open_, high, low, close, volume


class ReplaySource:
    """Replay recorded candle files, merged into one time-ordered sequence, optionally paced."""

    name: str = "replay"

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        exchange: str = REPLAY_EXCHANGE,
        speed: float = 0.0,
        batch_size: int = 1000,
    ) -> None:
        if not paths:
            raise ValueError("ReplaySource needs at least one file")
        if not speed >= 0:
            raise ValueError(f"speed must be >= 0 (0: as fast as possible), got {speed}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._exchange = exchange
        self._speed = speed
        self._batch_size = batch_size
        # Names are checked here, so a bad file name stops the service before any I/O.
        self._files = [(Path(path), *parse_file_name(Path(path))) for path in paths]

    def markets(self) -> list[Market]:
        """Return the markets named by the files, in file order, without repeats."""
        named = ((self._exchange, symbol, timeframe) for _path, symbol, timeframe in self._files)
        return list(dict.fromkeys(named))

    def now_ms(self) -> int:
        """Return the wall clock: recorded candles are all in the past."""
        return int(time.time() * 1000)

    async def batches(
        self, resume_after: Mapping[Market, int]
    ) -> AsyncIterator[list[CandleClosed]]:
        """Yield the files' candles in time order: in batches, or paced at `speed` x market time."""
        candles = await asyncio.to_thread(self._load, resume_after)
        if self._speed == 0:
            for start in range(0, len(candles), self._batch_size):
                yield candles[start : start + self._batch_size]
                await asyncio.sleep(0)  # let the loop breathe between unpaced batches
            return
        times = [candle.open_time_ms for candle in candles]
        started = time.monotonic()
        done = 0
        while done < len(candles):
            # Market time reached so far; every candle opened by then is due.
            now_ms = times[0] + (time.monotonic() - started) * self._speed * 1000
            due = bisect.bisect_right(times, now_ms, lo=done)
            if due == done:
                await asyncio.sleep((times[done] - now_ms) / 1000 / self._speed)
                continue
            for start in range(done, due, self._batch_size):
                yield candles[start : min(due, start + self._batch_size)]
            done = due

    def _load(self, resume_after: Mapping[Market, int]) -> list[CandleClosed]:
        candles: list[CandleClosed] = []
        for path, symbol, timeframe in self._files:
            after = resume_after.get((self._exchange, symbol, timeframe), -1)
            market = (self._exchange, symbol, timeframe)
            candles.extend(
                _candle(market, row[0], row[1:], self.name)
                for row in read_rows(path)
                if row[0] > after
            )
        candles.sort(key=lambda candle: (candle.open_time_ms, candle.key))
        return candles


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


def _candle(market: Market, open_time: int, ohlcv: Sequence[float], source: str) -> CandleClosed:
    exchange, symbol, timeframe = market
    open_, high, low, close, volume = ohlcv
    return CandleClosed(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        open_time_ms=open_time,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        source=source,
        closed_at_ms=0,  # stamped by the service when it publishes
    )


def source_from_settings(settings: CollectorSettings) -> CandleSource:
    """Build the candle source the settings choose."""
    if settings.source == "replay":
        return ReplaySource(
            settings.replay_files,
            exchange=settings.exchange or REPLAY_EXCHANGE,
            speed=settings.replay_speed,
            batch_size=settings.batch_size,
        )
    return SyntheticSource(
        symbols=settings.synthetic_symbols,
        timeframe=settings.timeframe,
        seed=settings.synthetic_seed,
        candle_interval_s=settings.candle_interval_s,
        start_ms=settings.synthetic_start_ms,
        exchange=settings.exchange or SYNTHETIC_EXCHANGE,
    )
