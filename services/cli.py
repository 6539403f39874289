"""The `candlebus` command: `up` (embedded), `run <service>`, `migrate`, `indicators FILE`,
`backtest --data FILE...`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from services.executor import backtest_cli
from services.indicators import export

SERVICES = ("collector", "indicators", "signals", "executor", "gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="candlebus", description="Real-time market pipeline over Redis Streams."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run every service in one process (in-memory bus, SQLite, simulated market)"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    up.add_argument("--data-dir", type=Path, default=Path("data"), help="where SQLite lives")
    up.add_argument("--symbols", type=int, default=20, help="synthetic markets (default 20)")
    up.add_argument(
        "--candle-interval",
        type=float,
        default=0.5,
        help="real seconds per simulated candle (default 0.5; 0 = as fast as possible)",
    )
    up.add_argument(
        "--replay",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="replay candle files (ccxt JSON rows) instead of the synthetic market",
    )
    up.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="replay speed as a market-time multiplier (60 = one 1m candle per second)",
    )
    up.add_argument("--seed", type=int, default=7, help="synthetic market seed")

    run = commands.add_parser("run", help="run one service against REDIS_URL and DATABASE_URL")
    run.add_argument("service", choices=SERVICES)

    migrate = commands.add_parser("migrate", help="bring DATABASE_URL's schema up to date")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument(
        "--down", action="store_true", help="downgrade to --revision (e.g. base) instead"
    )
    migrate.add_argument("--database-url", default=None, help="default: $DATABASE_URL")

    kill = commands.add_parser(
        "kill-switch", help="halt (on) or allow (off) new entries of the executor; exits go on"
    )
    kill.add_argument("state", choices=("on", "off", "status"))
    kill.add_argument("--reason", default="", help="recorded and logged with the change")
    kill.add_argument("--account", default="paper", help="the executor's ACCOUNT (default paper)")
    kill.add_argument("--database-url", default=None, help="default: $DATABASE_URL")

    indicators = commands.add_parser(
        "indicators",
        help="compute every indicator of a candle file (ccxt JSON or CSV) and print CSV",
        description="Compute every indicator of a candle file with the batch path and print "
        "one CSV row per candle (empty fields while warming up).",
    )
    export.add_arguments(indicators)

    backtest = commands.add_parser(
        "backtest",
        help="backtest the strategy on candle files with the live indicators, signals and trader",
        description="Replay candle files through the batch indicators, the strategy and the "
        "trading core; print a report (--json: with every trade) and optionally draw a chart.",
    )
    backtest_cli.add_arguments(backtest)
    return parser


def run_service_by_name(name: str) -> None:
    """Import `services.<name>` and run it as this process."""
    module = importlib.import_module(f"services.{name}.__main__")
    settings_module = importlib.import_module(f"services.{name}.settings")
    settings_class = next(
        value
        for key, value in vars(settings_module).items()
        if key.endswith("Settings") and key != "CommonSettings"
    )
    from shared.runtime import run_service

    run_service(name, module.main, settings_class())


def migrate(url: str | None, revision: str, down: bool) -> None:
    """Upgrade (or downgrade) the schema of the database at `url`."""
    from shared.settings import CommonSettings
    from shared.store import downgrade, upgrade

    target = url or os.environ.get("DATABASE_URL") or CommonSettings().database_url
    (downgrade if down else upgrade)(target, revision)
    print(f"schema {'downgraded' if down else 'upgraded'} to {revision}")


def kill_switch(url: str | None, state: str, reason: str, account: str) -> None:
    """Set or show the kill switch the executor reads from the store every second."""
    import asyncio
    import time

    from shared.settings import CommonSettings
    from shared.store import ControlsRow, Store, create_engine

    async def apply() -> ControlsRow | None:
        store = Store(create_engine(url or CommonSettings().database_url))
        try:
            if state != "status":
                now_ms = int(time.time() * 1000)
                row = ControlsRow(account, state == "on", reason, now_ms)
                await store.set_controls(row)
            return await store.controls(account)
        finally:
            await store.close()

    controls = asyncio.run(apply())
    if controls is None:
        print(f"kill switch of {account}: never set (the executor's KILL_SWITCH setting holds)")
    else:
        print(
            f"kill switch of {account}: {'ON' if controls.kill_switch else 'off'}"
            f"{f' ({controls.reason})' if controls.reason else ''}"
        )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        run_service_by_name(args.service)
    elif args.command == "migrate":
        migrate(args.database_url, args.revision, args.down)
    elif args.command == "kill-switch":
        kill_switch(args.database_url, args.state, args.reason, args.account)
    elif args.command == "indicators":
        sys.exit(export.run(args))
    elif args.command == "backtest":
        sys.exit(backtest_cli.run(args))
    elif args.command == "up":
        from services.embedded import EmbeddedOptions, run_embedded

        options = EmbeddedOptions(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            symbols=args.symbols,
            candle_interval_s=args.candle_interval,
            replay_files=tuple(args.replay or ()),
            replay_speed=args.speed,
            seed=args.seed,
        )
        sys.exit(run_embedded(options))


if __name__ == "__main__":
    main()
