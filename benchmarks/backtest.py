"""Backtester benchmark: one year of 1m candles in, candlebus vs a naive pandas loop printed.

One process runs both on the same 525,600 candles of one symbol: the real ETH_BTC-1m candles
tiled to a year on a gapless minute grid when the team data folder is there, else a geometric
random walk from a fixed seed (the output says which).

1. candlebus: `run_backtest`, indicators included (batch kernels, strategy, the live trader),
   the first call (it loads the kernels from NUMBA_CACHE_DIR) and the median of --repeats
   calls; then once with `fast=False` (every candle and signal handed over one by one).
2. the comparison: what a first backtester is often written as. The same indicator columns
   (`compute_frame`, timed with it) in a pandas DataFrame, then one row loop deciding the
   strategy's crossing, pending entries at the next open, the stop-loss, the take-profit
   ladder, breakeven after the first target and sell-signal exits, with the same slippage,
   fees and fixed quote sizing; once with `itertuples`, once with `iterrows`. Timed once each.

Both produce fills; the script prints whether they are the same fills (kind, time, price and
quantity, to 1e-9 relative).

    python benchmarks/backtest.py [--candles 525600] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.executor.backtest import BacktestConfig, run_backtest
from services.executor.candles import CandleArrays
from services.executor.exits import ExitRules
from services.executor.sizing import Sizing
from services.indicators.engine import compute_frame
from tests.conftest import DATA_DIR

T = TypeVar("T")
MINUTE_MS = 60_000
START_MS = 1_516_423_980_000  # the first candle of ETH_BTC-1m.json
CONFIG = BacktestConfig(
    exits=ExitRules(stop_loss_pct=2.0, take_profits=((1.5, 0.5), (3.0, 0.5))),
    sizing=Sizing(mode="fixed_quote", quote_amount=100.0),
    slippage_bps=5.0,
    fee_bps=10.0,
    equity=10_000.0,
)


@dataclass(frozen=True, slots=True)
class SimpleFill:
    """A fill as both backtesters can state it."""

    kind: str
    time_ms: int
    price: float
    quantity: float


def real_year(n: int) -> CandleArrays | None:
    """Return the real ETH_BTC-1m candles repeated to n rows, or None without the data folder."""
    path = DATA_DIR / "ETH_BTC-1m.json"
    if not path.exists():
        return None
    rows = np.array(json.loads(path.read_text()), dtype=np.float64)
    repeats = -(-n // rows.shape[0])
    open_, high, low, close = (
        np.tile(rows[:, column], repeats)[:n].copy() for column in (1, 2, 3, 4)
    )
    return CandleArrays(
        START_MS + MINUTE_MS * np.arange(n, dtype=np.int64), open_, high, low, close
    )


def random_year(n: int, seed: int = 7) -> CandleArrays:
    """Return a geometric random walk of n candles: open at the last close, wicks around."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(scale=1e-3, size=n)))
    open_ = np.append(100.0, close[:-1])
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 1e-3, size=n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 1e-3, size=n))
    return CandleArrays(
        START_MS + MINUTE_MS * np.arange(n, dtype=np.int64), open_, high, low, close
    )


def naive_backtest(
    candles: CandleArrays, config: BacktestConfig, *, iterrows: bool = False
) -> list[SimpleFill]:
    """Backtest the strategy row by row over a pandas DataFrame (the comparison), with
    `itertuples` (or `iterrows`: a Series per row, the slowest common way)."""
    frame = compute_frame(
        candles.times_ms, candles.high, candles.low, candles.close,
        timeframe_ms=candles.timeframe_ms, params=config.indicators,
    )  # fmt: skip
    table = pd.DataFrame(
        {
            "time": candles.times_ms, "open": candles.open, "high": candles.high,
            "low": candles.low, "close": candles.close, "k": frame["stoch_k"],
            "prev_k": frame["prev_stoch_k"], "lower": frame["band_lower"],
            "prev_lower": frame["prev_band_lower"], "upper": frame["band_upper"],
            "prev_upper": frame["prev_band_upper"],
        }
    )  # fmt: skip
    rules, slip, fee = config.exits, config.slippage_bps / 1e4, config.fee_bps / 1e4
    fills: list[SimpleFill] = []
    cash = config.equity
    pending: tuple[str, float] | None = None  # ("buy", quantity) or ("sell", 0.0)
    # The exits' levels are reset at each entry; the stop-loss is a percentage here.
    stop_pct = rules.stop_loss_pct if rules.stop_loss_pct is not None else 100.0
    held = 0.0
    entry = stop = 0.0
    targets: list[list[float]] = []  # [price, quantity] still to fill
    breakeven = False

    def exit_at(kind: str, price: float, quantity: float, time_ms: int) -> None:
        nonlocal cash, held
        cash += price * quantity * (1 - fee)
        held -= quantity
        fills.append(SimpleFill(kind, time_ms, price, quantity))

    rows = (row for _, row in table.iterrows()) if iterrows else table.itertuples(index=False)
    for row in rows:
        if pending is not None:  # a market order fills at this candle's open
            side, size = pending
            pending = None
            if side == "buy":
                entry = row.open * (1 + slip)
                cash -= entry * size * (1 + fee)
                held, breakeven = size, False
                stop = entry * (1 - stop_pct / 100)
                targets, rest, total = [], size, 0.0
                for distance, fraction in rules.take_profits:
                    total += fraction
                    part = rest if total >= 1 - 1e-9 else fraction * size
                    rest -= part
                    targets.append([entry * (1 + distance / 100), part])
                fills.append(SimpleFill("entry", row.time, entry, size))
            elif held > 0:
                exit_at("signal", row.open * (1 - slip), held, row.time)
                held = 0.0
        if held > 0:  # exits on this candle, the entry candle included
            kind = "breakeven_stop" if breakeven else "stop_loss"
            hit_target = False
            if row.open <= stop:
                exit_at(kind, row.open * (1 - slip), held, row.time)
            else:
                while targets and row.open >= targets[0][0] and held > 1e-12:
                    exit_at("take_profit", row.open, min(targets.pop(0)[1], held), row.time)
                    hit_target = True
                if held > 1e-12 and row.low <= stop:
                    exit_at(kind, stop * (1 - slip), held, row.time)
                while held > 1e-12 and targets and row.high >= targets[0][0]:
                    price, part = targets.pop(0)
                    exit_at("take_profit", price, min(part, held), row.time)
                    hit_target = True
            if held <= 1e-12:
                held = 0.0
            elif hit_target and rules.breakeven_after_first_tp and not breakeven:
                stop, breakeven = max(stop, entry), True
        # the strategy's crossing on this candle's indicators (NaN compares False)
        buy = row.prev_k < row.prev_lower and row.k >= row.lower
        sell = not buy and row.prev_k > row.prev_upper and row.k <= row.upper
        if buy and held == 0:
            size = config.sizing.quote_amount / row.close
            unit = row.close * (1 + slip) * (1 + fee)
            pending = ("buy", min(size, cash / unit))
        elif sell and held > 0:
            pending = ("sell", 0.0)
    return fills


def same_fills(ours: list[SimpleFill], theirs: list[SimpleFill]) -> bool:
    """Return True when both lists hold the same fills, prices and quantities to 1e-9."""
    return len(ours) == len(theirs) and all(
        a.kind == b.kind
        and a.time_ms == b.time_ms
        and math.isclose(a.price, b.price, rel_tol=1e-9)
        and math.isclose(a.quantity, b.quantity, rel_tol=1e-9)
        for a, b in zip(ours, theirs, strict=True)
    )


def seconds(run: Callable[[], T]) -> tuple[float, T]:
    """Return the wall time of calling `run` and its result."""
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=525_600)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    candles = real_year(args.candles)
    label = "the real ETH_BTC-1m candles, tiled"
    if candles is None:
        candles, label = random_year(args.candles), "random walk (seed 7): no real data found"
    markets = {"ETH/BTC": candles}
    print(
        f"{os.cpu_count()} CPUs, pandas {pd.__version__}; "
        f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}"
    )
    print(f"{candles.times_ms.size:,} candles of 1m, one symbol: {label}")

    first, result = seconds(lambda: run_backtest(markets, CONFIG))
    runs = [seconds(lambda: run_backtest(markets, CONFIG))[0] for _ in range(args.repeats)]
    ours = statistics.median(runs)
    one_by_one, _ = seconds(lambda: run_backtest(markets, CONFIG, fast=False))
    report = result.report
    fills = [SimpleFill(f.kind, f.time_ms, f.price, f.quantity) for f in result.fills]
    print(
        f"candlebus run_backtest, indicators included: first call {first:.3f} s, "
        f"median of {args.repeats} {ours:.3f} s (runs {min(runs):.3f}-{max(runs):.3f}); "
        f"one by one (fast=False) {one_by_one:.3f} s"
    )
    print(
        f"  {report.trades:,} round trips, {len(fills):,} fills, exposure {report.exposure:.1%}, "
        f"return {report.total_return:+.2%}"
    )
    for name, iterrows in (("itertuples", False), ("iterrows", True)):
        naive, theirs = seconds(partial(naive_backtest, candles, CONFIG, iterrows=iterrows))
        agree = same_fills(fills, theirs)
        print(
            f"naive pandas {name} loop, indicators included: {naive:.3f} s; "
            f"candlebus / naive {ours / naive:.3f} ({naive / ours:.1f} x faster); "
            f"same fills: {'yes' if agree else 'NO'} ({len(fills):,} vs {len(theirs):,})"
        )


if __name__ == "__main__":
    main()
