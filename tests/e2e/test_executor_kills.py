"""The executor as a process, SIGKILLed at random moments over and over while it trades real
ticks (some delivered twice): on paper, in the end every fill is the uninterrupted trader's,
once; live, against the stand-in exchange as another process, every order exists once on the
exchange and the store holds exactly its trades."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import redis

from shared.bus import RedisBus
from shared.messages import Stream, Tick, TicksDecided
from tests.e2e import checks
from tests.e2e.harness import Pipeline, wait_until
from tests.fakes import ticks_of, trade_directly
from tests.standin.remote import run_standin_process

KILLS = 20
LIVE_KILLS = 15


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

    try:
        killed_mid_stream = kill_at_random(pipe, database_url, KILLS, drained)
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
    assert killed_mid_stream >= 8, "the kills must land while it trades"
    print(f"\n{killed_mid_stream} SIGKILLs mid-stream, {len(stored)} fills as uninterrupted")


def kill_at_random(
    pipe: Pipeline, database_url: str, kills: int, drained: Callable[[], bool],
    window_s: tuple[float, float] = (0.1, 0.8),
) -> int:  # fmt: skip
    """Start the executor and SIGKILL it at a random moment after it has started, `kills`
    times or until it is done; return the kills that landed after its first fill."""
    rng = random.Random(7)
    log = pipe.log_dir / "executor.log"
    landed = 0
    for start in range(1, kills + 1):
        pipe.start("executor")
        # a loaded machine may take seconds to import: the random moment counts from its start
        wait_until(
            lambda n=start: log.read_text().count("executor starting") >= n,
            timeout_s=60, what="the executor to start",
        )  # fmt: skip
        time.sleep(rng.uniform(*window_s))
        if drained():
            break
        fills_before = checks.count(database_url, "fills")
        assert pipe.kill("executor") == -9
        landed += fills_before > 0
    return landed


def test_live_executor_sigkilled_at_random_moments_places_every_order_once(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    ticks = ticks_of("ETH_BTC-1m.json", "ETH/BTC")[-1_200:]  # near the stand-in's clock
    entries = [[tick] for tick in ticks] + [[tick] for tick in ticks[:400]]  # some twice
    asyncio.run(publish(redis_url, entries))
    client = redis.Redis.from_url(redis_url)

    def drained() -> bool:
        pipe.assert_running()
        groups = {g["name"].decode(): g for g in client.xinfo_groups(Stream.TICKS.value)}
        group = groups.get("executor")
        return group is not None and group["pending"] == 0 and group["lag"] == 0

    with run_standin_process(speed=0.0) as exchange:
        exchange.control.fund(BTC=1.0)
        pipe = Pipeline(
            redis_url=redis_url,
            database_url=database_url,
            log_dir=tmp_path,
            per_service_env={
                "executor": {
                    "BROKER": "live",
                    "EXCHANGE": "binance",
                    "API_URL": exchange.base_url,
                    "API_KEY": "e2e-key-5c1f9a",
                    "API_SECRET": "e2e-secret-77b0d2",
                    "ACCOUNT": "live",
                    "EQUITY": "0.5",
                    "ORDER_QUOTE_AMOUNT": "0.01",
                    "STOP_LOSS_PCT": "0.5",
                    "TAKE_PROFITS": "0.3:0.5,0.6:0.5",
                    "BATCH_SIZE": "5",
                    "CLAIM_IDLE_MS": "600000",
                }
            },
        )
        try:
            # it trades these ticks in a few seconds: kill it soon after each start
            landed = kill_at_random(pipe, database_url, LIVE_KILLS, drained, (0.05, 0.3))
            pipe.start("executor")
            wait_until(drained, timeout_s=120, what="the executor to work through every tick")
            wait_until(
                lambda: not checks.query(
                    database_url, "SELECT 1 FROM orders WHERE status = 'pending'"
                ),
                timeout_s=30, what="the last orders to settle",
            )  # fmt: skip
        finally:
            pipe.stop()
            client.close()
        account = exchange.control.account()

    on_exchange = account["orders"]
    ids = [order["clientOrderId"] for order in on_exchange]
    assert len(ids) == len(set(ids)), "an order was placed twice"
    stored = dict(checks.query(database_url, "SELECT client_order_id, status FROM orders"))
    assert {cid for cid, status in stored.items() if status == "filled"} == set(ids)
    assert set(stored.values()) <= {"filled", "cancelled"}
    fills = checks.query(database_url, "SELECT fill_id, side, price FROM fills")
    assert sorted(tuple(row) for row in fills) == sorted(
        (f"{o['clientOrderId']}-{t['tradeId']}", o["side"].lower(), float(t["price"]))
        for o in on_exchange
        for t in o["fills"]
    )
    [(quantity,)] = checks.query(database_url, "SELECT quantity FROM positions")
    free, locked = account["balances"]["ETH"]
    assert abs(quantity - (free + locked)) < 1e-12
    assert len(ids) >= 20 and landed >= 8, (len(ids), landed)
    print(f"\n{landed} SIGKILLs mid-stream; {len(ids)} orders on the exchange, each once")


def client_dead_letters(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xlen(Stream.TICKS.dead_letter))
    finally:
        client.close()
