"""`candlebus backtest`: candle files and settings in, a report (text or JSON) and a chart out."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from services.collector.sources import ReplayFileError, parse_file_name, read_rows
from services.executor import chart
from services.executor.backtest import BacktestConfig, BacktestResult, run_backtest
from services.executor.backtest_settings import (
    add_setting_arguments,
    build_config,
    overrides_of,
    read_settings_file,
)
from services.executor.candles import CandleArrays
from services.indicators.export import EXIT_BAD_INPUT, InputError, infer_timeframe_ms, read_candles
from shared.messages import TIMEFRAME_MS

LONG_RUN_CANDLES: Final = 100_000  # progress goes to a non-terminal stderr from this size on


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments: files, output, config file, and one flag per setting."""
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        metavar="FILE",
        help="candle files, ccxt JSON rows or CSV (one market each)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report and every trade as JSON"
    )
    parser.add_argument(
        "--chart",
        type=Path,
        metavar="FILE",
        help="write a chart: .png (needs matplotlib) or .html (self-contained)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings file (.toml, else JSON); the command line wins over it",
    )
    parser.add_argument(
        "--timeframe",
        choices=list(TIMEFRAME_MS),
        default=None,
        help="candle length (default: from a file name like ETH_BTC-1m.json, "
        "else the most common time step between rows)",
    )
    add_setting_arguments(parser)


def read_market(path: Path, timeframe: str | None) -> tuple[str, CandleArrays]:
    """Read one candle file as (symbol, candles); the symbol is the file name's, else its stem."""
    checked = read_candles(path)  # every check of `candlebus indicators`, with its messages
    opens = np.array([row[1] for row in read_rows(path)], dtype=np.float64)  # not kept by it
    try:
        symbol, named = parse_file_name(path)
    except ReplayFileError:
        symbol, named = path.stem, None
    timeframe = timeframe or named
    if timeframe is None:
        step = infer_timeframe_ms(checked.times_ms)
        timeframe = next((name for name, ms in TIMEFRAME_MS.items() if ms == step), None)
        if timeframe is None:
            raise InputError(
                f"{path}: rows are {step} ms apart, not a known timeframe: pass --timeframe"
            )
    try:
        candles = CandleArrays(
            checked.times_ms, opens, checked.high, checked.low, checked.close, timeframe
        )
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return symbol, candles


def read_markets(paths: list[Path], timeframe: str | None) -> dict[str, CandleArrays]:
    """Read every file; two files of one symbol are refused (one account, one holding each)."""
    markets: dict[str, CandleArrays] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        symbol, candles = read_market(path, timeframe)
        if symbol in markets:
            raise InputError(f"{origin[symbol]} and {path} are both {symbol}: one file per symbol")
        markets[symbol], origin[symbol] = candles, path
    return markets


def progress_printer(total_candles: int, stream: TextIO) -> Callable[[int, int], None] | None:
    """Return a progress callback printing every 10% to `stream`, or None for a short run on a
    non-terminal stream (a pipe or a log gets lines only for long runs)."""
    terminal = stream.isatty()
    if not terminal and total_candles < LONG_RUN_CANDLES:
        return None
    shown = [-1]

    def show(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth > shown[0]:
            shown[0] = tenth
            start = "\r" if terminal else ""
            end = "\n" if not terminal or done >= total else ""
            line = f"{start}backtest: {tenth * 10}% of {total:,} candles"
            print(line, end=end, file=stream, flush=True)

    return show


def result_json(
    result: BacktestResult, markets: Mapping[str, CandleArrays], config: BacktestConfig
) -> dict[str, Any]:
    """Return the report, the markets, every trade and the config as JSON-ready data."""
    return {
        "report": result.report.as_dict(),
        "signals": result.signals,
        "markets": [
            {
                "symbol": symbol,
                "timeframe": candles.timeframe,
                "candles": int(candles.times_ms.size),
                "first_open_time_ms": int(candles.times_ms[0]),
                "last_open_time_ms": int(candles.times_ms[-1]),
            }
            for symbol, candles in markets.items()
        ],
        "trades": [trade.as_dict() for trade in result.trades],
        "open_trades": [trade.as_dict() for trade in result.open_trades],
        "config": dataclasses.asdict(config, dict_factory=_json_fields),
    }


def _json_fields(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """A dataclass's fields as JSON takes them (sets as sorted lists)."""
    return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in items}


def summary(result: BacktestResult, markets: Mapping[str, CandleArrays]) -> str:
    """Return a readable summary of the report."""
    r = result.report

    def ratio(value: float | None, percent: bool = True) -> str:
        if value is None or not math.isfinite(value):
            return "n/a"
        return f"{value:+.2%}" if percent else f"{value:.2f}"

    names = ", ".join(f"{symbol} {market.timeframe}" for symbol, market in markets.items())
    candles = sum(market.times_ms.size for market in markets.values())
    exits = Counter(leg.kind for trade in result.trades + result.open_trades for leg in trade.exits)
    lines = [
        f"backtest of {names}: {candles:,} candles, {result.signals:,} signals",
        f"trades         {r.trades:,} round trips ({len(result.open_trades)} still open)",
        f"total return   {ratio(r.total_return)}  "
        f"(equity {r.initial_equity:,.2f} -> {r.final_equity:,.2f})",
        f"win rate       {'n/a' if r.win_rate is None else f'{r.win_rate:.1%}'}",
        f"profit factor  {ratio(r.profit_factor, percent=False)}",
        f"max drawdown   {r.max_drawdown:.2%}",
        f"Sharpe         {ratio(r.sharpe, percent=False)}  (per-candle returns, annualised)",
        f"exposure       {r.exposure:.1%} of the candles in a position",
        "exits          "
        + (", ".join(f"{kind} {count:,}" for kind, count in exits.most_common()) or "none"),
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run the backtest the arguments describe; print its report; return the exit code."""
    overrides = overrides_of(args)
    try:
        if args.chart is not None:
            chart.check_path(args.chart)
        file_settings = read_settings_file(args.config) if args.config else {}
        config = build_config(file_settings, overrides, str(args.config or "command line"))
        markets = read_markets(args.data, args.timeframe)
    except ValueError as exc:  # InputError, ChartError, or a file the reader refuses
        message = " ".join(str(exc).split())
        print(f"candlebus backtest: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    total = sum(candles.times_ms.size for candles in markets.values())
    result = run_backtest(markets, config, progress=progress_printer(total, sys.stderr))
    if args.chart is not None:
        chart.write_chart(args.chart, result, markets)
    try:
        if args.json:
            json.dump(result_json(result, markets, config), sys.stdout, allow_nan=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(summary(result, markets))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early: point stdout at /dev/null so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
