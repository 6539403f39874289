"""Replay source (I/O): ccxt JSON or CSV OHLCV files in -> time-ordered CandleClosed batches out."""

from __future__ import annotations

import asyncio
import bisect
import csv
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias

import msgspec

from shared.messages import TIMEFRAME_MS, CandleClosed

if TYPE_CHECKING:
    from services.collector.sources import Market

Row: TypeAlias = tuple[int, float, float, float, float, float]  # ccxt: ms, o, h, l, c, v

REPLAY_EXCHANGE: Final = "binance"  # where the team's recorded files come from


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
