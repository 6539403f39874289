"""WebSocket fan-out without sockets: (stream, entry id, message) in -> batched frames on outboxes.

Channels are `candles:<symbol>` and `indicators:<symbol>` (`*` for every symbol), and `signals`,
`orders`, `fills`, `positions`. Each client owns a bounded outbox (`subscriber.py`) that the
socket side drains; the hub only ever appends, so publishing never waits for a client. An event
is encoded once for every client that gets it; the outboxes are flushed together every few
milliseconds (`flush`), so events close in time share one frame. A client whose outbox is full
is unsubscribed, its outbox emptied, and closed: the socket side sends `{"type": "dropped"}`
and closes. Memory per client is therefore bounded by its outbox.

The hub remembers the last entry id it published on each stream. Acks and heartbeats tell each
client those ids for the streams it receives: everything up to them is already in its outbox,
so a client that reconnects with them (`since`) misses nothing and gets nothing twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import msgspec
from pydantic import ValidationError

from services.gateway.models import ChannelRequest, is_symbol
from services.gateway.resume import ResumeError, resume_plan, streams_of
from services.gateway.subscriber import Closing, Frame, Subscriber
from shared import metrics
from shared.bus_types import parse_id
from shared.messages import CandleClosed, IndicatorsComputed, Message, Stream, to_builtins

PER_SYMBOL_STREAMS: Final = frozenset({Stream.CANDLES, Stream.INDICATORS})
ALL_SYMBOLS: Final = "*"

# RFC 6455 close codes the socket side uses.
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_GOING_AWAY: Final = 1001
CLOSE_INTERNAL_ERROR: Final = 1011

SLOW_CONSUMER: Final = "slow consumer"

_json = msgspec.json.Encoder()


class ChannelError(ValueError):
    """Raised for a channel name the hub does not serve, with the reason."""


def parse_channel(text: str) -> str:
    """Return `text` if it names a channel the hub serves, else raise ChannelError."""
    name, _, symbol = text.partition(":")
    try:
        stream = Stream(name)
    except ValueError:
        raise ChannelError(
            f"unknown channel {text!r}: expected candles:<BASE/QUOTE|*>, "
            "indicators:<BASE/QUOTE|*>, signals, orders, fills or positions"
        ) from None
    if stream is Stream.TICKS:
        raise ChannelError(f"unknown channel {text!r}: ticks are the executor's input only")
    if stream in PER_SYMBOL_STREAMS:
        if symbol != ALL_SYMBOLS and not is_symbol(symbol):
            raise ChannelError(f"channel {text!r} needs a symbol: {name}:ETH/BTC or {name}:*")
    elif symbol or text != name:
        raise ChannelError(f"channel {name!r} takes no symbol, got {text!r}")
    return text


def channels_for(stream: Stream, message: Message) -> tuple[str, ...]:
    """Return the channels a message is delivered on; the first is the one events name."""
    if isinstance(message, CandleClosed | IndicatorsComputed):
        return f"{stream.value}:{message.symbol}", f"{stream.value}:{ALL_SYMBOLS}"
    return (stream.value,)


def event_text(channel: str, stream: Stream, entry_id: str, message: Message) -> str:
    """Return the JSON object of one stream entry inside an `events` frame (NaN becomes null)."""
    return _encode(
        {"channel": channel, "stream": stream.value, "id": entry_id, "data": to_builtins(message)}
    )


def _encode(payload: Mapping[str, object]) -> str:
    return _json.encode(payload).decode()


class Hub:
    """Route stream entries to the clients subscribed to their channels."""

    def __init__(self, *, queue_size: int, max_channels: int, batch_max: int = 200) -> None:
        self._queue_size = queue_size
        self._max_channels = max_channels
        self._batch_max = batch_max
        self._subscribers: set[Subscriber] = set()
        self._routes: defaultdict[str, set[Subscriber]] = defaultdict(set)
        self._cursors: dict[Stream, str] = {}
        self._counts: Counter[Stream] = Counter()
        self._dirty: set[Subscriber] = set()
        self._pending = asyncio.Event()

    def __len__(self) -> int:
        return len(self._subscribers)

    def seed(self, cursors: Mapping[Stream, str]) -> None:
        """Record where the relay starts on each stream (before any client subscribes)."""
        self._cursors.update(cursors)

    def cursor(self, stream: Stream) -> str | None:
        """Return the id of the last entry published on `stream` (or where the relay started)."""
        return self._cursors.get(stream)

    def connect(self) -> Subscriber:
        """Register a new client with an empty, bounded outbox and no channels."""
        subscriber = Subscriber(limit=self._queue_size, batch_max=self._batch_max)
        self._subscribers.add(subscriber)
        metrics.WEBSOCKET_CLIENTS.inc()
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        """Forget a client (idempotent)."""
        if subscriber not in self._subscribers:
            return
        self._unroute(subscriber)
        self._subscribers.discard(subscriber)
        self._dirty.discard(subscriber)
        metrics.WEBSOCKET_CLIENTS.dec()

    def handle_request(self, subscriber: Subscriber, text: str | bytes) -> dict[Stream, str]:
        """Apply a client's JSON request; queue the ack, or an error with the reason.

        Returns the streams to resume, each with the client's last id (empty if none): the
        caller reads their backlog (`replay`) and then calls `finish_resume` for each.
        """
        if subscriber.closed:
            return {}
        plan: dict[Stream, str] = {}
        try:
            request = ChannelRequest.model_validate_json(text)
            channels = {parse_channel(channel) for channel in request.channels}
            if request.op == "subscribe":
                busy = streams_of(subscriber.channels) | set(subscriber.holding)
                plan = resume_plan(request.since or {}, channels, busy)
                self.subscribe(subscriber, channels)
                for stream in plan:
                    subscriber.holding[stream] = []
            elif request.since:
                raise ResumeError("since goes with subscribe, not unsubscribe")
            else:
                self.unsubscribe(subscriber, channels)
        except ValidationError as exc:
            self._reply(subscriber, {"type": "error", "reason": _reasons(exc)})
        except (ChannelError, ResumeError) as exc:
            self._reply(subscriber, {"type": "error", "reason": str(exc)})
        else:
            # The ack lists every channel the client now holds, after either operation, and
            # the last id of each stream it receives live: nothing up to it is still to come.
            self._reply(
                subscriber,
                {
                    "type": "subscribed",
                    "channels": sorted(subscriber.channels),
                    "ids": self._ids_for(subscriber),
                },
            )
        return plan

    def subscribe(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        """Add already-parsed channels; raise ChannelError past the per-client limit."""
        wanted = subscriber.channels | set(channels)
        if len(wanted) > self._max_channels:
            raise ChannelError(f"at most {self._max_channels} channels per connection")
        for channel in wanted - subscriber.channels:
            self._routes[channel].add(subscriber)
        subscriber.channels = wanted

    def unsubscribe(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        """Remove channels; channels the client does not hold are ignored."""
        for channel in set(channels) & subscriber.channels:
            self._remove_route(channel, subscriber)
            subscriber.channels.discard(channel)

    def publish(self, stream: Stream, entry_id: str, message: Message) -> int:
        """Queue one entry for every client subscribed to its channels; return how many."""
        self._cursors[stream] = entry_id
        self._counts[stream] += 1
        channels = channels_for(stream, message)
        targets: set[Subscriber] = set()
        for channel in channels:
            targets.update(self._routes.get(channel, ()))
        if not targets:
            return 0
        text = event_text(channels[0], stream, entry_id, message)  # encoded once for all
        delivered = 0
        for subscriber in targets:
            if stream in subscriber.holding:
                accepted = subscriber.hold(stream, parse_id(entry_id), text)
            else:
                accepted = subscriber.put(text)
                self._mark(subscriber)
            if accepted:
                delivered += 1
            else:
                self._drop_slow(subscriber)
        metrics.WEBSOCKET_MESSAGES.labels(channel_kind=stream.value).inc(delivered)
        return delivered

    def replay(
        self, subscriber: Subscriber, stream: Stream, entries: Sequence[tuple[str, Message]]
    ) -> int:
        """Queue backlog entries of a stream being resumed that match the client's channels."""
        sent = 0
        for entry_id, message in entries:
            channels = channels_for(stream, message)
            if subscriber.closed or subscriber.channels.isdisjoint(channels):
                continue
            if not subscriber.put(event_text(channels[0], stream, entry_id, message)):
                self._drop_slow(subscriber)
                break
            sent += 1
        if sent:
            self._mark(subscriber)
            metrics.WEBSOCKET_RESUMED.labels(stream=stream.value).inc(sent)
        return sent

    def finish_resume(
        self, subscriber: Subscriber, stream: Stream, last_id: str, *, sent: int, gap: bool
    ) -> None:
        """End a stream's backlog at `last_id`: release the live events held meanwhile that
        are newer, then tell the client (`resumed`, with whether entries were lost)."""
        for event in subscriber.release(stream, parse_id(last_id)):
            if not subscriber.put(event):
                self._drop_slow(subscriber)
                return
        self._mark(subscriber)
        self._reply(
            subscriber, {"type": "resumed", "stream": stream.value, "count": sent, "gap": gap}
        )

    async def wait_dirty(self) -> None:
        """Wait until some outbox has events that were not flushed yet."""
        await self._pending.wait()

    def flush(self) -> int:
        """Let every outbox with new events be sent; return how many clients that was."""
        dirty = self._dirty
        self._dirty = set()
        self._pending.clear()
        sent = 0
        for subscriber in dirty:
            sent += subscriber.flush()
        if sent:
            metrics.WEBSOCKET_FRAMES.inc(sent)
        return len(dirty)

    def heartbeat(self, time_ms: int, elapsed_s: float) -> None:
        """Queue a heartbeat for every client: the time, entries/s per stream since the last
        heartbeat, and the last id of each stream the client receives."""
        rates = {
            stream.value: round(self._counts[stream] / elapsed_s, 3) if elapsed_s > 0 else 0.0
            for stream in Stream
            if stream is not Stream.TICKS
        }
        self._counts.clear()
        for subscriber in list(self._subscribers):
            payload = {
                "type": "heartbeat",
                "time_ms": time_ms,
                "rates": rates,
                "ids": self._ids_for(subscriber),
            }
            if not subscriber.closed and not subscriber.put(Frame(_encode(payload))):
                self._drop_slow(subscriber)

    def close_all(self, reason: str, code: int) -> None:
        """Tell every client to close, e.g. when the relay stopped or the server stops."""
        for subscriber in list(self._subscribers):
            self._drop(subscriber, Closing(reason, code))

    def _ids_for(self, subscriber: Subscriber) -> dict[str, str]:
        # Not the streams being resumed: their backlog is still to come.
        return {
            stream.value: cursor
            for stream in streams_of(subscriber.channels)
            if stream not in subscriber.holding and (cursor := self._cursors.get(stream))
        }

    def _mark(self, subscriber: Subscriber) -> None:
        self._dirty.add(subscriber)
        self._pending.set()

    def _reply(self, subscriber: Subscriber, payload: dict[str, object]) -> None:
        if subscriber.closed:
            return
        if subscriber.put(Frame(_encode(payload))):
            metrics.WEBSOCKET_MESSAGES.labels(channel_kind="control").inc()
        else:
            self._drop_slow(subscriber)

    def _drop_slow(self, subscriber: Subscriber) -> None:
        if not subscriber.closed:
            self._drop(subscriber, Closing(SLOW_CONSUMER, CLOSE_POLICY_VIOLATION))
            metrics.WEBSOCKET_DROPPED.labels(reason="slow_consumer").inc()

    def _drop(self, subscriber: Subscriber, closing: Closing) -> None:
        if subscriber.closed:
            return
        self._unroute(subscriber)
        self._dirty.discard(subscriber)
        subscriber.close(closing)  # empties the outbox: its memory is freed now

    def _unroute(self, subscriber: Subscriber) -> None:
        for channel in subscriber.channels:
            self._remove_route(channel, subscriber)
        subscriber.channels = set()

    def _remove_route(self, channel: str, subscriber: Subscriber) -> None:
        clients = self._routes.get(channel)
        if clients is None:
            return
        clients.discard(subscriber)
        if not clients:
            del self._routes[channel]


def _reasons(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'request'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
