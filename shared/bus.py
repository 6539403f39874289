"""Transport only: the Bus protocol, RedisBus on Redis Streams, and MemoryBus in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.messages import Message, Stream


@dataclass(frozen=True, slots=True)
class Entry:
    """One decoded stream entry: its id (`"<ms>-<seq>"`), its message, and how often delivered."""

    id: str
    message: Message
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries read together from one stream by one consumer of one group."""

    stream: Stream
    group: str
    entries: list[Entry] = field(default_factory=list)

    @property
    def messages(self) -> list[Message]:
        return [entry.message for entry in self.entries]


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

    async def dead_letter(self, batch: Batch, entry: Entry, reason: str) -> None:
        """Move one entry to the stream's dead-letter stream with the reason, and ack it."""
        ...

    async def last_message(self, stream: Stream, key: str) -> Message | None:
        """Return the last message published on `stream` with this partition key, if any."""
        ...

    async def read_after(
        self, stream: Stream, after_id: str, count: int
    ) -> list[tuple[str, Message]]:
        """Return up to `count` entries with ids strictly after `after_id` (no group involved)."""
        ...

    def tail(
        self, streams: Sequence[Stream], *, block_ms: int, count: int
    ) -> AsyncIterator[list[tuple[Stream, str, Message]]]:
        """Yield every new entry of the streams (plain XREAD from "now"); no group, no ack."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
