"""The bus contract on the real Redis and on MemoryBus (parametrized), plus RedisBus specifics."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from shared.bus import Batch, Entry, MemoryBus, RedisBus
from shared.messages import CandleClosed, SignalEmitted, Stream, decode

pytestmark = pytest.mark.integration

CLAIM_IDLE_MS = 200
MAX_DELIVERIES = 2
RETAIN_ENTRIES = 10

AnyBus = RedisBus | MemoryBus


def candle(index: int, symbol: str = "ETH/BTC") -> CandleClosed:
    """Return the index-th one-minute candle of a market (the values only need to differ)."""
    open_time_ms = 1_516_424_100_000 + index * 60_000
    price = 0.05 + index * 1e-5
    return CandleClosed(
        exchange="binance",
        symbol=symbol,
        timeframe="1m",
        open_time_ms=open_time_ms,
        open=price,
        high=price * 1.01,
        low=price * 0.99,
        close=price,
        volume=100.0 + index,
        source="replay",
        closed_at_ms=open_time_ms + 60_000,
    )


BusFactory = Callable[..., AnyBus]


@pytest.fixture(params=["memory", "redis"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """Build buses of one kind (short claim idle time, small retention); close them after."""
    created: list[AnyBus] = []

    def make(**overrides: Any) -> AnyBus:
        options: dict[str, Any] = {
            "max_deliveries": MAX_DELIVERIES,
            "claim_idle_ms": CLAIM_IDLE_MS,
            "retain_entries": RETAIN_ENTRIES,
        } | overrides
        if request.param == "redis":
            created.append(RedisBus(request.getfixturevalue("redis_url"), **options))
        else:
            created.append(MemoryBus(**options))
        return created[-1]

    yield make
    for bus in created:
        await bus.close()


@pytest.fixture
def bus(make_bus: BusFactory) -> AnyBus:
    return make_bus()


@pytest.fixture
async def redis_bus(redis_url: str) -> AsyncIterator[RedisBus]:
    created = RedisBus(
        redis_url,
        max_deliveries=MAX_DELIVERIES,
        claim_idle_ms=CLAIM_IDLE_MS,
        retain_entries=RETAIN_ENTRIES,
    )
    yield created
    await created.close()


def consumer_of(
    bus: AnyBus, group: str, consumer: str = "c1", count: int = 100, block_ms: int = 50
) -> AsyncIterator[Batch]:
    return bus.consume(
        Stream.CANDLES, group=group, consumer=consumer, count=count, block_ms=block_ms
    )


async def next_batch(batches: AsyncIterator[Batch], timeout_s: float = 3.0) -> Batch:
    return await asyncio.wait_for(anext(batches), timeout_s)


async def collect(
    batches: AsyncIterator[Batch], total: int, ack_with: AnyBus | None = None
) -> list[Entry]:
    """Read batches until `total` entries arrived, acking each batch if a bus is given."""
    entries: list[Entry] = []
    while len(entries) < total:
        batch = await next_batch(batches)
        entries += batch.entries
        if ack_with is not None:
            await ack_with.ack(batch)
    return entries


async def nothing_arrives(batches: AsyncIterator[Batch], wait_s: float = 0.3) -> bool:
    task = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(wait_s)
    arrived = task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return not arrived


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def signal_on(closed: CandleClosed) -> SignalEmitted:
    return SignalEmitted(
        signal_id=f"bands:{closed.key}:{closed.open_time_ms}",
        strategy="bands",
        exchange=closed.exchange,
        symbol=closed.symbol,
        timeframe=closed.timeframe,
        open_time_ms=closed.open_time_ms,
        side="buy",
        price=closed.close,
        reason="close below lower band",
        candle_closed_at_ms=closed.closed_at_ms,
    )


def ids_of(entries: Iterable[Entry]) -> list[str]:
    return [entry.id for entry in entries]


# --- the contract, on both buses -------------------------------------------------------------


async def test_consume_creates_the_stream_and_group_before_anything_is_published(
    bus: AnyBus,
) -> None:
    batches = consumer_of(bus, "creates")
    waiting = asyncio.ensure_future(anext(batches))
    for _ in range(100):
        if await bus.group_info(Stream.CANDLES):
            break
        await asyncio.sleep(0.01)
    [info] = await bus.group_info(Stream.CANDLES)
    assert (info["name"], info["pending"], info["lag"]) == ("creates", 0, 0)

    entry_id = await bus.publish(Stream.CANDLES, candle(1))

    batch = await asyncio.wait_for(waiting, 3.0)
    assert ids_of(batch.entries) == [entry_id]
    await batches.aclose()


async def test_group_created_after_publishing_still_reads_every_old_entry(bus: AnyBus) -> None:
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(3)])

    first = await collect(consumer_of(bus, "early"), 3)
    second = await collect(consumer_of(bus, "late"), 3)

    assert ids_of(first) == ids_of(second) == published
    assert [e.message for e in first] == [candle(i) for i in range(3)]
    assert {e.deliveries for e in first} == {1}


async def test_each_batch_holds_at_most_count_entries(bus: AnyBus) -> None:
    await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(25)])
    batches = consumer_of(bus, "counted", count=10)

    sizes = [len((await next_batch(batches)).entries) for _ in range(3)]

    assert sizes == [10, 10, 5]
    await batches.aclose()


async def test_killed_consumer_gets_its_unacked_entries_again_with_one_more_delivery(
    make_bus: BusFactory,
) -> None:
    bus = make_bus(claim_idle_ms=60_000)  # so only the re-read of own pending entries can help
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(3)])
    killed = consumer_of(bus, "workers", consumer="w1")
    assert [e.deliveries for e in await collect(killed, 3)] == [1, 1, 1]
    await killed.aclose()  # dies without acking

    restarted = consumer_of(bus, "workers", consumer="w1")
    again = await next_batch(restarted)
    assert ids_of(again.entries) == published
    assert [e.deliveries for e in again.entries] == [2, 2, 2]
    await bus.ack(again)
    await restarted.aclose()

    after_ack = consumer_of(bus, "workers", consumer="w1")
    assert await nothing_arrives(after_ack)
    await after_ack.aclose()
    [info] = await bus.group_info(Stream.CANDLES)
    assert info["pending"] == 0


async def test_pending_entries_are_reread_in_pages_of_count(make_bus: BusFactory) -> None:
    bus = make_bus(claim_idle_ms=60_000)
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(25)])
    killed = consumer_of(bus, "paged", count=25)
    await next_batch(killed)
    await killed.aclose()

    restarted = consumer_of(bus, "paged", count=10)
    pages = [(await next_batch(restarted)).entries for _ in range(3)]

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [entry.id for page in pages for entry in page] == published
    assert {entry.deliveries for page in pages for entry in page} == {2}
    await restarted.aclose()


async def test_consumers_of_one_group_split_entries_and_every_group_gets_all(
    bus: AnyBus,
) -> None:
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(6)])
    first = consumer_of(bus, "split", consumer="one", count=4)
    second = consumer_of(bus, "split", consumer="two", count=4)
    other = consumer_of(bus, "other", count=10)

    from_first = (await next_batch(first)).entries
    from_second = (await next_batch(second)).entries
    from_other = (await next_batch(other)).entries

    assert ids_of(from_first) == published[:4]
    assert ids_of(from_second) == published[4:]
    assert ids_of(from_other) == published
    for batches in (first, second, other):
        await batches.aclose()


async def test_second_consumer_claims_entries_idle_longer_than_claim_idle_ms(
    bus: AnyBus,
) -> None:
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(2)])
    dead = consumer_of(bus, "workers", consumer="dead")
    await collect(dead, 2)
    delivered_at = time.monotonic()
    await dead.aclose()
    reclaimed_before = counter("candlebus_reclaimed_total", stream="candles", group="workers")

    survivor = consumer_of(bus, "workers", consumer="survivor")
    batch = await next_batch(survivor)

    assert time.monotonic() - delivered_at >= CLAIM_IDLE_MS / 1_000
    assert ids_of(batch.entries) == published
    assert [e.deliveries for e in batch.entries] == [2, 2]
    assert counter("candlebus_reclaimed_total", stream="candles", group="workers") == (
        reclaimed_before + 2
    )
    await survivor.aclose()


async def test_undecodable_entry_is_dead_lettered_and_later_entries_still_flow(
    bus: AnyBus,
) -> None:
    before = counter("candlebus_dead_letters_total", stream="candles", reason="undecodable")
    garbage_id = await bus.publish_raw(Stream.CANDLES, b"\xc1 not msgpack")
    good_id = await bus.publish(Stream.CANDLES, candle(7))
    batches = consumer_of(bus, "poisoned", consumer="c9")

    batch = await next_batch(batches)
    await bus.ack(batch)

    assert ids_of(batch.entries) == [good_id]
    [letter] = await bus.read_dead_letters(Stream.CANDLES)
    assert (letter.stream, letter.entry_id, letter.group, letter.consumer) == (
        "candles", garbage_id, "poisoned", "c9"
    )  # fmt: skip
    assert (letter.reason, letter.raw) == ("undecodable", b"\xc1 not msgpack")
    assert "CandleClosed" in letter.detail
    assert counter("candlebus_dead_letters_total", stream="candles", reason="undecodable") == (
        before + 1
    )
    [info] = await bus.group_info(Stream.CANDLES)
    assert info["pending"] == 0
    await batches.aclose()


async def test_entry_that_failed_more_than_max_deliveries_times_is_dead_lettered(
    bus: AnyBus,
) -> None:
    poison_id = await bus.publish(Stream.CANDLES, candle(1))
    for delivery in range(1, MAX_DELIVERIES + 1):
        crashing = consumer_of(bus, "crashy")
        [entry] = (await next_batch(crashing)).entries
        assert (entry.id, entry.deliveries) == (poison_id, delivery)
        await crashing.aclose()  # the handler crashed: no ack
    next_id = await bus.publish(Stream.CANDLES, candle(2))

    restarted = consumer_of(bus, "crashy")
    batch = await next_batch(restarted)

    assert ids_of(batch.entries) == [next_id]
    [letter] = await bus.read_dead_letters(Stream.CANDLES)
    assert (letter.entry_id, letter.reason) == (poison_id, "max_deliveries")
    assert decode(Stream.CANDLES, letter.raw) == candle(1)
    await restarted.aclose()


async def test_dead_letter_from_a_service_records_the_reason_and_acks(bus: AnyBus) -> None:
    await bus.publish_many(Stream.CANDLES, [candle(1), candle(2)])
    batches = consumer_of(bus, "strict", consumer="s1")
    batch = await next_batch(batches)
    bad, good = batch.entries

    await bus.dead_letter(batch, bad, "invalid_price", detail="close is NaN")
    await bus.ack(Batch(batch.stream, batch.group, [good]))

    [letter] = await bus.read_dead_letters(Stream.CANDLES)
    assert (letter.entry_id, letter.reason, letter.detail) == (
        bad.id,
        "invalid_price",
        "close is NaN",
    )
    assert (letter.group, letter.consumer) == ("strict", "s1")
    assert decode(Stream.CANDLES, letter.raw) == bad.message
    [info] = await bus.group_info(Stream.CANDLES)
    assert info["pending"] == 0
    await batches.aclose()


async def test_trim_never_drops_an_entry_a_lagging_group_has_not_acked(bus: AnyBus) -> None:
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(500)])
    fast = consumer_of(bus, "fast", count=1_000)
    slow = consumer_of(bus, "slow", consumer="slow1", count=500)
    read_by_slow = await next_batch(slow)
    await bus.ack(Batch(Stream.CANDLES, "slow", read_by_slow.entries[:400]))
    await slow.aclose()  # 100 entries stay pending
    published += await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(500, 1_000)])
    await collect(fast, 1_000, ack_with=bus)

    trimmed = await bus.trim(Stream.CANDLES)

    assert 0 < trimmed <= 400
    slow = consumer_of(bus, "slow", consumer="slow1", count=1_000)
    rest = await collect(slow, 600, ack_with=bus)
    assert ids_of(rest) == published[400:]
    assert [e.deliveries for e in rest[:100]] == [2] * 100
    await slow.aclose()
    await fast.aclose()


async def test_trim_keeps_the_newest_retain_entries_once_every_group_is_done(
    bus: AnyBus,
) -> None:
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(500)])
    reader = consumer_of(bus, "done", count=500)
    await collect(reader, 500, ack_with=bus)
    await reader.aclose()

    trimmed = await bus.trim(Stream.CANDLES)

    kept = [entry_id for entry_id, _ in await bus.read_after(Stream.CANDLES, "0-0", 1_000)]
    assert trimmed > 0
    assert len(kept) == 500 - trimmed >= RETAIN_ENTRIES
    assert kept == published[trimmed:]


async def test_trim_without_groups_keeps_the_newest_retain_entries(bus: AnyBus) -> None:
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(500)])

    trimmed = await bus.trim(Stream.CANDLES)

    kept = [entry_id for entry_id, _ in await bus.read_after(Stream.CANDLES, "0-0", 1_000)]
    assert trimmed > 0
    assert kept == published[trimmed:]
    assert len(kept) >= RETAIN_ENTRIES


async def test_publish_many_trims_by_itself_when_due_but_never_unread_entries(
    make_bus: BusFactory,
) -> None:
    bus = make_bus(trim_interval_s=0.0)  # every publish_many is due for a trim
    await bus.publish(Stream.CANDLES, candle(0))
    lagging = consumer_of(bus, "lagging")
    await bus.ack(await next_batch(lagging))
    await lagging.aclose()  # from here on, "lagging" reads nothing for a while
    published: list[str] = []
    for chunk in range(10):
        batch = [candle(chunk * 100 + i) for i in range(1, 101)]
        published += await bus.publish_many(Stream.CANDLES, batch)

    lagging = consumer_of(bus, "lagging", count=1_000)
    assert ids_of(await collect(lagging, 1_000, ack_with=bus)) == published
    await lagging.aclose()
    await bus.publish_many(Stream.CANDLES, [candle(1_001)])
    assert len(await bus.read_after(Stream.CANDLES, "0-0", 2_000)) < 1_002


async def test_last_message_is_the_latest_published_for_each_key(bus: AnyBus) -> None:
    await bus.publish_many(Stream.CANDLES, [candle(1), candle(1, "XRP/ETH"), candle(2)])
    await bus.publish(Stream.CANDLES, candle(3))

    assert await bus.last_message(Stream.CANDLES, "binance:ETH/BTC:1m") == candle(3)
    assert await bus.last_message(Stream.CANDLES, "binance:XRP/ETH:1m") == candle(1, "XRP/ETH")
    assert await bus.last_message(Stream.CANDLES, "binance:LTC/BTC:1m") is None


async def test_a_chunk_keeps_the_last_message_of_each_key_whatever_its_characters(
    bus: AnyBus,
) -> None:
    symbols = ["ETH/BTC", "币安币/USDT", "A" * 300]  # multi-byte characters, a long key
    batch = [candle(i, symbols[i % 3]) for i in range(30)]
    ids = await bus.publish_many(Stream.CANDLES, batch)

    assert [message for _, message in await bus.read_after(Stream.CANDLES, "0-0", 100)] == batch
    assert len(ids) == 30
    for offset, symbol in enumerate(symbols):
        assert await bus.last_message(Stream.CANDLES, candle(0, symbol).key) == batch[27 + offset]


async def test_read_after_starts_strictly_after_the_given_id(bus: AnyBus) -> None:
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(5)])

    after_second = await bus.read_after(Stream.CANDLES, published[1], 10)
    first_two = await bus.read_after(Stream.CANDLES, "0-0", 2)

    assert [entry_id for entry_id, _ in after_second] == published[2:]
    assert [message for _, message in after_second] == [candle(i) for i in range(2, 5)]
    assert [entry_id for entry_id, _ in first_two] == published[:2]
    assert await bus.read_after(Stream.CANDLES, published[-1], 10) == []


async def test_tail_sees_entries_published_after_it_started_on_every_stream(
    bus: AnyBus,
) -> None:
    await bus.publish(Stream.CANDLES, candle(0))  # before the tail: not seen
    tail = bus.tail([Stream.CANDLES, Stream.SIGNALS], block_ms=100, count=10)
    received: list[tuple[Stream, str]] = []

    async def follow() -> None:
        async for chunk in tail:
            received.extend((stream, entry_id) for stream, entry_id, _ in chunk)
            if len(received) >= 4:
                return

    following = asyncio.ensure_future(follow())
    await asyncio.sleep(0.2)
    first = await bus.publish(Stream.CANDLES, candle(1))
    await asyncio.sleep(0.05)
    second = await bus.publish(Stream.CANDLES, candle(2))
    garbage = await bus.publish_raw(Stream.SIGNALS, b"\xc1 skipped: no group to dead-letter it")
    signal = await bus.publish(Stream.SIGNALS, signal_on(candle(2)))
    third = await bus.publish(Stream.CANDLES, candle(3))
    await asyncio.wait_for(following, 3.0)

    assert [entry_id for stream, entry_id in received if stream == Stream.CANDLES] == [
        first,
        second,
        third,
    ]
    assert [entry_id for stream, entry_id in received if stream == Stream.SIGNALS] == [signal]
    assert garbage != signal
    await tail.aclose()


async def test_tail_after_given_ids_misses_nothing_published_before_it_runs(bus: AnyBus) -> None:
    assert await bus.last_id(Stream.SIGNALS) == "0-0"  # an empty (or absent) stream
    await bus.publish(Stream.CANDLES, candle(0))
    start = {stream: await bus.last_id(stream) for stream in (Stream.CANDLES, Stream.SIGNALS)}
    # Published after the ids were taken but before the tail's first read: still seen.
    early = await bus.publish(Stream.CANDLES, candle(1))
    signal = await bus.publish(Stream.SIGNALS, signal_on(candle(1)))
    tail = bus.tail([Stream.CANDLES, Stream.SIGNALS], block_ms=100, count=10, after=start)

    chunk = await asyncio.wait_for(anext(tail), 3.0)

    assert sorted((stream.value, entry_id) for stream, entry_id, _ in chunk) == [
        ("candles", early),
        ("signals", signal),
    ]
    assert await bus.last_id(Stream.CANDLES) == early
    await tail.aclose()


async def test_group_info_and_gauges_report_pending_and_lag(bus: AnyBus) -> None:
    await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(5)])
    batches = consumer_of(bus, "gauged", count=2)

    await next_batch(batches)

    [info] = await bus.group_info(Stream.CANDLES)
    assert (info["name"], info["consumers"], info["pending"], info["lag"]) == ("gauged", 1, 2, 3)
    labels = {"stream": "candles", "group": "gauged"}
    assert REGISTRY.get_sample_value("candlebus_consumer_lag_entries", labels) == 5
    assert REGISTRY.get_sample_value("candlebus_consumer_pending_entries", labels) == 0
    await batches.aclose()


# --- RedisBus only ---------------------------------------------------------------------------


class CountingConnection(redis.asyncio.Connection):
    """A real connection that records every write to the socket: one write is one round trip."""

    writes: list[bytes] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        payload = command if isinstance(command, bytes | str) else b"".join(command)
        CountingConnection.writes.append(
            payload if isinstance(payload, bytes) else payload.encode()
        )
        await super().send_packed_command(command, check_health)


async def test_publish_many_is_one_script_call_per_thousand_messages(
    redis_bus: RedisBus,
) -> None:
    redis_bus.client.connection_pool.connection_class = CountingConnection
    await redis_bus.client.ping()  # connects (handshake) before counting
    CountingConnection.writes = []

    ids = await redis_bus.publish_many(Stream.CANDLES, [candle(i) for i in range(2_500)])

    # one EVALSHA each for 1,000 + 1,000 + 500 messages, packed in one argument after the
    # command, the script's hash, the key count and the two keys
    assert len(CountingConnection.writes) == 3
    assert [write.split(b"\r\n", 1)[0] for write in CountingConnection.writes] == [b"*6"] * 3
    assert all(b"EVALSHA" in write[:20] for write in CountingConnection.writes)
    assert await redis_bus.client.xlen("candles") == len(ids) == 2_500
    assert len(set(ids)) == 2_500 and ids == sorted(
        ids, key=lambda i: tuple(map(int, i.split("-")))
    )
    last = await redis_bus.last_message(Stream.CANDLES, candle(2_499).key)
    assert last == candle(2_499)


async def test_entry_without_the_message_field_is_dead_lettered(redis_bus: RedisBus) -> None:
    odd_id = (await redis_bus.client.xadd("candles", {"x": b"1"})).decode()
    good_id = await redis_bus.publish(Stream.CANDLES, candle(1))
    batches = consumer_of(redis_bus, "fields")

    batch = await next_batch(batches)

    assert ids_of(batch.entries) == [good_id]
    [letter] = await redis_bus.read_dead_letters(Stream.CANDLES)
    assert (letter.entry_id, letter.reason, letter.raw) == (odd_id, "undecodable", b"")
    await batches.aclose()


async def test_entry_deleted_while_pending_is_acked_and_dropped(redis_bus: RedisBus) -> None:
    published = await redis_bus.publish_many(Stream.CANDLES, [candle(i) for i in range(3)])
    killed = consumer_of(redis_bus, "deletes")
    await collect(killed, 3)
    await killed.aclose()
    await redis_bus.client.xdel("candles", published[1])

    restarted = consumer_of(redis_bus, "deletes")
    batch = await next_batch(restarted)

    assert ids_of(batch.entries) == [published[0], published[2]]
    await redis_bus.ack(batch)
    [info] = await redis_bus.group_info(Stream.CANDLES)
    assert info["pending"] == 0
    assert await redis_bus.read_dead_letters(Stream.CANDLES) == []
    await restarted.aclose()


async def test_consume_survives_its_connection_being_killed_mid_read(redis_url: str) -> None:
    bus = RedisBus(redis_url, claim_idle_ms=60_000, retry_delays_s=(0.05,) * 4)
    admin = redis.asyncio.Redis.from_url(redis_url)
    db = int(redis_url.rsplit("/", 1)[1])
    batches = consumer_of(bus, "blip", block_ms=3_000)
    waiting = asyncio.ensure_future(anext(batches))
    blocked: list[int] = []
    for _ in range(200):
        clients = await admin.client_list()
        blocked = [int(c["id"]) for c in clients if c["cmd"] == "xreadgroup" and int(c["db"]) == db]
        if blocked:
            break
        await asyncio.sleep(0.01)

    assert await admin.client_kill_filter(_id=blocked[0]) == 1
    entry_id = await bus.publish(Stream.CANDLES, candle(1))

    batch = await asyncio.wait_for(waiting, 5.0)
    assert ids_of(batch.entries) == [entry_id]
    await batches.aclose()
    await admin.aclose()
    await bus.close()


async def test_consume_raises_after_bounded_retries_when_redis_is_unreachable() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", retry_delays_s=(0.05,) * 4)
    started = time.monotonic()

    with pytest.raises(redis.ConnectionError):
        await anext(consumer_of(bus, "nowhere"))

    assert 0.1 <= time.monotonic() - started < 2.0  # four waits of 25 to 75 ms, then give up
    await bus.close()


async def test_a_consumer_cancelled_at_any_moment_stops(redis_bus: RedisBus) -> None:
    """A cancellation that lands as a blocking read returns must still end the consumer.

    redis-py can swallow one then: without the bus re-raising it, the consumer reads on and
    whoever cancelled it waits forever (seen as a hung test before the bus checked).
    """
    rng = random.Random(5)
    for attempt in range(300):
        batches = consumer_of(redis_bus, "cancelled", consumer=f"c{attempt}", block_ms=2)
        task = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(rng.uniform(0.0, 0.02))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        assert done, f"consumer {attempt} still reading 2 s after it was cancelled"
        await batches.aclose()
