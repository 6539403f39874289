"""Pipeline benchmark: a synthetic market through the five services as separate processes.

Runs on the real Redis and Postgres and prints two figures:
  1. sustained throughput: candles/s stored by the collector and handled by the indicators
     service while the collector produces as fast as it can (N symbols);
  2. latency at a steady rate below capacity: candle publication -> indicator row stored and
     -> signal stored, p50 and p99;
  3. the indicators service alone: a backlog of candles prefilled on its stream, then the
     service started: time from process start to the first candle handled, and candles/s
     sustained while it drains the backlog (decode, compute, store, publish, ack).

    python benchmarks/pipeline.py [--symbols 200] [--seconds 20] [--latency-symbols 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.collector.sources import SyntheticSource
from shared.bus import RedisBus
from shared.messages import Stream
from shared.store import upgrade
from tests.e2e.harness import Pipeline, wait_until

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"


def scalar(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar() or 0)
    finally:
        engine.dispose()


def backlog(stream: Stream, group: str) -> int:
    """Return the entries of `stream` that `group` has not read or not acked yet."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        (info,) = [g for g in client.xinfo_groups(stream) if g["name"].decode() == group]
        return int(info["lag"] or 0) + int(info["pending"])
    finally:
        client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Scratch:
    """A fresh database and an empty Redis database for one phase, removed afterwards."""

    def __enter__(self) -> str:
        self.name = f"cbbench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        redis.Redis.from_url(REDIS_URL).flushdb()
        self.url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.name
        upgrade(self.url)
        return self.url

    def __exit__(self, *exc: object) -> None:
        redis.Redis.from_url(REDIS_URL).flushdb()
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        admin.dispose()


def start(url: str, log_dir: Path, symbols: int, interval_s: float) -> Pipeline:
    pipeline = Pipeline(
        redis_url=REDIS_URL,
        database_url=url,
        log_dir=log_dir,
        env={"LOG_LEVEL": "WARNING", "BLOCK_MS": "50"},
        per_service_env={
            "collector": {
                "SOURCE": "synthetic",
                "SYNTHETIC_SYMBOLS": str(symbols),
                "CANDLE_INTERVAL_S": str(interval_s),
            }
        },
    )
    pipeline.start("indicators", "signals", "executor")
    time.sleep(3)  # let the consumers compile (JIT cache) and create their groups
    pipeline.start("collector")
    return pipeline


def throughput(symbols: int, seconds: float, log_dir: Path) -> None:
    with Scratch() as url:
        pipeline = start(url, log_dir, symbols, interval_s=0.0)
        try:
            wait_until(
                lambda: scalar(url, "SELECT count(*) FROM indicators") > 0,
                timeout_s=60,
                what="the first indicator rows",
            )
            time.sleep(2)
            c0, i0, t0 = (
                scalar(url, "SELECT count(*) FROM candles"),
                scalar(url, "SELECT count(*) FROM indicators"),
                time.monotonic(),
            )
            time.sleep(seconds)
            c1, i1, t1 = (
                scalar(url, "SELECT count(*) FROM candles"),
                scalar(url, "SELECT count(*) FROM indicators"),
                time.monotonic(),
            )
            pipeline.assert_running()
        finally:
            pipeline.stop()
    elapsed = t1 - t0
    print(f"throughput, {symbols} symbols, collector unpaced, {elapsed:.1f} s measured:")
    print(f"  collector stored      {(c1 - c0) / elapsed:10,.0f} candles/s")
    print(f"  indicators handled    {(i1 - i0) / elapsed:10,.0f} candles/s")
    print(f"  backlog at the end    {c1 - i1:10,d} candles")


def latency(symbols: int, interval_s: float, seconds: float, log_dir: Path) -> None:
    with Scratch() as url:
        pipeline = start(url, log_dir, symbols, interval_s=interval_s)
        try:
            time.sleep(seconds)
            pipeline.assert_running()
        finally:
            pipeline.stop()
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            indicator_ms = [
                float(r[0])
                for r in conn.execute(
                    sa.text("SELECT i.stored_at_ms - i.candle_closed_at_ms FROM indicators i")
                )
            ]
            signal_ms = [
                float(r[0])
                for r in conn.execute(
                    sa.text("SELECT stored_at_ms - candle_closed_at_ms FROM signals")
                )
            ]
        engine.dispose()
    rate = symbols / interval_s
    print(f"latency, {symbols} symbols at {rate:,.0f} candles/s for {seconds:.0f} s:")
    for name, values in (("candle -> indicators", indicator_ms), ("candle -> signal", signal_ms)):
        print(
            f"  {name:22s} p50 {percentile(values, 0.5):7.1f} ms   "
            f"p99 {percentile(values, 0.99):7.1f} ms   (n={len(values):,}, "
            f"mean {statistics.fmean(values) if values else float('nan'):.1f} ms)"
        )


async def prefill(symbols: int, candles: int) -> int:
    """Publish `candles` synthetic candles on the candles stream for the indicators group."""
    client = redis.Redis.from_url(REDIS_URL)
    client.xgroup_create(Stream.CANDLES, "indicators", id="0", mkstream=True)
    client.close()
    bus = RedisBus(REDIS_URL, retain_entries=candles)
    source = SyntheticSource(symbols=symbols, candle_interval_s=0.0, start_ms=1_500_000_000_000)
    published = 0
    async for batch in source.batches({}):
        await bus.publish_many(Stream.CANDLES, batch)
        published += len(batch)
        if published >= candles:
            break
    await bus.close()
    return published


def indicators_service(symbols: int, candles: int, log_dir: Path) -> None:
    with Scratch() as url:
        published = asyncio.run(prefill(symbols, candles))
        pipeline = Pipeline(
            redis_url=REDIS_URL,
            database_url=url,
            log_dir=log_dir,
            env={"LOG_LEVEL": "WARNING", "BLOCK_MS": "50"},
        )
        started_ms = time.time() * 1000
        pipeline.start("indicators")
        try:
            # Polled on Redis, not Postgres: a count every 100 ms (a new connection, a parallel
            # scan) would take CPU from the service it measures. A candle is acked only once
            # its row is stored, so an empty backlog means every row is in.
            wait_until(
                lambda: backlog(Stream.CANDLES, "indicators") == 0,
                timeout_s=600,
                what=f"{published} candles acked",
            )
            pipeline.assert_running()
        finally:
            pipeline.stop()
        stored = scalar(url, "SELECT count(*) FROM indicators")
        if stored != published:
            raise SystemExit(f"{stored} indicator rows stored for {published} candles")
        first = scalar(url, "SELECT min(stored_at_ms) FROM indicators")
        last = scalar(url, "SELECT max(stored_at_ms) FROM indicators")
    print(f"indicators service alone, {published:,} prefilled candles of {symbols} symbols:")
    print(f"  process start -> first candle handled  {(first - started_ms) / 1000:6.2f} s")
    print(
        f"  sustained while draining               {published / ((last - first) / 1000):10,.0f}"
        " candles/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-symbols", type=int, default=500)
    parser.add_argument(
        "--latency-interval", type=float, default=0.25, help="seconds between candles per symbol"
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--service-symbols", type=int, default=1000)
    parser.add_argument("--service-candles", type=int, default=300_000)
    parser.add_argument("--only", choices=("throughput", "latency", "service"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "throughput"):
            throughput(args.symbols, args.seconds, Path(tmp))
        if args.only in (None, "latency"):
            latency(args.latency_symbols, args.latency_interval, args.latency_seconds, Path(tmp))
        if args.only in (None, "service"):
            indicators_service(args.service_symbols, args.service_candles, Path(tmp))


if __name__ == "__main__":
    main()
