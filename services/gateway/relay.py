"""The relay: every stream's new entries in (plain XREAD tail, no group) -> the hub out."""

from __future__ import annotations

from services.gateway.hub import Hub
from shared.bus import Bus
from shared.messages import Stream


class RelayStopped(RuntimeError):
    """Raised when the bus tail ends: a gateway that no longer hears the bus must not stay up."""


async def relay(bus: Bus, hub: Hub, *, block_ms: int, count: int) -> None:
    """Feed the hub from every stream until the tail fails; never wait for a client."""
    # A plain tail rather than a consumer group: every gateway replica must see every entry.
    async for entries in bus.tail(list(Stream), block_ms=block_ms, count=count):
        for stream, entry_id, message in entries:
            hub.publish(stream, entry_id, message)
    raise RelayStopped("the bus tail ended")
