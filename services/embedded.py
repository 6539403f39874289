"""Embedded mode: all five services in one process on MemoryBus and SQLite, with a live status."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from services.collector.__main__ import main as collector_main
from services.collector.settings import CollectorSettings
from services.executor.__main__ import main as executor_main
from services.executor.settings import ExecutorSettings
from services.gateway import token_file
from services.gateway.__main__ import main as gateway_main
from services.gateway.auth import Role
from services.gateway.settings import GatewaySettings
from services.indicators.__main__ import main as indicators_main
from services.indicators.settings import IndicatorsSettings
from services.signals.__main__ import main as signals_main
from services.signals.settings import SignalsSettings
from shared import metrics
from shared.bus import MemoryBus
from shared.runtime import configure_logging, run_until_signalled
from shared.store import Store, create_engine, upgrade

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedOptions:
    """What `candlebus up` was asked to run."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    symbols: int = 20
    candle_interval_s: float = 0.5
    replay_files: tuple[Path, ...] = ()
    replay_speed: float = 60.0
    seed: int = 7


def counter_total(counter: Counter) -> float:
    """Return a labelled counter summed over its labels."""
    return sum(
        sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def report_status(url: str, interval_s: float = 1.0) -> None:
    """Print one live status line: candles/s, candles, signals, orders."""
    interactive = sys.stdout.isatty()
    last_candles, last_time, last_print = 0.0, time.monotonic(), 0.0
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        candles = counter_total(metrics.CANDLES_PUBLISHED)
        rate = (candles - last_candles) / (now - last_time)
        last_candles, last_time = candles, now
        line = (
            f"candlebus {url} | {rate:7.1f} candles/s | candles {candles:.0f} | "
            f"signals {counter_total(metrics.SIGNALS):.0f} | "
            f"orders {counter_total(metrics.ORDERS):.0f}"
        )
        if interactive:
            print("\r" + line, end="", flush=True)
        elif now - last_print >= 10:
            print(line, flush=True)
            last_print = now


def gateway_tokens(data_dir: Path, url: str) -> dict[str, Any]:
    """Return the gateway's token settings: none if API_TOKENS_ADMIN is set (the environment
    then holds them), else the hashes kept in `data_dir`, made and printed once at first start."""
    if os.environ.get("API_TOKENS_ADMIN"):
        return {}
    stored = token_file.load_or_create(data_dir)
    if stored.created is not None:
        read, admin = (stored.created[role] for role in (Role.READ, Role.ADMIN))
        print(
            "API tokens, shown this once (only their hashes are kept, in "
            f"{data_dir / token_file.FILE_NAME}):\n"
            f"  read   {read}\n  admin  {admin}\n"
            f"  dashboard with the admin token: {url}/#token={admin}",
            flush=True,
        )
    return {
        "api_tokens_read": ",".join(stored.read_hashes),
        "api_tokens_admin": ",".join(stored.admin_hashes),
    }


async def serve_embedded(options: EmbeddedOptions) -> None:
    """Run the five services as tasks on one bus and one SQLite store until one of them fails."""
    options.data_dir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{options.data_dir / 'candlebus.sqlite'}"
    await asyncio.to_thread(upgrade, database_url)
    common: dict[str, Any] = {
        "redis_url": "memory://",
        "database_url": database_url,
        "metrics_port": 0,
        "consumer_name": "embedded",
        "batch_size": 500,
        "block_ms": 200,
    }
    if options.replay_files:
        source: dict[str, Any] = {
            "source": "replay",
            "replay_files": list(options.replay_files),
            "replay_speed": options.replay_speed,
        }
    else:
        source = {
            "source": "synthetic",
            "synthetic_symbols": options.symbols,
            "synthetic_seed": options.seed,
            "candle_interval_s": options.candle_interval_s,
        }
    url = f"http://{options.host}:{options.port}"
    tokens = gateway_tokens(options.data_dir, url)
    bus = MemoryBus()
    store = Store(create_engine(database_url))
    services: dict[str, Coroutine[Any, Any, None]] = {
        "gateway": gateway_main(
            GatewaySettings(**common, **tokens, host=options.host, port=options.port), bus, store
        ),
        "executor": executor_main(ExecutorSettings(**common), bus, store),
        "signals": signals_main(SignalsSettings(**common), bus, store),
        "indicators": indicators_main(IndicatorsSettings(**common), bus, store),
        # the bus starts empty here and every consumer restarts with the collector, so there is
        # nothing stored-but-unpublished to republish
        "collector": collector_main(
            CollectorSettings(**common, **source, republish_limit=0), bus, store
        ),
    }
    tasks = {asyncio.ensure_future(coro): name for name, coro in services.items()}
    status = asyncio.ensure_future(report_status(url))
    print(f"candlebus is up: API {url}/api/v1  dashboard {url}/  (Ctrl-C stops)", flush=True)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = task.exception()
            if error is not None:
                raise RuntimeError(f"{tasks[task]} failed: {error!r}") from error
            raise RuntimeError(f"{tasks[task]} stopped unexpectedly")
    finally:
        status.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, status, return_exceptions=True)
        await bus.close()
        await store.close()
        if sys.stdout.isatty():
            print()


def run_embedded(options: EmbeddedOptions) -> int:
    """Run the embedded pipeline until Ctrl-C or SIGTERM; return the process exit code."""
    configure_logging("WARNING")
    try:
        asyncio.run(run_until_signalled(serve_embedded(options)))
    except RuntimeError as exc:
        print(f"candlebus: {exc}", file=sys.stderr)
        return 1
    return 0
