"""Relay and backfill over MemoryBus: where the relay starts, and resuming a client exactly
while live entries keep arriving (no sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.gateway.hub import Hub
from services.gateway.relay import backfill, relay, start_cursors
from services.gateway.subscriber import Subscriber
from shared.bus import MemoryBus
from shared.messages import Message, Stream
from tests.fakes import candle, signal

pytestmark = pytest.mark.timeout(30)


def received(hub: Hub, client: Subscriber) -> list[dict[str, Any]]:
    """Flush the hub and return every frame waiting for the client, decoded."""
    hub.flush()
    out = []
    while (text := client.take()) is not None:
        out.append(json.loads(text))
    return out


def event_ids(frames: list[dict[str, Any]]) -> list[str]:
    return [event["id"] for frame in frames for event in frame.get("events", [])]


class LiveBus(MemoryBus):
    """A MemoryBus on which, during every backlog read, other services publish more entries
    that the relay hands to the hub at once: half the time just before the read (so the read
    also returns them), half the time just after it (so only the hub has them)."""

    def __init__(self, hub: Hub, per_read: int) -> None:
        super().__init__()
        self.hub = hub
        self.per_read = per_read
        self.reads = 0

    async def _publish_live(self) -> None:
        for _ in range(self.per_read):
            message = candle("ETH/BTC", open_time_ms=60_000 * (1000 + self.reads))
            entry_id = await self.publish(Stream.CANDLES, message)
            self.hub.publish(Stream.CANDLES, entry_id, message)

    async def read_after(
        self, stream: Stream, after_id: str, count: int
    ) -> list[tuple[str, Message]]:
        self.reads += 1
        if self.reads % 2:
            await self._publish_live()
            return await super().read_after(stream, after_id, count)
        rows = await super().read_after(stream, after_id, count)
        await self._publish_live()
        return rows


async def test_backfill_while_entries_keep_arriving_sends_each_entry_once_in_order() -> None:
    hub = Hub(queue_size=10_000, max_channels=10, batch_max=50)
    bus = LiveBus(hub, per_read=3)
    missed = [candle(symbol, 60_000 * n) for n in range(40) for symbol in ("ETH/BTC", "LTC/BTC")]
    seen_id = await bus.publish(Stream.CANDLES, candle("ETH/BTC", 0))
    ids = await bus.publish_many(Stream.CANDLES, missed)
    hub.seed({Stream.CANDLES: ids[-1]})
    client = hub.connect()
    since = json.dumps(
        {"op": "subscribe", "channels": ["candles:ETH/BTC"], "since": {"candles": seen_id}}
    )

    plan = hub.handle_request(client, since)
    await backfill(bus, hub, client, plan, page=7)
    after = candle("ETH/BTC", 60_000 * 5000)
    hub.publish(Stream.CANDLES, await bus.publish(Stream.CANDLES, after), after)

    frames = received(hub, client)
    every_eth = [
        entry_id
        for entry_id, message in await bus.read_after(Stream.CANDLES, seen_id, 10_000)
        if getattr(message, "symbol", "") == "ETH/BTC"
    ]
    assert bus.reads > 3  # several pages, with live entries published during each
    assert event_ids(frames) == every_eth
    resumed = next(frame for frame in frames if frame["type"] == "resumed")
    assert resumed["gap"] is False and resumed["count"] >= 40
    assert client.holding == {}


async def test_resuming_after_an_entry_the_stream_no_longer_holds_reports_a_gap() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    bus = MemoryBus()
    ids = await bus.publish_many(Stream.SIGNALS, [signal() for _ in range(5)])
    hub.seed({Stream.SIGNALS: ids[-1]})
    client = hub.connect()
    plan = hub.handle_request(
        client,
        json.dumps({"op": "subscribe", "channels": ["signals"], "since": {"signals": "1-0"}}),
    )

    await backfill(bus, hub, client, plan, page=100)

    frames = received(hub, client)
    assert event_ids(frames) == ids  # what is still stored comes, ...
    assert frames[-1] == {"type": "resumed", "stream": "signals", "count": 5, "gap": True}


async def test_backfill_reads_the_next_page_only_when_the_outbox_has_room() -> None:
    hub = Hub(queue_size=10, max_channels=10, batch_max=100)
    bus = MemoryBus()
    first = await bus.publish(Stream.SIGNALS, signal())
    ids = await bus.publish_many(Stream.SIGNALS, [signal() for _ in range(30)])
    hub.seed({Stream.SIGNALS: ids[-1]})
    client = hub.connect()
    plan = hub.handle_request(
        client,
        json.dumps({"op": "subscribe", "channels": ["signals"], "since": {"signals": first}}),
    )
    resuming = asyncio.create_task(backfill(bus, hub, client, plan, page=5))
    got: list[str] = []

    async with asyncio.timeout(5):
        while not resuming.done() or client.outbox:
            hub.flush()
            frame = client.take()
            if frame is not None:
                got.extend(event["id"] for event in json.loads(frame).get("events", []))
            assert len(client.outbox) <= 10  # never more than the outbox holds
            await asyncio.sleep(0)

    assert got == ids and not client.closed


async def test_relay_starts_at_the_seeded_ids_so_nothing_published_in_between_is_missed() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    bus = MemoryBus()
    await bus.publish(Stream.SIGNALS, signal())
    cursors = await start_cursors(bus)
    hub.seed(cursors)
    client = hub.connect()
    hub.subscribe(client, ["signals"])
    between = await bus.publish(Stream.SIGNALS, signal())  # after seeding, before the tail runs

    task = asyncio.create_task(relay(bus, hub, block_ms=20, count=10, after=cursors))
    try:
        async with asyncio.timeout(5):
            while hub.cursor(Stream.SIGNALS) != between:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert Stream.TICKS not in cursors and cursors[Stream.CANDLES] == "0-0"
    assert event_ids(received(hub, client)) == [between]
