"""What both buses share: raw stream entries in; decoded entries, batches and dead letters out."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import msgspec

from shared import metrics
from shared.messages import DecodeError, Message, Stream, decode, encode

_log = logging.getLogger(__name__)

FIELD = "m"  # the one field of every entry: the msgpack-encoded message
METRICS_INTERVAL_S = 1.0


def retained(stream: Stream, retain_entries: int, retain_ticks: int) -> int:
    """Return how many read entries a trim keeps on `stream`. The ticks stream has its own
    figure: an entry there holds a whole batch of candles, and only the executor reads it."""
    return retain_ticks if stream is Stream.TICKS else retain_entries


# Entries are msgspec structs, not dataclasses: one is built for each entry read, and a frozen
# dataclass takes five times as long to build.
class Entry(msgspec.Struct, frozen=True):
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
    consumer: str = ""

    @property
    def messages(self) -> list[Message]:
        return [entry.message for entry in self.entries]


GroupInfo = TypedDict(
    "GroupInfo",
    {"name": str, "consumers": int, "pending": int, "last-delivered-id": str, "lag": int | None},
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter stream: where the poison entry came from and why it left."""

    id: str
    stream: str
    entry_id: str
    group: str
    consumer: str
    reason: str
    detail: str
    raw: bytes


StreamId = tuple[int, int]


def parse_id(text: str) -> StreamId:
    """Parse `"<ms>-<seq>"` (or `"<ms>"`) into a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(stream_id: StreamId) -> str:
    """Format a pair as `"<ms>-<seq>"`."""
    return f"{stream_id[0]}-{stream_id[1]}"


def to_text(value: bytes | str) -> str:
    """Return `value` as text, decoding bytes as Redis replies spell them."""
    return value.decode() if isinstance(value, bytes) else value


class RawEntry(msgspec.Struct, frozen=True):
    """An entry as read, before decoding: `data` is None when its field is missing."""

    id: str
    data: bytes | None
    deliveries: int
    deleted: bool = False  # trimmed or deleted from the stream while pending


@dataclass(frozen=True, slots=True)
class _Rejected:
    raw: RawEntry
    reason: str
    detail: str


def _triage(
    stream: Stream, raws: Sequence[RawEntry], max_deliveries: int
) -> tuple[list[Entry], list[_Rejected], list[str]]:
    """Split raw entries into deliverable entries, poison entries, and ids of vanished entries."""
    entries: list[Entry] = []
    rejected: list[_Rejected] = []
    gone: list[str] = []
    for raw in raws:
        if raw.deleted:
            gone.append(raw.id)
        elif raw.deliveries > max_deliveries:
            detail = f"delivered {raw.deliveries} times, limit {max_deliveries}"
            rejected.append(_Rejected(raw, "max_deliveries", detail))
        elif raw.data is None:
            rejected.append(_Rejected(raw, "undecodable", f"no field {FIELD!r}"))
        else:
            try:
                entries.append(Entry(raw.id, decode(stream, raw.data), raw.deliveries))
            except DecodeError as exc:
                rejected.append(_Rejected(raw, "undecodable", str(exc)))
    return entries, rejected, gone


def _record_dead_letter(
    stream: Stream, entry_id: str, group: str, consumer: str, reason: str, detail: str, raw: bytes
) -> dict[str, bytes]:
    """Count and log a dead letter; return the fields of its dead-letter stream entry."""
    metrics.DEAD_LETTERS.labels(stream=stream.value, reason=reason).inc()
    _log.warning(
        "dead-lettered %s entry %s of group %s (consumer %s): %s: %s",
        stream.value,
        entry_id,
        group,
        consumer,
        reason,
        detail,
    )
    text = {"stream": stream.value, "id": entry_id, "group": group, "consumer": consumer}
    text |= {"reason": reason, "detail": detail}
    return {name: value.encode() for name, value in text.items()} | {"raw": raw}


def triage_batch(
    stream: Stream, group: str, consumer: str, raws: Sequence[RawEntry], max_deliveries: int
) -> tuple[Batch, list[dict[str, bytes]], list[str]]:
    """Triage raw entries: the batch to deliver, dead letters to write, and ids to drop."""
    entries, rejected, gone = _triage(stream, raws, max_deliveries)
    letters = [
        _record_dead_letter(
            stream, r.raw.id, group, consumer, r.reason, r.detail, r.raw.data or b""
        )
        for r in rejected
    ]
    return Batch(stream, group, entries, consumer), letters, [r.raw.id for r in rejected] + gone


def record_entry_dead_letter(
    batch: Batch, entry: Entry, reason: str, detail: str
) -> dict[str, bytes]:
    """Count and log a consumer's dead letter for `entry`; return its dead-letter fields."""
    return _record_dead_letter(
        batch.stream,
        entry.id,
        batch.group,
        batch.consumer,
        reason,
        detail,
        encode(entry.message),
    )


def parse_dead_letter(
    entry_id: str, fields: Mapping[str, bytes] | Mapping[bytes, bytes]
) -> DeadLetter:
    """Build a DeadLetter from the fields of a dead-letter stream entry."""
    values = {to_text(name): value for name, value in fields.items()}
    text = {name: value.decode(errors="replace") for name, value in values.items() if name != "raw"}
    return DeadLetter(
        id=entry_id,
        stream=text.get("stream", ""),
        entry_id=text.get("id", ""),
        group=text.get("group", ""),
        consumer=text.get("consumer", ""),
        reason=text.get("reason", ""),
        detail=text.get("detail", ""),
        raw=values.get("raw", b""),
    )


def decode_or_skip(stream: Stream, entry_id: str, data: bytes | None) -> Message | None:
    """Decode an entry read outside any group; a bad one is logged and skipped (no one to ack)."""
    try:
        if data is not None:
            return decode(stream, data)
        reason = f"no field {FIELD!r}"
    except DecodeError as exc:
        reason = str(exc)
    _log.warning("skipped %s entry %s: %s", stream.value, entry_id, reason)
    return None


def export_group_metrics(stream: Stream, groups: Sequence[GroupInfo]) -> None:
    """Set the pending and lag gauges of each group of the stream."""
    for info in groups:
        labels = {"stream": stream.value, "group": info["name"]}
        metrics.CONSUMER_PENDING.labels(**labels).set(info["pending"])
        if info["lag"] is not None:
            metrics.CONSUMER_LAG.labels(**labels).set(info["lag"])


class TrimSchedule:
    """Says when a stream is due for its periodic trim (never on the first publish)."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._due: dict[str, float] = {}

    def due(self, stream: Stream) -> bool:
        now = time.monotonic()
        due = self._due.setdefault(stream.value, now + self._interval_s)
        if now < due:
            return False
        self._due[stream.value] = now + self._interval_s
        return True
