"""The relay: every stream's new entries in (plain XREAD tail, no group) -> the hub out; and the
backfill: a stream's entries after a reconnecting client's last id in -> that client out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from services.gateway.hub import Hub
from services.gateway.resume import entry_before
from services.gateway.subscriber import Subscriber
from shared.bus import Bus
from shared.bus_types import parse_id
from shared.messages import Message, Stream

EntryListener = Callable[[Stream, str, Message], None]

# Ticks are the executor's input (whole batches of candles): no client subscribes to them.
RELAYED: Final = tuple(stream for stream in Stream if stream is not Stream.TICKS)


class RelayStopped(RuntimeError):
    """Raised when the bus tail ends: a gateway that no longer hears the bus must not stay up."""


async def start_cursors(bus: Bus) -> dict[Stream, str]:
    """Return the last entry id of every relayed stream: where the relay starts."""
    return {stream: await bus.last_id(stream) for stream in RELAYED}


async def relay(
    bus: Bus,
    hub: Hub,
    *,
    block_ms: int,
    count: int,
    after: Mapping[Stream, str],
    before_publish: EntryListener | None = None,
) -> None:
    """Feed the hub from every stream after the ids in `after` until the tail fails; never
    wait for a client. `before_publish` sees each entry first (the response cache, so that a
    client told of an event reads data no older than it)."""
    # A plain tail rather than a consumer group: every gateway replica must see every entry.
    # Starting at ids the hub was seeded with keeps the ids it hands out exact from the start.
    async for entries in bus.tail(list(RELAYED), block_ms=block_ms, count=count, after=after):
        for stream, entry_id, message in entries:
            if before_publish is not None:
                before_publish(stream, entry_id, message)
            hub.publish(stream, entry_id, message)
    raise RelayStopped("the bus tail ended")


async def backfill(
    bus: Bus, hub: Hub, subscriber: Subscriber, plan: Mapping[Stream, str], *, page: int
) -> None:
    """Send a reconnecting client what it missed on each stream of `plan`, then its live events.

    Reads in pages, each only once the client's outbox has room, so a long backlog costs
    bounded memory; the live events held meanwhile are released by `Hub.finish_resume`.
    """
    # A page never fills more than half the outbox: the rest is for live events and replies.
    count = max(1, min(page, subscriber.limit // 2))
    for stream, since in plan.items():
        gap = not await _still_stored(bus, stream, since)
        cursor, sent = since, 0
        while True:
            await subscriber.wait_for_room(count)
            if subscriber.closed:
                return
            rows = await bus.read_after(stream, cursor, count)
            sent += hub.replay(subscriber, stream, rows)
            if rows:
                cursor = rows[-1][0]
            # Caught up once past what the relay has published: the rest comes live (held).
            relayed = hub.cursor(stream)
            if not rows or (relayed is not None and parse_id(cursor) >= parse_id(relayed)):
                break
        hub.finish_resume(subscriber, stream, cursor, sent=sent, gap=gap)


async def _still_stored(bus: Bus, stream: Stream, entry_id: str) -> bool:
    # The client's last entry is gone when the stream was trimmed past it: what came right
    # after it may be gone too, and the client is told so (`gap`) and reloads.
    before = entry_before(entry_id)
    if before is None:  # "0-0": the client asks for everything the stream still holds
        return True
    first = await bus.read_after(stream, before, 1)
    return bool(first) and first[0][0] == entry_id
