"""One WebSocket client's outbox: encoded events and control frames in -> batched frames out.

Events wait in a bounded outbox until the hub flushes it (every few milliseconds, or at once
when a full batch is waiting); the socket side then sends everything waiting, as frames of up to
`batch_max` events: `{"type": "events", "events": [...]}`. Control frames (acks, errors,
heartbeats) keep their place in the order and go out on their own. While a stream is being
resumed, its live events are held apart and released after the backlog, without those the
backlog already carried. The outbox and the held events together never exceed `limit` items:
the hub drops a client that would.

The socket side is a send function attached to the subscriber: whenever the outbox may be sent,
its frames go out at once, in the caller (the hub's flush), without a task per client; only a
send that has to wait for the client's socket buffer becomes a task, and the frames behind it
follow when it is done. A subscriber with no send attached is drained with `next_frame`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from services.gateway.eager import start
from shared import metrics
from shared.bus_types import StreamId
from shared.messages import Stream

EVENTS_OPEN: Final = '{"type":"events","events":['
EVENTS_CLOSE: Final = "]}"


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole control frame (ack, error, heartbeat, resumed): sent on its own, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class Closing:
    """Why the hub dropped a client: the socket side says so (`dropped`), then closes."""

    reason: str
    code: int

    def to_text(self) -> str:
        """Return the JSON frame announcing the close."""
        return json.dumps({"type": "dropped", "reason": self.reason}, separators=(",", ":"))


# An event is its JSON object as text (encoded once, shared by every client that gets it).
Item: TypeAlias = str | Frame
# The connection's ASGI send: takes {"type": "websocket.send", "text": ...}.
Send: TypeAlias = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Subscriber:
    """One client: its channels, its bounded outbox, and the streams it is resuming."""

    limit: int
    batch_max: int
    channels: set[str] = field(default_factory=set)
    outbox: deque[Item] = field(default_factory=deque)
    holding: dict[Stream, list[tuple[StreamId, str]]] = field(default_factory=dict)
    held: int = 0
    closing: Closing | None = None
    failure: BaseException | None = None
    _send: Send | None = None
    _sending: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def closed(self) -> bool:
        """True once the hub dropped the client, or its socket failed."""
        return self.closing is not None or self.failure is not None

    @property
    def size(self) -> int:
        """Items this client holds memory for: its outbox and its held live events."""
        return len(self.outbox) + self.held

    @property
    def blocked(self) -> bool:
        """True while a send waits for the client's socket to take more."""
        return self._sending is not None

    @property
    def flushed(self) -> bool:
        """True when the socket side may send what the outbox holds."""
        return self._ready.is_set()

    def attach(self, send: Send) -> None:
        """Send every frame from now on with `send`, as soon as the outbox may be sent."""
        self._send = send
        self._pump()

    def detach(self) -> None:
        """Stop sending: a send still waiting on the socket is cancelled."""
        self._send = None
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None

    def put(self, item: Item) -> bool:
        """Append to the outbox; False (nothing added) if the client is over its limit."""
        if self.size >= self.limit:
            return False
        self.outbox.append(item)
        # a full batch, or a reply, goes out without waiting for a flush
        full = len(self.outbox) >= self.batch_max or isinstance(item, Frame)
        if full and (sent := self.flush()):
            metrics.WEBSOCKET_FRAMES.inc(sent)
        return True

    def hold(self, stream: Stream, entry_id: StreamId, event: str) -> bool:
        """Keep a live event of a stream being resumed; False if over the limit."""
        if self.size >= self.limit:
            return False
        self.holding[stream].append((entry_id, event))
        self.held += 1
        return True

    def release(self, stream: Stream, after: StreamId) -> list[str]:
        """Stop holding a stream; return its held events newer than `after`, in order."""
        held = self.holding.pop(stream, [])
        self.held -= len(held)
        return [event for entry_id, event in held if entry_id > after]

    def flush(self) -> int:
        """Let the socket side send what is waiting: at once, if a send is attached. Return
        how many frames went out now (the caller counts them: one metric update per flush)."""
        self._ready.set()
        return self._pump()

    def _pump(self) -> int:
        """Send every waiting frame now; stop at a send that has to wait, which goes on in a
        task and resumes the pumping when done. A send that fails ends the client."""
        send = self._send
        if send is None or self._sending is not None or not self._ready.is_set():
            return 0
        sent = 0
        while self.closing is None and self.failure is None and (frame := self.take()):
            try:
                pending = start(send({"type": "websocket.send", "text": frame}))
            except Exception as exc:  # the connection is gone: the socket side ends it
                self._fail(exc)
                return sent
            sent += 1
            if pending is not None:
                self._sending = pending
                pending.add_done_callback(self._sent)
                return sent
        self._ready.clear()
        return sent

    def _sent(self, task: asyncio.Task[None]) -> None:
        if task is not self._sending:
            return  # detached meanwhile
        self._sending = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._fail(error)
            return
        metrics.WEBSOCKET_FRAMES.inc(self._pump())  # the finished send was counted when begun

    def _fail(self, error: BaseException) -> None:
        log.debug("websocket send failed: %r", error)
        self.failure = error
        self._forget()

    def close(self, closing: Closing) -> None:
        """Forget everything waiting and wake every waiter: the client is being dropped."""
        self.closing = closing
        self._forget()

    def _forget(self) -> None:
        self.outbox.clear()
        self.holding.clear()
        self.held = 0
        for event in (self._ready, self._room, self._closed):
            event.set()

    def take(self) -> str | None:
        """Return the next frame to send (None if nothing is waiting).

        A run of events becomes one `events` frame of at most `batch_max` of them.
        """
        if not self.outbox:
            return None
        head = self.outbox.popleft()
        if isinstance(head, Frame):
            text = head.text
        else:
            events = [head]
            while self.outbox and len(events) < self.batch_max:
                item = self.outbox[0]
                if isinstance(item, Frame):
                    break
                events.append(item)
                self.outbox.popleft()
            text = _lone_frame(head) if len(events) == 1 else _events_frame(events)
        self._room.set()
        return text

    async def next_frame(self) -> str | None:
        """Wait for a flushed outbox and return its next frame; None once the client is dropped."""
        while not self.closed and not (self._ready.is_set() and self.outbox):
            if not self.outbox:
                self._ready.clear()
            await self._ready.wait()
        return None if self.closed else self.take()

    async def wait_for_room(self, count: int) -> None:
        """Wait until `count` more items fit with one to spare (or the client is dropped)."""
        while not self.closed and self.size + count >= self.limit:
            self._room.clear()
            await self._room.wait()

    async def wait_closed(self) -> Closing | None:
        """Wait until the hub drops the client (return why) or its socket fails (None)."""
        await self._closed.wait()
        return self.closing


def _events_frame(events: list[str]) -> str:
    return EVENTS_OPEN + ",".join(events) + EVENTS_CLOSE


@functools.lru_cache(maxsize=64)
def _lone_frame(event: str) -> str:
    # Built once per event: every client that gets it alone gets this same text.
    return EVENTS_OPEN + event + EVENTS_CLOSE
