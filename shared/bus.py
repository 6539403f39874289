"""Transport only: messages in, per-group batches of decoded entries out (Redis or in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from shared.bus_memory import MemoryBus
from shared.bus_redis import RedisBus
from shared.bus_types import Batch, DeadLetter, Entry, GroupInfo, StreamId
from shared.messages import Message, Stream

__all__ = [
    "Batch",
    "Bus",
    "DeadLetter",
    "Entry",
    "GroupInfo",
    "MemoryBus",
    "RedisBus",
    "StreamId",
]


class Bus(Protocol):
    """Publish, consume in groups, acknowledge, dead-letter, and tail streams."""

    async def publish(self, stream: Stream, message: Message) -> str:
        """Append one message (its `key` is the partition key); return the entry id."""
        ...

    async def publish_many(self, stream: Stream, messages: Sequence[Message]) -> list[str]:
        """Append messages in one round trip, in order; return their entry ids."""
        ...

    def consume(
        self, stream: Stream, *, group: str, consumer: str, count: int, block_ms: int
    ) -> AsyncIterator[Batch]:
        """Yield batches for `consumer` in `group`: its own pending entries first, then new ones."""
        ...

    async def ack(self, batch: Batch) -> None:
        """Acknowledge every entry of the batch."""
        ...

    async def dead_letter(
        self, batch: Batch, entry: Entry, reason: str, *, detail: str = ""
    ) -> None:
        """Move one entry to the stream's dead-letter stream with the reason, and ack it.

        `reason` is a short fixed word (it labels a metric); `detail` says what was wrong.
        """
        ...

    async def last_message(self, stream: Stream, key: str) -> Message | None:
        """Return the last message published on `stream` with this partition key, if any."""
        ...

    async def read_after(
        self, stream: Stream, after_id: str, count: int
    ) -> list[tuple[str, Message]]:
        """Return up to `count` entries with ids strictly after `after_id` (no group involved)."""
        ...

    async def last_id(self, stream: Stream) -> str:
        """Return the id of the stream's last entry (`"0-0"` if it has none)."""
        ...

    def tail(
        self,
        streams: Sequence[Stream],
        *,
        block_ms: int,
        count: int,
        after: Mapping[Stream, str] | None = None,
    ) -> AsyncIterator[list[tuple[Stream, str, Message]]]:
        """Yield every new entry of the streams (plain XREAD from "now", or from the ids in
        `after` for the streams it names); no group, no ack."""
        ...

    async def group_info(self, stream: Stream) -> list[GroupInfo]:
        """Return each consumer group of the stream with its consumers, pending entries and lag."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
