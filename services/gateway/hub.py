"""WebSocket fan-out without sockets: (stream, entry id, message) in -> JSON text on client queues.

Channels are `candles:<symbol>` and `indicators:<symbol>` (`*` for every symbol), and `signals`,
`orders`, `fills`, `positions`. Each client owns a bounded queue that the socket side drains; the
hub only ever calls `put_nowait`, so publishing never waits for a client. A client whose queue is
full is unsubscribed, its queue emptied, and a `Closing` item queued: the socket side sends
`{"type": "dropped", ...}` and closes. Memory per client is therefore bounded by its queue.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import msgspec
from pydantic import ValidationError

from services.gateway.models import ChannelRequest, is_symbol
from shared import metrics
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


@dataclass(frozen=True, slots=True)
class Closing:
    """Queue item telling the socket side to send `dropped` with this reason, then close."""

    reason: str
    code: int

    def to_text(self) -> str:
        """Return the JSON frame announcing the close."""
        return _encode({"type": "dropped", "reason": self.reason})


Outgoing: TypeAlias = str | Closing


@dataclass(eq=False, slots=True)
class Subscriber:
    """One WebSocket client: its send queue and its channels."""

    queue: asyncio.Queue[Outgoing]
    channels: set[str] = field(default_factory=set)
    closed: bool = False


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
    """Return the JSON frame of one stream entry (NaN becomes null)."""
    return _encode(
        {
            "type": "event",
            "channel": channel,
            "stream": stream.value,
            "id": entry_id,
            "data": to_builtins(message),
        }
    )


def _encode(payload: dict[str, object]) -> str:
    return _json.encode(payload).decode()


class Hub:
    """Route stream entries to the clients subscribed to their channels."""

    def __init__(self, *, queue_size: int, max_channels: int) -> None:
        self._queue_size = queue_size
        self._max_channels = max_channels
        self._subscribers: set[Subscriber] = set()
        self._routes: defaultdict[str, set[Subscriber]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._subscribers)

    def connect(self) -> Subscriber:
        """Register a new client with an empty, bounded queue and no channels."""
        subscriber = Subscriber(queue=asyncio.Queue(maxsize=self._queue_size))
        self._subscribers.add(subscriber)
        metrics.WEBSOCKET_CLIENTS.inc()
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        """Forget a client (idempotent)."""
        if subscriber not in self._subscribers:
            return
        self._unroute(subscriber)
        self._subscribers.discard(subscriber)
        metrics.WEBSOCKET_CLIENTS.dec()

    def handle_request(self, subscriber: Subscriber, text: str | bytes) -> None:
        """Apply a client's JSON request; queue the ack, or an error with the reason."""
        if subscriber.closed:
            return
        try:
            request = ChannelRequest.model_validate_json(text)
            channels = {parse_channel(channel) for channel in request.channels}
            if request.op == "subscribe":
                self.subscribe(subscriber, channels)
            else:
                self.unsubscribe(subscriber, channels)
        except ValidationError as exc:
            self._reply(subscriber, {"type": "error", "reason": _reasons(exc)})
        except ChannelError as exc:
            self._reply(subscriber, {"type": "error", "reason": str(exc)})
        else:
            # The ack lists every channel the client now holds, after either operation.
            self._reply(subscriber, {"type": "subscribed", "channels": sorted(subscriber.channels)})

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
        channels = channels_for(stream, message)
        targets: set[Subscriber] = set()
        for channel in channels:
            targets.update(self._routes.get(channel, ()))
        if not targets:
            return 0
        text = event_text(channels[0], stream, entry_id, message)  # encoded once for all
        delivered = sum(self._offer(subscriber, text) for subscriber in targets)
        metrics.WEBSOCKET_MESSAGES.labels(channel_kind=stream.value).inc(delivered)
        return delivered

    def close_all(self, reason: str, code: int) -> None:
        """Tell every client to close, e.g. when the relay stopped or the server stops."""
        for subscriber in list(self._subscribers):
            self._drop(subscriber, Closing(reason, code))

    def _reply(self, subscriber: Subscriber, payload: dict[str, object]) -> None:
        if self._offer(subscriber, _encode(payload)):
            metrics.WEBSOCKET_MESSAGES.labels(channel_kind="control").inc()

    def _offer(self, subscriber: Subscriber, text: str) -> bool:
        try:
            subscriber.queue.put_nowait(text)
        except asyncio.QueueFull:
            self._drop(subscriber, Closing(SLOW_CONSUMER, CLOSE_POLICY_VIOLATION))
            metrics.WEBSOCKET_DROPPED.labels(reason="slow_consumer").inc()
            return False
        return True

    def _drop(self, subscriber: Subscriber, closing: Closing) -> None:
        if subscriber.closed:
            return
        subscriber.closed = True
        self._unroute(subscriber)
        # Emptying the queue frees its memory now and makes room for the one Closing item.
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(closing)

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
