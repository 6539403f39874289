"""The executor as a process, SIGKILLed at random moments over and over while it trades real
ticks (some delivered twice): in the end every fill is the uninterrupted trader's, once."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import redis

from shared.bus import RedisBus
from shared.messages import Stream, Tick, TicksDecided
from tests.e2e import checks
from tests.e2e.harness import Pipeline, wait_until
from tests.fakes import ticks_of, trade_directly

KILLS = 40


def uninterrupted(ticks: list[Tick]) -> list[tuple[str, float, float, int]]:
    """The fills of one trader that saw every tick once, in order."""
    fills = trade_directly(ticks)[0]
    return sorted((f.client_order_id, f.price, f.quantity, f.time_ms) for f in fills)


async def publish(redis_url: str, entries: list[list[Tick]]) -> None:
    bus = RedisBus(redis_url)
    try:
        await bus.publish_many(Stream.TICKS, [TicksDecided(ticks=e) for e in entries])
    finally:
        await bus.close()


def test_executor_sigkilled_at_random_moments_trades_exactly_as_uninterrupted(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    merged = sorted(
        ticks_of("ETH_BTC-1m.json", "ETH/BTC")
        + ticks_of("ADA_BTC-1m.json", "ADA/BTC")
        + ticks_of("XMR_BTC-1m.json", "XMR/BTC"),
        key=lambda t: (t.open_time_ms, t.symbol),
    )
    entries = [merged[i : i + 50] for i in range(0, len(merged), 50)]
    entries += entries[100:200]  # a stretch delivered twice, as after an upstream crash
    asyncio.run(publish(redis_url, entries))

    pipe = Pipeline(
        redis_url=redis_url,
        database_url=database_url,
        log_dir=tmp_path,
        per_service_env={"executor": {"BATCH_SIZE": "1", "CLAIM_IDLE_MS": "600000"}},
    )
    client = redis.Redis.from_url(redis_url)

    def drained() -> bool:
        pipe.assert_running()
        groups = {g["name"].decode(): g for g in client.xinfo_groups(Stream.TICKS.value)}
        group = groups.get("executor")
        return group is not None and group["pending"] == 0 and group["lag"] == 0

    rng = random.Random(7)
    killed_mid_stream = 0
    try:
        for _ in range(KILLS):
            pipe.start("executor")
            time.sleep(rng.uniform(0.4, 1.0))
            if drained():
                break
            fills_before = checks.count(database_url, "fills")
            assert pipe.kill("executor") == -9
            killed_mid_stream += fills_before > 0
        pipe.start("executor")
        wait_until(drained, timeout_s=120, what="the executor to work through every tick")
    finally:
        pipe.stop()
        client.close()

    stored = sorted(
        checks.query(
            database_url, "SELECT client_order_id, price, quantity, filled_at_ms FROM fills"
        )
    )
    assert [tuple(row) for row in stored] == uninterrupted(merged)
    orders = checks.query(database_url, "SELECT client_order_id FROM orders")
    assert len(orders) == len({cid for (cid,) in orders})
    signals = {t.signal_id for t in merged if t.side}
    assert checks.count(database_url, "decisions") == len(signals)
    assert client_dead_letters(redis_url) == 0
    assert killed_mid_stream >= 15, "the kills must land while it trades"
    print(f"\n{killed_mid_stream} SIGKILLs mid-stream, {len(stored)} fills as uninterrupted")


def client_dead_letters(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xlen(Stream.TICKS.dead_letter))
    finally:
        client.close()
