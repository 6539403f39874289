"""Frames go out from the hub's flush, in the caller: no task per client unless a send waits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.gateway.eager import start
from services.gateway.hub import Hub
from services.gateway.subscriber import Subscriber
from shared.messages import Stream
from tests.fakes import signal

# --- eager start -----------------------------------------------------------------------------


async def test_a_coroutine_that_never_waits_finishes_in_the_caller() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("sent")

    assert start(quick()) is None
    assert done == ["sent"]  # no loop turn was needed


async def test_a_coroutine_that_waits_goes_on_in_a_task() -> None:
    gate = asyncio.Event()
    done: list[str] = []

    async def waits() -> None:
        done.append("began")
        await gate.wait()
        await asyncio.sleep(0)  # a bare yield to the loop is passed on too
        done.append("ended")

    task = start(waits())
    assert task is not None and done == ["began"]
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.set()
    await asyncio.wait_for(task, 1)
    assert done == ["began", "ended"]


async def test_an_error_before_waiting_reaches_the_caller_and_after_it_the_task() -> None:
    async def fails_at_once() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        start(fails_at_once())

    async def fails_later() -> None:
        await asyncio.sleep(0.001)
        raise ConnectionResetError("gone later")

    task = start(fails_later())
    assert task is not None
    with pytest.raises(ConnectionResetError, match="gone later"):
        await task


async def test_cancelling_the_task_cancels_the_waiting_coroutine() -> None:
    cleaned: list[str] = []

    async def waits_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("cleaned up")

    task = start(waits_forever())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cleaned up"]


# --- a subscriber with a send attached ------------------------------------------------------


class Socket:
    """A client socket whose buffer can be made full: sends then wait until it drains."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.room = asyncio.Event()
        self.room.set()
        self.broken = False

    async def send(self, message: dict[str, Any]) -> None:
        """The connection's ASGI send."""
        if self.broken:
            raise ConnectionResetError("client gone")
        await self.room.wait()
        assert message["type"] == "websocket.send"
        self.frames.append(json.loads(message["text"]))

    def ids(self) -> list[str]:
        return [str(e["id"]) for f in self.frames for e in f.get("events", [])]  # type: ignore[attr-defined]


def frames_sent() -> float:
    value = REGISTRY.get_sample_value("candlebus_websocket_frames_total")
    return value or 0.0


def attached(hub: Hub, socket: Socket) -> Subscriber:
    subscriber = hub.connect()
    hub.subscribe(subscriber, ["signals"])
    subscriber.attach(socket.send)
    return subscriber


async def test_the_flush_sends_every_client_its_frame_before_returning() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    sockets = [Socket() for _ in range(50)]
    for socket in sockets:
        attached(hub, socket)
    hub.publish(Stream.SIGNALS, "1-0", signal())
    hub.publish(Stream.SIGNALS, "2-0", signal())
    assert all(not socket.frames for socket in sockets)  # batched until the flush

    hub.flush()

    assert all(socket.ids() == ["1-0", "2-0"] for socket in sockets)
    assert all(len(socket.frames) == 1 for socket in sockets)  # one frame each


async def test_a_full_socket_holds_only_its_own_client_and_its_frames_follow_in_order() -> None:
    hub = Hub(queue_size=100, max_channels=10, batch_max=2)
    slow_socket, fast_socket = Socket(), Socket()
    slow = attached(hub, slow_socket)
    attached(hub, fast_socket)
    slow_socket.room.clear()  # its buffer is full: the next send waits
    frames_before = frames_sent()

    for number in range(1, 6):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())
        hub.flush()

    assert fast_socket.ids() == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert slow.blocked and slow_socket.ids() == []
    assert len(slow.outbox) == 4  # one frame in flight, 4 waiting
    slow_socket.room.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert slow_socket.ids() == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert not slow.outbox
    # every frame counted once, the one that had to wait included
    assert frames_sent() - frames_before == len(fast_socket.frames) + len(slow_socket.frames)


async def test_a_failed_send_ends_the_client_and_wakes_its_connection() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    socket = Socket()
    subscriber = attached(hub, socket)
    ended = asyncio.ensure_future(subscriber.wait_closed())
    socket.broken = True

    hub.publish(Stream.SIGNALS, "1-0", signal())
    hub.flush()

    assert await asyncio.wait_for(ended, 1) is None  # not dropped by the hub: its socket failed
    assert subscriber.closed and isinstance(subscriber.failure, ConnectionResetError)
    assert subscriber.size == 0


async def test_detaching_cancels_a_send_that_waits() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    socket = Socket()
    subscriber = attached(hub, socket)
    socket.room.clear()
    hub.publish(Stream.SIGNALS, "1-0", signal())
    hub.flush()
    assert subscriber.blocked

    subscriber.detach()
    await asyncio.sleep(0)

    assert not subscriber.blocked
    socket.room.set()
    await asyncio.sleep(0)
    assert socket.frames == []
