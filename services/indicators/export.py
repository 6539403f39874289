"""`candlebus indicators FILE`: a candle file (ccxt JSON rows or CSV) in, indicator CSV out."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt

from services.collector.sources import ReplayFileError, parse_file_name, read_rows
from services.indicators.engine import IndicatorParams, compute_frame
from shared.messages import TIMEFRAME_MS

EXPORT_COLUMNS: Final = (
    "open_time",
    "close",
    "rsi",
    "stoch_k",
    "stoch_d",
    "stochrsi_fastk",
    "stochrsi_fastd",
    "atr",
    "volatility_ratio",
    "band_lower",
    "band_upper",
)
EXIT_BAD_INPUT: Final = 2  # argparse's code for a bad command line: bad input is the same kind

Frame = dict[str, npt.NDArray[Any]]


class InputError(ValueError):
    """A candle file that cannot be used; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class CandleFile:
    """The columns of a candle file that the indicators use, rows in file order."""

    times_ms: npt.NDArray[np.int64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]


def read_candles(path: Path) -> CandleFile:
    """Read and check a candle file: known format, strictly increasing times, positive prices."""
    try:
        rows = read_rows(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except ReplayFileError as exc:
        raise InputError(str(exc)) from None
    if not rows:
        raise InputError(f"{path}: no candles in the file")
    times = np.array([row[0] for row in rows], dtype=np.int64)
    prices = np.array([row[1:5] for row in rows], dtype=np.float64)  # open, high, low, close
    bad_price = ~(np.isfinite(prices) & (prices > 0)).all(axis=1)
    if bad_price.any():
        index = int(np.argmax(bad_price))
        raise InputError(
            f"{path}: candle {index + 1} (open time {times[index]}) has a non-positive or "
            f"non-finite price: open, high, low, close = {prices[index].tolist()}"
        )
    steps = np.diff(times)
    if (steps <= 0).any():
        index = int(np.argmax(steps <= 0)) + 1
        problem = "repeats the open time" if steps[index - 1] == 0 else "opens before"
        raise InputError(
            f"{path}: candle {index + 1} (open time {times[index]}) {problem} of candle "
            f"{index} ({times[index - 1]}): rows must be in strictly increasing time order"
        )
    return CandleFile(times, prices[:, 1].copy(), prices[:, 2].copy(), prices[:, 3].copy())


def infer_timeframe_ms(times_ms: npt.NDArray[np.int64]) -> int:
    """Return the most common step between open times (the shortest one on a tie)."""
    steps = np.diff(times_ms)
    if steps.size == 0:
        raise InputError(
            "one candle gives no time step to infer the timeframe from: pass --timeframe"
        )
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def resolve_timeframe_ms(path: Path, times_ms: npt.NDArray[np.int64], timeframe: str | None) -> int:
    """Return the candle length: the one asked for, else the file name's, else the inferred one."""
    if timeframe is not None:
        return TIMEFRAME_MS[timeframe]
    try:
        _symbol, named = parse_file_name(path)
    except ReplayFileError:
        return infer_timeframe_ms(times_ms)
    return TIMEFRAME_MS[named]


def write_csv(frame: Frame, out: TextIO) -> None:
    """Write `EXPORT_COLUMNS` rows: NaN as an empty field, floats as `repr` (they round-trip)."""
    # tolist() gives Python floats: NumPy 2's own repr would print "np.float64(...)".
    columns: list[Iterable[str]] = [map(str, frame["open_time_ms"].tolist())]
    columns += [_fields(frame[name].tolist()) for name in EXPORT_COLUMNS[1:]]
    out.write(",".join(EXPORT_COLUMNS) + "\n")
    out.writelines(",".join(row) + "\n" for row in zip(*columns, strict=True))


def _fields(values: list[float]) -> list[str]:
    return [repr(value) if value == value else "" for value in values]  # NaN != NaN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments: the file, the gap policy, and one flag per parameter."""
    parser.add_argument("file", type=Path, metavar="FILE", help="ccxt JSON rows or CSV")
    parser.add_argument(
        "--timeframe",
        choices=list(TIMEFRAME_MS),
        default=None,
        help="candle length (default: from a file name like ETH_BTC-1m.json, "
        "else the most common time step between rows)",
    )
    parser.add_argument(
        "--no-fill-gaps",
        dest="fill_gaps",
        action="store_false",
        help="compute on the rows as given instead of filling missing candles flat at the "
        "previous close",
    )
    group = parser.add_argument_group("indicator parameters (IndicatorParams)")
    # Generated from the dataclass, so a new parameter gets its flag without touching this.
    types = typing.get_type_hints(IndicatorParams)
    for field in dataclasses.fields(IndicatorParams):
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=types[field.name],
            default=field.default,
            metavar=types[field.name].__name__.upper(),
            help="default: %(default)s",
        )


def run(args: argparse.Namespace) -> int:
    """Compute the indicators of `args.file` and print them as CSV; return the exit code."""
    try:
        params = IndicatorParams(
            **{
                field.name: getattr(args, field.name)
                for field in dataclasses.fields(IndicatorParams)
            }
        )
        candles = read_candles(args.file)
        timeframe_ms = resolve_timeframe_ms(args.file, candles.times_ms, args.timeframe)
    except ValueError as exc:  # InputError, or a parameter IndicatorParams rejects
        message = " ".join(str(exc).split())
        print(f"candlebus indicators: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    frame = compute_frame(
        candles.times_ms,
        candles.high,
        candles.low,
        candles.close,
        timeframe_ms=timeframe_ms,
        params=params,
        fill_gaps=args.fill_gaps,
    )
    try:
        write_csv(frame, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (say `head`) stopped early. Point stdout at /dev/null so the flush at
        # exit does not fail again with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
