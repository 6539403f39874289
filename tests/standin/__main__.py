"""Run the stand-in as a process: options in -> a Binance-like server with /_standin/ control.

    python -m tests.standin --port 8123 --speed 60 --start-ms 1570924800000

The clock runs at `--speed` market seconds per wall second from `--start-ms` (default: one day
before the end of the common timeline); speed 0 gives a manual clock moved through
PUT /_standin/clock.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from tests.conftest import DATA_DIR
from tests.standin.series import DAY_MS
from tests.standin.server import build_market, uvicorn_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.standin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--speed", type=float, default=1.0, help="market s per wall s; 0: manual")
    parser.add_argument("--start-ms", type=int, default=None, help="market time at start")
    parser.add_argument("--end-ms", type=int, default=None, help="where every series ends")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--weight-limit", type=int, default=None, help="429 past this per minute")
    parser.add_argument("--no-open-candle", action="store_true", help="serve closed candles only")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    args = parse_args(argv)
    market = build_market(args.data_dir, speed=args.speed, end_ms=args.end_ms)
    market.clock.set(args.start_ms if args.start_ms is not None else market.catalog.end_ms - DAY_MS)
    market.weight.limit = args.weight_limit
    market.open_candle = not args.no_open_candle
    config = uvicorn_config(market, host=args.host, port=args.port, log_level=args.log_level)
    print(
        f"stand-in on http://{args.host}:{args.port}: {len(market.catalog.listings)} symbols, "
        f"clock {market.clock.now_ms()} at speed {args.speed}, "
        f"timeline ends {market.catalog.end_ms}",
        flush=True,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
