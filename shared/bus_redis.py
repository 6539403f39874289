"""RedisBus: messages in to Redis Streams; per-group batches of decoded entries out."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

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
    to_text,
    triage_batch,
)
from shared.messages import Message, Stream, decode, encode
from shared.settings import CommonSettings

_log = logging.getLogger(__name__)

T = TypeVar("T")

_FIELD_BYTES = FIELD.encode()  # the entry field, as Redis replies spell it
_PUBLISH_CHUNK = 1_000  # messages per script call (one round trip, one command)
_BUS_DEAD_LETTER_REASONS = ("undecodable", "max_deliveries")  # the bus's own (bus_types)

# Append a chunk of entries and record the last message per key, atomically, in one command.
# ARGV[1] packs the chunk's (key, payload) pairs in publication order, each string after its
# length as a 4-byte big-endian integer, so HSET keeps each key's last payload. One argument
# for the whole chunk: the client's cost of a command grows with its arguments (two per
# message would be most of what publishing costs it), while cutting one string in Lua is cheap.
_PUBLISH_LUA = """
local packed = ARGV[1]
local ids, last = {}, {}
local at, size = 1, #packed
while at <= size do
  local length, start = struct.unpack('>I4', packed, at)
  local key = string.sub(packed, start, start + length - 1)
  length, start = struct.unpack('>I4', packed, start + length)
  local payload = string.sub(packed, start, start + length - 1)
  at = start + length
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'm', payload)
  last[#last + 1] = key
  last[#last + 1] = payload
end
redis.call('HSET', KEYS[2], unpack(last))
return ids
"""
_LENGTH = struct.Struct(">I")  # a packed string's length, as the publish script reads it
_MAX_BLOCK_MS = 5_000  # a longer wait is split into several reads, well under the socket timeout
_SOCKET_TIMEOUT_S = 15.0
_TRIM_SCAN_LIMIT = 10_000  # what one approximate XTRIM may remove (100 nodes of 100 entries)
_TRIM_MAX_ROUNDS = 10
_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # 5 tries over about 7.5 s, each delay jittered +-50 %

# Cuts the oldest entries that are both below the groups' safe point (ARGV[1], exclusive) and
# beyond the newest ARGV[2] entries, at most ARGV[3] of them. Server-side, so the entries it
# scans never cross the network. Returns {entries scanned, entries trimmed}.
_TRIM_LUA = """
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if excess <= 0 then return {0, 0} end
local limit = math.min(excess, tonumber(ARGV[3]))
local cut = redis.call('XRANGE', KEYS[1], '-', ARGV[1], 'COUNT', limit)
if #cut == 0 then return {0, 0} end
local last = cut[#cut][1]
local dash = string.find(last, '-', 1, true)
local seq = tonumber(string.sub(last, dash + 1)) + 1
local minid = string.sub(last, 1, dash - 1) .. '-' .. string.format('%d', seq)
return {#cut, redis.call('XTRIM', KEYS[1], 'MINID', '~', minid)}
"""


class RedisBus:
    """The Bus on Redis Streams: consumer groups, XAUTOCLAIM, dead-letter streams, safe trims."""

    def __init__(
        self,
        url: str,
        *,
        max_deliveries: int = 5,
        claim_idle_ms: int = 30_000,
        retain_entries: int = 100_000,
        retain_ticks: int = 1_000,
        trim_interval_s: float = 5.0,
        retry_delays_s: Sequence[float] = _RETRY_DELAYS_S,
    ) -> None:
        # Retries live in one place (`_call`, bounded, with jitter), not also inside the client.
        self._redis = Redis.from_url(
            url, socket_timeout=_SOCKET_TIMEOUT_S, retry=Retry(NoBackoff(), 0)
        )
        self._trim_script = self._redis.register_script(_TRIM_LUA)
        self._publish_script = self._redis.register_script(_PUBLISH_LUA)
        # Entries are read on the hot path: take the parser's reply as it is rather than have
        # the client rebuild it as per-entry dicts, and pick the one field out ourselves.
        self._redis.set_response_callback("XREADGROUP", _as_is)
        self._max_deliveries = max_deliveries
        self._claim_idle_ms = claim_idle_ms
        self._retain_entries = retain_entries
        self._retain_ticks = retain_ticks
        self._trim_schedule = TrimSchedule(trim_interval_s)
        self._retry_delays_s = tuple(retry_delays_s)
        self._published: set[Stream] = set()

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> RedisBus:
        """Build the bus from the common settings."""
        return cls(
            settings.redis_url,
            max_deliveries=settings.max_deliveries,
            claim_idle_ms=settings.claim_idle_ms,
            retain_entries=settings.stream_retain_entries,
            retain_ticks=settings.stream_retain_ticks,
        )

    @property
    def client(self) -> Redis:
        """The underlying client (for health checks and tools)."""
        return self._redis

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation, retrying transient failures with backoff, then raise."""
        for attempt, delay_s in enumerate(self._retry_delays_s, start=1):
            try:
                return await operation()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                wait_s = delay_s * random.uniform(0.5, 1.5)
                _log.warning("redis unavailable (%s); try %d again in %.2f s", exc, attempt, wait_s)
                await asyncio.sleep(wait_s)
        return await operation()

    # publishing

    async def publish(self, stream: Stream, message: Message) -> str:
        """Append one message; return its entry id."""
        return (await self.publish_many(stream, [message]))[0]

    async def publish_many(self, stream: Stream, messages: Sequence[Message]) -> list[str]:
        """Append messages, one atomic script call per chunk; return their entry ids."""
        self._published.add(stream)
        ids: list[str] = []
        for start in range(0, len(messages), _PUBLISH_CHUNK):
            ids += await self._publish_chunk(stream, messages[start : start + _PUBLISH_CHUNK])
        metrics.PUBLISHED.labels(stream=stream.value).inc(len(ids))
        if ids and self._trim_schedule.due(stream):
            await self.trim(stream)
        return ids

    async def _publish_chunk(self, stream: Stream, messages: Sequence[Message]) -> list[str]:
        # The entries and the per-key "last message" land together: a resuming collector
        # never sees one without the other.
        parts: list[bytes] = []
        length = _LENGTH.pack
        for message in messages:
            key, payload = message.key.encode(), encode(message)
            parts += (length(len(key)), key, length(len(payload)), payload)
        args = [b"".join(parts)]
        keys = [stream.value, f"{stream.value}:last"]
        replies: Any = await self._call(lambda: self._publish_script(keys=keys, args=args))
        return [to_text(entry_id) for entry_id in replies]

    async def publish_raw(self, stream: Stream, data: bytes) -> str:
        """Append arbitrary bytes as an entry (for tests and tools); return the entry id."""
        return to_text(await self._call(lambda: self._redis.xadd(stream.value, {FIELD: data})))

    # consuming

    async def consume(
        self, stream: Stream, *, group: str, consumer: str, count: int, block_ms: int
    ) -> AsyncIterator[Batch]:
        """Yield batches: own pending entries first, then reclaimed idle ones and new ones."""
        await self._create_group(stream, group)
        for reason in _BUS_DEAD_LETTER_REASONS:
            metrics.DEAD_LETTERS.labels(stream=stream.value, reason=reason)
        cursor: str | None = "0"
        while cursor is not None:
            batch, cursor = await self._reread_pending(stream, group, consumer, count, cursor)
            if batch.entries:
                yield batch
        next_claim = next_metrics = 0.0
        while True:
            now = time.monotonic()
            if now >= next_claim:
                next_claim = now + self._claim_idle_ms / 2_000
                claim_cursor: str | None = "0-0"
                while claim_cursor is not None:
                    batch, claim_cursor = await self._claim_idle(
                        stream, group, consumer, count, claim_cursor
                    )
                    if batch.entries:
                        yield batch
            if now >= next_metrics:
                next_metrics = now + METRICS_INTERVAL_S
                export_group_metrics(stream, await self.group_info(stream))
            until_claim_ms = int((next_claim - time.monotonic()) * 1_000)
            wait_ms = max(1, min(block_ms, _MAX_BLOCK_MS, until_claim_ms))
            batch = await self._read_new(stream, group, consumer, count, wait_ms)
            _raise_if_cancelled()
            if batch.entries:
                yield batch

    async def _create_group(self, stream: Stream, group: str) -> None:
        try:
            # Start at "0": a group created after publishing still reads every entry.
            await self._call(
                lambda: self._redis.xgroup_create(stream.value, group, id="0", mkstream=True)
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _reread_pending(
        self, stream: Stream, group: str, consumer: str, count: int, cursor: str
    ) -> tuple[Batch, str | None]:
        """Read one page of this consumer's own pending entries after `cursor`."""
        start = "-" if cursor == "0" else f"({cursor}"

        async def read() -> list[Any]:
            # Atomic, so the delivery counts are those of exactly the entries read.
            pipe = self._redis.pipeline(transaction=True)
            pipe.xreadgroup(group, consumer, {stream.value: cursor}, count=count)
            pipe.xpending_range(stream.value, group, start, "+", count, consumername=consumer)
            return await pipe.execute()

        reply, pending = await self._call(read)
        rows = _stream_rows(reply)
        if not rows:
            return Batch(stream, group, [], consumer), None
        deliveries = {to_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        raws = [_raw_entry(entry_id, fields, deliveries) for entry_id, fields in rows]
        return await self._admit(stream, group, consumer, raws), to_text(rows[-1][0])

    async def _claim_idle(
        self, stream: Stream, group: str, consumer: str, count: int, cursor: str
    ) -> tuple[Batch, str | None]:
        """Take over one page of entries idle too long in other (dead) consumers."""
        reply = await self._call(
            lambda: self._redis.xautoclaim(
                stream.value, group, consumer, self._claim_idle_ms, cursor, count=count
            )
        )
        next_cursor, rows = to_text(reply[0]), reply[1]
        deleted = [to_text(entry_id) for entry_id in (reply[2] if len(reply) > 2 else [])]
        deliveries = await self._deliveries(stream, group, [to_text(row[0]) for row in rows])
        if rows:
            metrics.RECLAIMED.labels(stream=stream.value, group=group).inc(len(rows))
            _log.info("reclaimed %d idle %s entries for %s", len(rows), stream.value, consumer)
        raws = [_raw_entry(entry_id, fields, deliveries) for entry_id, fields in rows]
        raws += [RawEntry(entry_id, None, 0, deleted=True) for entry_id in deleted]
        batch = await self._admit(stream, group, consumer, raws)
        return batch, None if next_cursor == "0-0" else next_cursor

    async def _deliveries(self, stream: Stream, group: str, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            return {}

        async def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xpending_range(stream.value, group, entry_id, entry_id, 1)
            return await pipe.execute()

        replies = await self._call(read)
        return {to_text(p["message_id"]): int(p["times_delivered"]) for r in replies for p in r}

    async def _read_new(
        self, stream: Stream, group: str, consumer: str, count: int, block_ms: int
    ) -> Batch:
        reply: Any = await self._call(
            lambda: self._redis.xreadgroup(
                group, consumer, {stream.value: ">"}, count=count, block=block_ms
            )
        )
        raws = [
            RawEntry(entry_id.decode(), _message_field(fields), 1)
            for entry_id, fields in _stream_rows(reply)
        ]
        return await self._admit(stream, group, consumer, raws)

    async def _admit(
        self, stream: Stream, group: str, consumer: str, raws: Sequence[RawEntry]
    ) -> Batch:
        """Decode raw entries; dead-letter the poison ones and drop vanished ones, acking both."""
        batch, letters, dropped = triage_batch(stream, group, consumer, raws, self._max_deliveries)
        if dropped:
            await self._move_to_dead_letter(stream, group, letters, dropped)
        return batch

    async def _move_to_dead_letter(
        self, stream: Stream, group: str, letters: Sequence[dict[str, bytes]], ack_ids: list[str]
    ) -> None:
        async def send() -> list[Any]:
            pipe = self._redis.pipeline(transaction=True)
            for letter in letters:
                fields: dict[FieldT, EncodableT] = dict(letter.items())
                pipe.xadd(stream.dead_letter, fields, maxlen=self._retain_entries, approximate=True)
            pipe.xack(stream.value, group, *ack_ids)
            return await pipe.execute()

        await self._call(send)

    async def ack(self, batch: Batch) -> None:
        """Acknowledge every entry of the batch with one XACK."""
        ids = [entry.id for entry in batch.entries]
        if ids:
            await self._call(lambda: self._redis.xack(batch.stream.value, batch.group, *ids))

    async def dead_letter(
        self, batch: Batch, entry: Entry, reason: str, *, detail: str = ""
    ) -> None:
        """Move one entry to the dead-letter stream and ack it, in one transaction."""
        letter = record_entry_dead_letter(batch, entry, reason, detail)
        await self._move_to_dead_letter(batch.stream, batch.group, [letter], [entry.id])

    async def read_dead_letters(
        self, stream: Stream, *, after_id: str = "0-0", count: int = 100
    ) -> list[DeadLetter]:
        """Return up to `count` dead letters of `stream` after `after_id`, oldest first."""
        rows: Any = await self._call(
            lambda: self._redis.xrange(stream.dead_letter, f"({after_id}", "+", count=count)
        )
        return [parse_dead_letter(to_text(entry_id), fields) for entry_id, fields in rows]

    # reading without a group

    async def last_message(self, stream: Stream, key: str) -> Message | None:
        """Return the last message published on `stream` with this key, if any."""
        data: Any = await self._call(lambda: self._redis.hget(f"{stream.value}:last", key))
        return None if data is None else decode(stream, data)

    async def read_after(
        self, stream: Stream, after_id: str, count: int
    ) -> list[tuple[str, Message]]:
        """Return up to `count` entries with ids strictly after `after_id`."""
        rows: Any = await self._call(
            lambda: self._redis.xrange(stream.value, f"({after_id}", "+", count=count)
        )
        out: list[tuple[str, Message]] = []
        for entry_id, fields in rows:
            message = decode_or_skip(stream, to_text(entry_id), fields.get(_FIELD_BYTES))
            if message is not None:
                out.append((to_text(entry_id), message))
        return out

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
        # Resolve "$" once per stream, then follow the ids read: nothing added in between
        # two reads is missed, on any stream.
        start = after or {}
        cursors = {
            stream: start[stream] if stream in start else await self.last_id(stream)
            for stream in streams
        }
        wait_ms = max(1, min(block_ms, _MAX_BLOCK_MS))
        while True:
            reply: Any = await self._call(
                lambda: self._redis.xread(
                    {s.value: c for s, c in cursors.items()}, count=count, block=wait_ms
                )
            )
            _raise_if_cancelled()
            out: list[tuple[Stream, str, Message]] = []
            for name, rows in reply or []:
                stream = Stream(to_text(name))
                for entry_id, fields in rows:
                    cursors[stream] = to_text(entry_id)
                    message = decode_or_skip(stream, cursors[stream], fields.get(_FIELD_BYTES))
                    if message is not None:
                        out.append((stream, cursors[stream], message))
            if out:
                yield out

    async def last_id(self, stream: Stream) -> str:
        """Return the id of the stream's last entry (`"0-0"` if it has none)."""
        rows: Any = await self._call(lambda: self._redis.xrevrange(stream.value, "+", "-", count=1))
        return to_text(rows[0][0]) if rows else "0-0"

    # housekeeping

    async def group_info(self, stream: Stream) -> list[GroupInfo]:
        """Return each consumer group of the stream (empty if the stream does not exist)."""
        try:
            groups = await self._call(lambda: self._redis.xinfo_groups(stream.value))
        except ResponseError as exc:
            if "no such key" in str(exc):
                return []
            raise
        return [
            {
                "name": to_text(g["name"]),
                "consumers": int(g["consumers"]),
                "pending": int(g["pending"]),
                "last-delivered-id": to_text(g["last-delivered-id"]),
                "lag": None if g.get("lag") is None else int(g["lag"]),
            }
            for g in groups
        ]

    async def export_published_group_metrics(self) -> None:
        """Set the lag and pending gauges of every group that reads a stream published here.

        The producer's view of its consumers keeps moving when a consumer is stuck, or dead,
        and has stopped reporting its own: that is when its lag grows.
        """
        for stream in sorted(self._published):
            export_group_metrics(stream, await self.group_info(stream))

    async def trim(self, stream: Stream) -> int:
        """Trim entries every group has read and acked, keeping the newest `retain_entries`."""
        groups = await self.group_info(stream)
        keep = retained(stream, self._retain_entries, self._retain_ticks)
        if not groups:
            trimmed = await self._call(
                lambda: self._redis.xtrim(stream.value, maxlen=keep, approximate=True)
            )
            return int(trimmed)
        safe = await self._safe_trim_point(stream, groups)
        args: list[str | int] = [f"({format_id(safe)}", keep, _TRIM_SCAN_LIMIT]
        total = 0
        for _ in range(_TRIM_MAX_ROUNDS):
            scanned, trimmed = await self._call(
                lambda: self._trim_script(keys=[stream.value], args=args)
            )
            total += int(trimmed)
            if int(scanned) < _TRIM_SCAN_LIMIT or int(trimmed) == 0:
                break
        if total:
            _log.info("trimmed %d entries from %s", total, stream.value)
        return total

    async def _safe_trim_point(self, stream: Stream, groups: Sequence[GroupInfo]) -> StreamId:
        """Return the oldest id some group still needs: pending, or not yet delivered."""

        async def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for info in groups:
                pipe.xpending(stream.value, info["name"])
            return await pipe.execute()

        summaries = await self._call(read)
        needed: list[StreamId] = []
        for info, summary in zip(groups, summaries, strict=True):
            ms, seq = parse_id(info["last-delivered-id"])
            needed.append((ms, seq + 1))
            if summary["pending"]:
                needed.append(parse_id(to_text(summary["min"])))
        return min(needed)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def _raw_entry(entry_id: bytes | str, fields: Any, deliveries: Mapping[str, int]) -> RawEntry:
    """Build a raw entry from a pending read: empty fields mean the entry was deleted."""
    text_id = to_text(entry_id)
    return RawEntry(text_id, _message_field(fields), deliveries.get(text_id, 1), deleted=not fields)


def _raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop and is still running.

    redis-py can lose a cancellation that lands as a blocking read returns: the consumer would
    then read on forever while whoever cancelled it waits for it to end.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _as_is(response: Any, **options: Any) -> Any:
    return response


def _stream_rows(reply: Any) -> list[Any]:
    """Return the [id, fields] rows of a one-stream XREADGROUP reply (RESP3 map or RESP2 list)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        rows: list[Any] = next(iter(reply.values()))
        return rows
    return list(reply[0][1])


def _message_field(fields: Any) -> bytes | None:
    """Return the message field of an entry's fields (a flat list, a map, or nothing)."""
    if not fields:
        return None
    if isinstance(fields, dict):
        found: bytes | None = fields.get(_FIELD_BYTES)
        return found
    if fields[0] == _FIELD_BYTES:
        return bytes(fields[1])
    pairs = dict(zip(fields[::2], fields[1::2], strict=False))
    return pairs.get(_FIELD_BYTES)
