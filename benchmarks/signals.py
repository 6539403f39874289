"""Signals benchmark: 1,000 symbols' indicator messages in -> the CPU the change gate saves.

Each symbol replays one of the team's real 1-minute files (cycled, with their real indicator
values), all symbols interleaved candle by candle as the service receives them. Timed, in one
process: the strategy evaluating every message; the default gate (skip a symbol whose strategy
inputs did not change) in front of it; and the gate with a 0.1% minimum price move. The first two
must give the same signals.

    NUMBA_CACHE_DIR=.numba-cache python benchmarks/signals.py [--symbols 1000] [--candles 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.indicators.engine import IndicatorParams, compute_frame
from services.signals.gate import ChangeGate
from services.signals.strategy import StochRsiBands
from shared.messages import IndicatorsComputed, SignalEmitted
from tests.conftest import DATA_DIR

NAMES = (
    "rsi", "stoch_k", "stoch_d", "stochrsi_fastk", "stochrsi_fastd", "atr", "volatility_ratio",
    "band_lower", "band_upper", "prev_stoch_k", "prev_band_lower", "prev_band_upper",
)  # fmt: skip


def series_messages(path: Path, symbol: str, candles: int) -> list[IndicatorsComputed]:
    """The indicator messages of one file's last `candles` rows, as the service would get them."""
    rows = np.array(json.loads(path.read_text()), dtype=float)
    frame = compute_frame(
        rows[:, 0].astype(np.int64), rows[:, 2], rows[:, 3], rows[:, 4],
        timeframe_ms=60_000, params=IndicatorParams(),
    )  # fmt: skip
    columns = {name: frame[name][-candles:].tolist() for name in NAMES}
    times, closes = frame["open_time_ms"][-candles:], frame["close"][-candles:]
    return [
        IndicatorsComputed(
            exchange="binance",
            symbol=symbol,
            timeframe="1m",
            open_time_ms=int(t),
            close=float(c),
            candle_closed_at_ms=0,
            **{n: columns[n][i] for n in NAMES},
        )
        for i, (t, c) in enumerate(zip(times, closes, strict=True))
    ]


def interleaved(symbols: int, candles: int) -> list[IndicatorsComputed]:
    """Messages of `symbols` symbols, candle by candle across all of them."""
    files = sorted(DATA_DIR.glob("*-1m.json"))
    if not files:
        raise SystemExit(f"no 1m candle files in {DATA_DIR}: the benchmark needs the team data")
    per_file = {path: series_messages(path, "X", candles) for path in files}
    streams = []
    for index in range(symbols):
        base = per_file[files[index % len(files)]]
        name = f"S{index:04d}/BTC"
        streams.append([m.__class__(**{**_fields(m), "symbol": name}) for m in base])
    length = min(len(stream) for stream in streams)
    return [stream[t] for t in range(length) for stream in streams]


def _fields(message: IndicatorsComputed) -> dict[str, object]:
    return {name: getattr(message, name) for name in message.__struct_fields__}


def run(
    messages: list[IndicatorsComputed], admit: Callable[[IndicatorsComputed], bool] | None
) -> tuple[float, list[SignalEmitted]]:
    """Return (seconds, signals) for one pass: evaluate what `admit` lets through."""
    strategy = StochRsiBands()
    out: list[SignalEmitted] = []
    started = time.process_time()
    for message in messages:
        if admit is None or admit(message):
            signal = strategy.evaluate(message)
            if signal is not None:
                out.append(signal)
    return time.process_time() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--candles", type=int, default=2_000)
    args = parser.parse_args()
    messages = interleaved(args.symbols, args.candles)
    strategy = StochRsiBands()
    print(f"{args.symbols:,} symbols x {len(messages) // args.symbols:,} candles = "
          f"{len(messages):,} indicator messages (real 1m files, cycled)")  # fmt: skip
    results = {}
    for label, min_move in (("evaluate every message", None), ("default gate", 0.0),
                            ("gate, minimum move 0.1%", 0.1)):  # fmt: skip
        best = None
        for _ in range(3):
            gate = None if min_move is None else ChangeGate(min_move)
            admit = None if gate is None else (lambda m, g=gate: g.admit(m, strategy.inputs(m)))
            seconds, signals = run(messages, admit)
            skipped = 0 if gate is None else gate.skipped
            if best is None or seconds < best[0]:
                best = (seconds, signals, skipped)
        results[label] = best
    base_seconds, base_signals, _ = results["evaluate every message"]
    for label, (seconds, signals, skipped) in results.items():
        same = (
            "same signals" if signals == base_signals else f"{len(signals)} signals, not the same"
        )
        per_message_us = seconds / len(messages) * 1e6
        print(
            f"  {label:28s} CPU {seconds * 1e3:8.1f} ms ({per_message_us:.2f} us/msg), "
            f"skipped {skipped / len(messages):6.1%}, "
            f"CPU saved {1 - seconds / base_seconds:6.1%}, {same}"
        )


if __name__ == "__main__":
    main()
