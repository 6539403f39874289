"""Indicators benchmark: candles in, TA-Lib vs talipp vs candlebus timings and ratios printed.

One process runs all three on the same data:
  1. batch, 1,000,000 candles: TA-Lib per call and in total (RSI, STOCH on RSI, ATR: the
     reference set; STOCHRSI and the SMA of ATR complete the references of all nine outputs),
     then candlebus's kernel for all nine outputs and for the RSI + K + D + ATR + bands
     subset, writing into one reused output array and into a fresh one each call;
  2. incremental: one candle for each of 10,000 warmed markets in one `update_many` call,
     against talipp's cost of one candle through RSI, StochRSI and ATR.
Data: a random walk from a fixed seed, and the real ETH_BTC-1m candles tiled to the same length
when the team data folder is there. Every figure is the median of --repeats timed runs after
a warm-up call (which also compiles, or loads from NUMBA_CACHE_DIR, the kernels).

A new output array costs what the operating system takes to zero its pages, unless the C
allocator hands back memory the process freed before: TA-Lib is timed both ways (`Allocator`),
so that each candlebus figure has a like-for-like TA-Lib figure.

    python benchmarks/indicators.py [--candles 1000000] [--markets 10000] [--repeats 9]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import talib
from talipp.indicators import ATR, RSI, StochRSI
from talipp.ohlcv import OHLCV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.indicators import batch, kernels
from services.indicators.engine import IndicatorParams
from tests.conftest import DATA_DIR

Array = npt.NDArray[np.float64]
Series = tuple[Array, Array, Array]  # high, low, close
SUBSET = ("rsi", "stoch_k", "stoch_d", "atr", "band_lower", "band_upper")
PARAMS = IndicatorParams()
# The kernels, typed for the checker as what they are to Python: callables.
compute_batch: Callable[..., tuple[Array, ...]] = batch.compute_batch
compute_selected_into: Callable[..., None] = batch.compute_selected_into
compute_selected: Callable[..., None] = batch.compute_selected
new_state: Callable[..., Array] = kernels.new_state
update_many: Callable[..., None] = kernels.update_many


def median_ms(run: Callable[[], Any], repeats: int) -> float:
    """Return the median wall time of `run` in milliseconds, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def random_walk(n: int, seed: int = 7) -> Series:
    """Return high, low and close of a geometric random walk: every price stays > 0."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(scale=1e-3, size=n)))
    high = close * (1.0 + rng.uniform(0.0, 2e-3, size=n))
    low = close * (1.0 - rng.uniform(0.0, 2e-3, size=n))
    return high, low, close


def real_tiled(n: int) -> Series | None:
    """Return the real ETH_BTC-1m candles repeated to n rows, or None without the data folder.

    Repeating makes a price jump at each seam, which changes no timing.
    """
    path = DATA_DIR / "ETH_BTC-1m.json"
    if not path.exists():
        return None
    rows = np.array(json.loads(path.read_text()), dtype=np.float64)
    repeats = -(-n // rows.shape[0])
    columns = (np.tile(rows[:, column], repeats)[:n].copy() for column in (2, 3, 4))
    high, low, close = columns
    return high, low, close


def stoch_of(rsi: Array) -> tuple[Array, Array]:
    """Return TA-Lib's STOCH of RSI (K, D), every moving average left at its default, SMA."""
    p = PARAMS
    k, d = talib.STOCH(
        rsi,
        rsi,
        rsi,
        fastk_period=p.stoch_period,
        slowk_period=p.stoch_k_period,
        slowd_period=p.stoch_d_period,
    )
    return k, d


def stochrsi_of(close: Array) -> tuple[Array, Array]:
    """Return TA-Lib's STOCHRSI (fastk, fastd), fastd an SMA (the default)."""
    p = PARAMS
    fastk, fastd = talib.STOCHRSI(
        close,
        timeperiod=p.rsi_period,
        fastk_period=p.stochrsi_fastk_period,
        fastd_period=p.stochrsi_fastd_period,
    )
    return fastk, fastd


def talib_references(series: Series, repeats: int) -> dict[str, float]:
    """Time each TA-Lib call an output is specified by, and the two sets, in milliseconds."""
    high, low, close = series
    p = PARAMS
    rsi = talib.RSI(close, p.rsi_period)
    atr = talib.ATR(high, low, close, p.atr_period)
    calls: dict[str, Callable[[], Any]] = {
        "RSI": lambda: talib.RSI(close, p.rsi_period),
        "STOCH on RSI": lambda: stoch_of(rsi),
        "ATR": lambda: talib.ATR(high, low, close, p.atr_period),
        "STOCHRSI": lambda: stochrsi_of(close),
        "SMA of ATR": lambda: talib.SMA(atr, p.atr_ma_period),
    }
    figures = {name: median_ms(call, repeats) for name, call in calls.items()}

    def all_references() -> None:
        ranges = reference_set(series)
        stochrsi_of(close)
        talib.SMA(ranges, p.atr_ma_period)

    figures["RSI + STOCH on RSI + ATR"] = median_ms(lambda: reference_set(series), repeats)
    figures["all nine outputs' references"] = median_ms(all_references, repeats)
    return figures


def reference_set(series: Series) -> Array:
    """Make TA-Lib's calls for RSI, K, D and ATR (RSI, STOCH on RSI, ATR); return ATR."""
    high, low, close = series
    stoch_of(talib.RSI(close, PARAMS.rsi_period))
    return talib.ATR(high, low, close, PARAMS.atr_period)


def interleaved(series: Series, repeats: int) -> dict[str, float]:
    """Time TA-Lib's reference set and candlebus's subset on one core and on two, in turn in
    each round, all into new arrays; return the medians of the times (ms) and of each round's
    ratios, so that a slower or faster spell of the machine weighs on both sides alike."""
    n = series[2].size
    outputs = np.array([kernels.OUTPUT_NAMES.index(name) for name in SUBSET], dtype=np.int64)
    args = PARAMS.kernel_args
    runs: dict[str, Callable[[], Any]] = {
        "talib": lambda: reference_set(series),
        "one core": lambda: compute_selected_into(
            *series, outputs, np.empty((outputs.size, n)), *args
        ),
        "two cores": lambda: compute_selected(*series, outputs, np.empty((outputs.size, n)), args),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    figures = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    for name in ("one core", "two cores"):
        ratios = [ours / theirs for ours, theirs in zip(times[name], times["talib"], strict=True)]
        figures[f"{name} ratio"] = statistics.median(ratios)
    return figures


def check_against_talib(series: Series) -> float:
    """Return the largest difference from TA-Lib over the subset's TA-Lib outputs."""
    high, low, close = series
    columns = compute_batch(*series, *PARAMS.kernel_args)
    ours = dict(zip(kernels.OUTPUT_NAMES, columns, strict=True))
    p = PARAMS
    rsi = talib.RSI(close, p.rsi_period)
    stoch_k, stoch_d = stoch_of(rsi)
    references = {
        "rsi": rsi,
        "stoch_k": stoch_k,
        "stoch_d": stoch_d,
        "atr": talib.ATR(high, low, close, p.atr_period),
    }
    return max(float(np.nanmax(np.abs(ours[name] - ref))) for name, ref in references.items())


def candlebus_batch(series: Series, names: tuple[str, ...], repeats: int) -> tuple[float, float]:
    """Time the batch kernel for these outputs: into a reused array, then into a fresh one."""
    outputs = np.array([kernels.OUTPUT_NAMES.index(name) for name in names], dtype=np.int64)
    n = series[2].size
    args = PARAMS.kernel_args
    reused = np.empty((outputs.size, n))

    def into_reused() -> None:
        compute_selected_into(*series, outputs, reused, *args)

    def into_fresh() -> None:
        compute_selected_into(*series, outputs, np.empty((outputs.size, n)), *args)

    return median_ms(into_reused, repeats), median_ms(into_fresh, repeats)


class Allocator:
    """Switch glibc's malloc between handing out fresh pages and recycling freed memory.

    Fresh: every array over 128 KiB is a new memory mapping, zeroed by the operating system on
    first write, as in a process that just started. Recycled: freed arrays of up to 32 MiB
    (each TA-Lib output) are kept and handed out again, as in a long-running process once
    glibc's dynamic thresholds have grown; TA-Lib at its fastest. An array of more than
    32 MiB, such as candlebus's 6 x 1,000,000 output, is a fresh mapping either way.
    """

    _TRIM_THRESHOLD, _MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None)

    def fresh(self) -> None:
        self._set(128 * 2**10, 128 * 2**10)

    def recycled(self) -> None:
        self._set(32 * 2**20, 2**40)

    def _set(self, mmap_threshold: int, trim_threshold: int) -> None:
        ok = self._libc.mallopt(self._MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
        ok &= self._libc.mallopt(self._TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1)))
        if ok != 1:
            raise RuntimeError("mallopt failed: this benchmark needs glibc")


def bench_batch(
    label: str, series: Series, repeats: int, fresh: dict[str, float], rounds: dict[str, float]
) -> None:
    """Print TA-Lib's figures (`fresh` and `rounds` measured before, with fresh pages; now
    recycled memory), candlebus's, and their ratios."""
    n = series[2].size
    gap = check_against_talib(series)
    recycled = talib_references(series, repeats)
    print(f"\nbatch, {label}, {n:,} candles, ms, median of {repeats} runs")
    print(f"  largest |candlebus - TA-Lib| over RSI, K, D and ATR: {gap:.1e}")
    print(
        f"  in turn each round, all on fresh pages: TA-Lib RSI + STOCH on RSI + ATR "
        f"{rounds['talib']:.2f}; candlebus RSI + K + D + ATR + bands on one core "
        f"{rounds['one core']:.2f}, on two {rounds['two cores']:.2f}"
    )
    print(
        f"    median ratio of a round: one core {rounds['one core ratio']:.2f}, "
        f"two cores {rounds['two cores ratio']:.2f}"
    )

    def both(name: str) -> str:
        return f"{name} {fresh[name]:.2f} | {recycled[name]:.2f}"

    print(f"  TA-Lib, new arrays on fresh pages | recycled: {both('RSI')}, {both('STOCH on RSI')},")
    print(f"    {both('ATR')}, {both('STOCHRSI')}, {both('SMA of ATR')}")
    reference, everything = "RSI + STOCH on RSI + ATR", "all nine outputs' references"
    print(f"    {both(reference)}; {both(everything)}")
    subset_reused, subset_fresh = candlebus_batch(series, SUBSET, repeats)
    all_reused, all_fresh = candlebus_batch(series, kernels.OUTPUT_NAMES, repeats)
    print(
        "  candlebus, into a fresh array | a reused one: "
        f"RSI + K + D + ATR + bands {subset_fresh:.2f} | {subset_reused:.2f}, "
        f"all 9 outputs {all_fresh:.2f} | {all_reused:.2f}"
    )
    print("  candlebus / TA-Lib (RSI + STOCH on RSI + ATR | for all 9: all nine references):")
    ratios = [
        f"{text} {subset / talib_side[reference]:.2f} | {whole / talib_side[everything]:.2f}"
        for text, subset, whole, talib_side in (
            ("both on fresh pages", subset_fresh, all_fresh, fresh),
            ("neither", subset_reused, all_reused, recycled),
            ("reused array vs TA-Lib on fresh pages", subset_reused, all_reused, fresh),
        )
    ]
    print(f"    {ratios[0]}; {ratios[1]};\n    {ratios[2]}")


def bench_update_many(markets: int, repeats: int) -> float:
    """Time one `update_many` call advancing every warmed market by one candle; ms."""
    rng = np.random.default_rng(11)
    args = PARAMS.kernel_args
    state = new_state(markets, PARAMS.state_width)
    rows = rng.permutation(markets).astype(np.int64)
    out = np.empty((markets, kernels.N_OUTPUTS))
    rounds = 3 * PARAMS.warm_up_candles + repeats + 1
    close = 100.0 * np.exp(np.cumsum(rng.normal(scale=1e-3, size=(rounds, markets)), axis=0))
    high, low = close * 1.001, close * 0.999
    for t in range(3 * PARAMS.warm_up_candles):  # past every warm-up: all nine outputs defined
        update_many(state, rows, high[t], low[t], close[t], out, *args)
    assert not np.isnan(out).any()
    step = iter(range(3 * PARAMS.warm_up_candles, rounds))

    def one_round() -> None:
        t = next(step)
        update_many(state, rows, high[t], low[t], close[t], out, *args)

    return median_ms(one_round, repeats)


def bench_talipp(candles: int, repeats: int) -> float:
    """Time talipp's RSI, StochRSI and ATR taking one candle each; microseconds per candle."""
    p = PARAMS
    rsi = RSI(p.rsi_period)
    stoch_rsi = StochRSI(p.rsi_period, p.stoch_period, p.stoch_k_period, p.stoch_d_period)
    atr = ATR(p.atr_period)
    high, low, close = (column.tolist() for column in random_walk(300 + candles * (repeats + 1)))
    bars = [OHLCV(c, h, lo, c) for h, lo, c in zip(high, low, close, strict=True)]
    position = 0

    def feed(count: int) -> None:
        nonlocal position
        for k in range(position, position + count):
            rsi.add(close[k])
            stoch_rsi.add(close[k])
            atr.add(bars[k])
        position += count

    feed(300)  # past every warm-up
    return median_ms(lambda: feed(candles), repeats) * 1e3 / candles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--markets", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    if args.repeats < 7:
        parser.error("--repeats must be at least 7")
    print(
        f"{os.cpu_count()} CPUs; numba {version('numba')}, TA-Lib {version('ta-lib')} "
        f"(C {vars(talib)['__ta_version__'].decode().split()[0]}), talipp {version('talipp')}; "
        f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}"
    )
    datasets = [("random walk (seed 7)", random_walk(args.candles))]
    real = real_tiled(args.candles)
    if real is not None:
        datasets.append(("real ETH_BTC-1m repeated", real))
    # TA-Lib with fresh pages first: once glibc has recycled memory, it keeps doing so.
    allocator = Allocator()
    allocator.fresh()
    fresh = {label: talib_references(series, args.repeats) for label, series in datasets}
    rounds = {label: interleaved(series, 2 * args.repeats + 1) for label, series in datasets}
    allocator.recycled()
    for label, series in datasets:
        bench_batch(label, series, args.repeats, fresh[label], rounds[label])
    if real is None:
        print(f"\nbatch, real candles: skipped, no {DATA_DIR / 'ETH_BTC-1m.json'}")

    repeats = max(args.repeats, 25)
    print(f"\nincremental, {args.markets:,} warmed markets, one candle each, median of {repeats}")
    total = bench_update_many(args.markets, repeats)
    per_market_us = total * 1e3 / args.markets
    print(
        f"  candlebus update_many, all 9 outputs: {total:.3f} ms for the call, "
        f"{per_market_us:.3f} us per market"
    )
    talipp_us = bench_talipp(1_000, repeats)
    print(
        f"  talipp RSI + StochRSI + ATR: {talipp_us:.3f} us per candle, "
        f"{talipp_us / per_market_us:.0f} x candlebus per market"
    )


if __name__ == "__main__":
    main()
