"""MemoryBus on its own, no sockets: ids, blocking reads, exact trims, bounded dead letters.

The contract MemoryBus shares with RedisBus is pinned down once, for both, in
tests/integration/test_redis_bus.py.
"""

from __future__ import annotations

import asyncio
import time

from shared.bus import Batch, MemoryBus
from shared.messages import CandleClosed, Stream, TicksDecided
from shared.settings import CommonSettings


def candle(index: int) -> CandleClosed:
    """Return the index-th one-minute ETH/BTC candle (the values only need to differ)."""
    open_time_ms = 1_516_424_100_000 + index * 60_000
    price = 0.05 + index * 1e-5
    return CandleClosed(
        exchange="binance",
        symbol="ETH/BTC",
        timeframe="1m",
        open_time_ms=open_time_ms,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=1.0,
        source="replay",
        closed_at_ms=open_time_ms + 60_000,
    )


def parse(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def test_ids_are_ms_dash_seq_and_strictly_increase_within_one_millisecond() -> None:
    bus = MemoryBus()
    before_ms = time.time_ns() // 1_000_000

    ids = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(2_000)])

    keys = [parse(entry_id) for entry_id in ids]
    assert keys == sorted(set(keys))
    assert keys[0][0] >= before_ms
    assert any(seq > 0 for _, seq in keys)  # many entries shared a millisecond


async def test_blocked_read_that_times_out_yields_no_empty_batch() -> None:
    bus = MemoryBus()
    batches = bus.consume(Stream.CANDLES, group="g", consumer="c", count=10, block_ms=20)
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.2)  # about ten block timeouts pass

    assert not waiting.done()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_blocked_read_wakes_as_soon_as_an_entry_is_published() -> None:
    bus = MemoryBus()
    batches = bus.consume(Stream.CANDLES, group="g", consumer="c", count=10, block_ms=10_000)
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.05)

    entry_id = await bus.publish(Stream.CANDLES, candle(1))
    batch = await asyncio.wait_for(waiting, 1.0)  # long before the block timeout

    assert [entry.id for entry in batch.entries] == [entry_id]
    await batches.aclose()


async def test_tail_wakes_on_publish_and_never_yields_an_empty_list() -> None:
    bus = MemoryBus()
    tail = bus.tail([Stream.CANDLES], block_ms=20, count=10)
    waiting = asyncio.ensure_future(anext(tail))
    await asyncio.sleep(0.1)
    assert not waiting.done()

    entry_id = await bus.publish(Stream.CANDLES, candle(1))

    assert await asyncio.wait_for(waiting, 1.0) == [(Stream.CANDLES, entry_id, candle(1))]
    await tail.aclose()


async def test_trim_cuts_exactly_the_entries_every_group_is_done_with() -> None:
    bus = MemoryBus(retain_entries=10)
    published = await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(100)])
    ahead = bus.consume(Stream.CANDLES, group="ahead", consumer="a", count=100, block_ms=10)
    read = await anext(ahead)
    await bus.ack(Batch(Stream.CANDLES, "ahead", read.entries[:60]))  # 40 stay pending
    behind = bus.consume(Stream.CANDLES, group="behind", consumer="b", count=30, block_ms=10)
    await bus.ack(await anext(behind))  # 70 not yet delivered

    assert await bus.trim(Stream.CANDLES) == 30
    assert [i for i, _ in await bus.read_after(Stream.CANDLES, "0-0", 200)] == published[30:]

    await bus.ack(Batch(Stream.CANDLES, "ahead", read.entries[60:]))
    await bus.ack(await anext(behind))
    await bus.ack(await anext(behind))
    await bus.ack(await anext(behind))
    assert await bus.trim(Stream.CANDLES) == 60  # everything read: only the retention is left
    assert [i for i, _ in await bus.read_after(Stream.CANDLES, "0-0", 200)] == published[90:]
    await ahead.aclose()
    await behind.aclose()


async def test_the_ticks_stream_keeps_its_own_number_of_read_entries() -> None:
    bus = MemoryBus.from_settings(
        CommonSettings(stream_retain_entries=1_000, stream_retain_ticks=5)
    )
    await bus.publish_many(Stream.CANDLES, [candle(i) for i in range(20)])
    ticks = await bus.publish_many(Stream.TICKS, [TicksDecided(ticks=[]) for _ in range(20)])
    for stream in (Stream.CANDLES, Stream.TICKS):
        reader = bus.consume(stream, group="g", consumer="c", count=100, block_ms=10)
        await bus.ack(await anext(reader))
        await reader.aclose()

    assert await bus.trim(Stream.CANDLES) == 0  # within its 1,000
    assert await bus.trim(Stream.TICKS) == 15
    assert [i for i, _ in await bus.read_after(Stream.TICKS, "0-0", 100)] == ticks[15:]


async def test_dead_letter_stream_keeps_only_the_newest_retain_entries() -> None:
    bus = MemoryBus(retain_entries=10)
    garbage_ids = [await bus.publish_raw(Stream.CANDLES, b"\xc1%d" % i) for i in range(15)]
    good_id = await bus.publish(Stream.CANDLES, candle(1))
    batches = bus.consume(Stream.CANDLES, group="g", consumer="c", count=100, block_ms=10)

    batch = await anext(batches)

    assert [entry.id for entry in batch.entries] == [good_id]
    letters = await bus.read_dead_letters(Stream.CANDLES, count=100)
    assert [letter.entry_id for letter in letters] == garbage_ids[5:]
    assert {letter.reason for letter in letters} == {"undecodable"}
    await batches.aclose()


async def test_from_settings_applies_the_delivery_limit() -> None:
    bus = MemoryBus.from_settings(CommonSettings(max_deliveries=1))
    poison_id = await bus.publish(Stream.CANDLES, candle(1))
    first = bus.consume(Stream.CANDLES, group="g", consumer="c", count=10, block_ms=10)
    assert [entry.id for entry in (await anext(first)).entries] == [poison_id]
    await first.aclose()  # crashed once: the limit is reached

    second = bus.consume(Stream.CANDLES, group="g", consumer="c", count=10, block_ms=10)
    waiting = asyncio.ensure_future(anext(second))
    await asyncio.sleep(0.1)

    assert not waiting.done()
    [letter] = await bus.read_dead_letters(Stream.CANDLES)
    assert (letter.entry_id, letter.reason) == (poison_id, "max_deliveries")
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
