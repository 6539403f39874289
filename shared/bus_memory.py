"""MemoryBus: messages in; per-group batches of decoded entries out, in one process."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from shared import metrics
from shared.bus_types import (
    FIELD,
    METRICS_INTERVAL_S,
    Batch,
    DeadLetter,
    Entry,
    GroupInfo,
    RawEntry,
    StreamId,
    TrimSchedule,
    decode_or_skip,
    export_group_metrics,
    format_id,
    parse_dead_letter,
    parse_id,
    record_entry_dead_letter,
    retained,
    triage_batch,
)
from shared.messages import Message, Stream, decode, encode
from shared.settings import CommonSettings


@dataclass
class _Pending:
    consumer: str
    deliveries: int
    delivered_at: float  # time.monotonic()


@dataclass
class _Group:
    last_delivered: StreamId = (0, 0)
    pending: dict[StreamId, _Pending] = field(default_factory=dict)
    consumers: set[str] = field(default_factory=set)


@dataclass
class _Log:
    """One stream: entries in id order, and its consumer groups."""

    ids: list[StreamId] = field(default_factory=list)
    fields: list[dict[str, bytes]] = field(default_factory=list)
    last_id: StreamId = (0, 0)
    groups: dict[str, _Group] = field(default_factory=dict)

    def append(self, fields: dict[str, bytes]) -> str:
        ms = time.time_ns() // 1_000_000
        last_ms, last_seq = self.last_id
        self.last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        self.ids.append(self.last_id)
        self.fields.append(fields)
        return format_id(self.last_id)

    def find(self, entry_id: StreamId) -> dict[str, bytes] | None:
        index = bisect.bisect_left(self.ids, entry_id)
        found = index < len(self.ids) and self.ids[index] == entry_id
        return self.fields[index] if found else None

    def after(self, entry_id: StreamId, count: int) -> list[tuple[StreamId, dict[str, bytes]]]:
        start = bisect.bisect_right(self.ids, entry_id)
        stop = start + count
        return list(zip(self.ids[start:stop], self.fields[start:stop], strict=True))

    def cut(self, count: int) -> None:
        del self.ids[:count]
        del self.fields[:count]


class MemoryBus:
    """The Bus in one process, with the same semantics as RedisBus (embedded mode, unit tests)."""

    def __init__(
        self,
        *,
        max_deliveries: int = 5,
        claim_idle_ms: int = 30_000,
        retain_entries: int = 100_000,
        retain_ticks: int = 1_000,
        trim_interval_s: float = 5.0,
    ) -> None:
        self._max_deliveries = max_deliveries
        self._claim_idle_ms = claim_idle_ms
        self._retain_entries = retain_entries
        self._retain_ticks = retain_ticks
        self._trim_schedule = TrimSchedule(trim_interval_s)
        self._logs: dict[str, _Log] = {}
        self._last: dict[str, dict[str, bytes]] = {}
        # Replaced on every append: waiters hold the old one, which is set to wake them.
        self._appended = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> MemoryBus:
        """Build the bus from the common settings."""
        return cls(
            max_deliveries=settings.max_deliveries,
            claim_idle_ms=settings.claim_idle_ms,
            retain_entries=settings.stream_retain_entries,
            retain_ticks=settings.stream_retain_ticks,
        )

    def _log_of(self, name: str) -> _Log:
        return self._logs.setdefault(name, _Log())

    def _append(self, name: str, fields: dict[str, bytes]) -> str:
        entry_id = self._log_of(name).append(fields)
        self._appended.set()
        self._appended = asyncio.Event()
        return entry_id

    async def _wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), max(timeout_s, 0.0))

    # publishing

    async def publish(self, stream: Stream, message: Message) -> str:
        """Append one message; return its entry id."""
        return (await self.publish_many(stream, [message]))[0]

    async def publish_many(self, stream: Stream, messages: Sequence[Message]) -> list[str]:
        """Append messages in order; return their entry ids."""
        ids: list[str] = []
        last = self._last.setdefault(stream.value, {})
        for message in messages:
            data = encode(message)
            ids.append(self._append(stream.value, {FIELD: data}))
            last[message.key] = data
        metrics.PUBLISHED.labels(stream=stream.value).inc(len(ids))
        if ids and self._trim_schedule.due(stream):
            await self.trim(stream)
        return ids

    async def publish_raw(self, stream: Stream, data: bytes) -> str:
        """Append arbitrary bytes as an entry (for tests and tools); return the entry id."""
        return self._append(stream.value, {FIELD: data})

    # consuming

    async def consume(
        self, stream: Stream, *, group: str, consumer: str, count: int, block_ms: int
    ) -> AsyncIterator[Batch]:
        """Yield batches: own pending entries first, then reclaimed idle ones and new ones."""
        log = self._log_of(stream.value)
        state = log.groups.setdefault(group, _Group())
        state.consumers.add(consumer)
        cursor: StreamId = (0, 0)
        while page := sorted(
            i for i, p in state.pending.items() if p.consumer == consumer and i > cursor
        )[:count]:
            cursor = page[-1]
            if (batch := self._deliver(stream, group, consumer, page)).entries:
                yield batch
        next_claim = next_metrics = 0.0
        while True:
            now = time.monotonic()
            if now >= next_claim:
                next_claim = now + self._claim_idle_ms / 2_000
                while page := self._idle_page(state, count):
                    metrics.RECLAIMED.labels(stream=stream.value, group=group).inc(len(page))
                    if (batch := self._deliver(stream, group, consumer, page)).entries:
                        yield batch
            if now >= next_metrics:
                next_metrics = now + METRICS_INTERVAL_S
                export_group_metrics(stream, await self.group_info(stream))
            # Let publishers and other consumers run even while a backlog keeps this loop busy.
            await asyncio.sleep(0)
            if page := [entry_id for entry_id, _ in log.after(state.last_delivered, count)]:
                state.last_delivered = page[-1]
                if (batch := self._deliver(stream, group, consumer, page)).entries:
                    yield batch
            else:
                await self._wait(min(block_ms / 1_000, next_claim - time.monotonic()))

    def _idle_page(self, state: _Group, count: int) -> list[StreamId]:
        idle_since = time.monotonic() - self._claim_idle_ms / 1_000
        return sorted(i for i, p in state.pending.items() if p.delivered_at <= idle_since)[:count]

    def _deliver(self, stream: Stream, group: str, consumer: str, ids: Sequence[StreamId]) -> Batch:
        """Record the delivery of `ids` to `consumer`, then decode or dead-letter them."""
        log = self._log_of(stream.value)
        state = log.groups[group]
        now = time.monotonic()
        raws: list[RawEntry] = []
        for entry_id in ids:
            pending = state.pending.get(entry_id)
            if pending is None:
                pending = state.pending[entry_id] = _Pending(consumer, 0, now)
            pending.consumer, pending.delivered_at = consumer, now
            pending.deliveries += 1
            fields = log.find(entry_id)
            data = None if fields is None else fields.get(FIELD)
            raws.append(RawEntry(format_id(entry_id), data, pending.deliveries, fields is None))
        batch, letters, dropped = triage_batch(stream, group, consumer, raws, self._max_deliveries)
        for letter in letters:
            self._add_dead_letter(stream, letter)
        for dropped_id in dropped:
            state.pending.pop(parse_id(dropped_id), None)
        return batch

    def _add_dead_letter(self, stream: Stream, letter: dict[str, bytes]) -> None:
        self._append(stream.dead_letter, letter)
        dead = self._log_of(stream.dead_letter)
        dead.cut(max(0, len(dead.ids) - self._retain_entries))

    async def ack(self, batch: Batch) -> None:
        """Acknowledge every entry of the batch."""
        state = self._log_of(batch.stream.value).groups.get(batch.group)
        if state is None:
            return
        for entry in batch.entries:
            state.pending.pop(parse_id(entry.id), None)

    async def dead_letter(
        self, batch: Batch, entry: Entry, reason: str, *, detail: str = ""
    ) -> None:
        """Move one entry to the dead-letter stream and ack it."""
        letter = record_entry_dead_letter(batch, entry, reason, detail)
        self._add_dead_letter(batch.stream, letter)
        await self.ack(Batch(batch.stream, batch.group, [entry], batch.consumer))

    async def read_dead_letters(
        self, stream: Stream, *, after_id: str = "0-0", count: int = 100
    ) -> list[DeadLetter]:
        """Return up to `count` dead letters of `stream` after `after_id`, oldest first."""
        rows = self._log_of(stream.dead_letter).after(parse_id(after_id), count)
        return [parse_dead_letter(format_id(i), fields) for i, fields in rows]

    # reading without a group

    async def last_message(self, stream: Stream, key: str) -> Message | None:
        """Return the last message published on `stream` with this key, if any."""
        data = self._last.get(stream.value, {}).get(key)
        return None if data is None else decode(stream, data)

    async def read_after(
        self, stream: Stream, after_id: str, count: int
    ) -> list[tuple[str, Message]]:
        """Return up to `count` entries with ids strictly after `after_id`."""
        out: list[tuple[str, Message]] = []
        for entry_id, fields in self._log_of(stream.value).after(parse_id(after_id), count):
            message = decode_or_skip(stream, format_id(entry_id), fields.get(FIELD))
            if message is not None:
                out.append((format_id(entry_id), message))
        return out

    async def last_id(self, stream: Stream) -> str:
        """Return the id of the stream's last entry (`"0-0"` if it has none)."""
        return format_id(self._log_of(stream.value).last_id)

    async def tail(
        self,
        streams: Sequence[Stream],
        *,
        block_ms: int,
        count: int,
        after: Mapping[Stream, str] | None = None,
    ) -> AsyncIterator[list[tuple[Stream, str, Message]]]:
        """Yield every entry added to the streams after the call (or after the ids in `after`);
        no group, no ack."""
        start = after or {}
        cursors = {
            stream: parse_id(start[stream])
            if stream in start
            else self._log_of(stream.value).last_id
            for stream in streams
        }
        while True:
            await asyncio.sleep(0)  # as in consume: a long backlog must not starve the loop
            out: list[tuple[Stream, str, Message]] = []
            for stream, cursor in cursors.items():
                for entry_id, fields in self._log_of(stream.value).after(cursor, count):
                    cursors[stream] = entry_id
                    message = decode_or_skip(stream, format_id(entry_id), fields.get(FIELD))
                    if message is not None:
                        out.append((stream, format_id(entry_id), message))
            if out:
                yield out
            else:
                await self._wait(block_ms / 1_000)

    # housekeeping

    async def group_info(self, stream: Stream) -> list[GroupInfo]:
        """Return each consumer group of the stream (empty if the stream does not exist)."""
        log = self._logs.get(stream.value)
        if log is None:
            return []
        return [
            {
                "name": name,
                "consumers": len(state.consumers),
                "pending": len(state.pending),
                "last-delivered-id": format_id(state.last_delivered),
                "lag": len(log.ids) - bisect.bisect_right(log.ids, state.last_delivered),
            }
            for name, state in log.groups.items()
        ]

    async def trim(self, stream: Stream) -> int:
        """Drop entries every group has read and acked, keeping the newest `retain_entries`."""
        log = self._logs.get(stream.value)
        if log is None:
            return 0
        cut = max(0, len(log.ids) - retained(stream, self._retain_entries, self._retain_ticks))
        for state in log.groups.values():
            # The oldest entry this group still needs: pending, or not yet delivered.
            ms, seq = state.last_delivered
            needed = min([(ms, seq + 1), *state.pending])
            cut = min(cut, bisect.bisect_left(log.ids, needed))
        log.cut(cut)
        return cut

    async def close(self) -> None:
        """Nothing to release; present for the Bus protocol."""
