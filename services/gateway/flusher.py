"""The hub's clock: pending events in -> outboxes flushed every few milliseconds, heartbeats out.

One task for every client (never a timer per client): after a flush it sleeps `interval_s`, so
events that arrive meanwhile share the next frame; an idle hub flushes the first new event at
once, so batching adds latency only when there is traffic to batch.
"""

from __future__ import annotations

import asyncio
import time

from services.gateway.hub import Hub


async def flush_forever(hub: Hub, *, interval_s: float) -> None:
    """Flush the hub's outboxes whenever events wait, at most once per `interval_s`."""
    while True:
        await hub.wait_dirty()
        hub.flush()
        await asyncio.sleep(interval_s)


async def beat_forever(hub: Hub, *, interval_s: float) -> None:
    """Queue a heartbeat for every client every `interval_s`, with the stream rates since."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(interval_s)
        now = loop.time()
        hub.heartbeat(time.time_ns() // 1_000_000, now - last)
        last = now


async def pace(hub: Hub, *, flush_s: float, heartbeat_s: float) -> None:
    """Run the flusher and the heartbeat until cancelled (or until one of them fails)."""
    async with asyncio.TaskGroup() as group:
        group.create_task(flush_forever(hub, interval_s=flush_s), name="hub flusher")
        group.create_task(beat_forever(hub, interval_s=heartbeat_s), name="hub heartbeat")
