"""WebSocket /ws: subscribe/unsubscribe requests in -> live stream events out.

Client frames: `{"op": "subscribe" | "unsubscribe", "channels": ["candles:ETH/BTC", "signals"]}`.
Server frames: `{"type": "event", "channel", "stream", "id", "data"}`, `{"type": "subscribed",
"channels": [every channel now held]}`, `{"type": "error", "reason"}` (the connection stays open)
and `{"type": "dropped", "reason"}` just before the server closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from services.gateway.dependencies import HubDep
from services.gateway.hub import Closing, Hub, Subscriber

FAREWELL_TIMEOUT_S: Final = 5.0

router = APIRouter()


@router.websocket("/ws")
async def stream_events(websocket: WebSocket, hub: HubDep) -> None:
    """Serve one client: a reader applies its requests, a writer drains its queue."""
    await websocket.accept()
    subscriber = hub.connect()
    writer = asyncio.create_task(_write(websocket, subscriber))
    reader = asyncio.create_task(_read(websocket, hub, subscriber))
    try:
        # Either side ending ends the connection: the client left, or the hub dropped it.
        done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writer, reader):
            task.cancel()
        await asyncio.wait({writer, reader})
        hub.disconnect(subscriber)
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, WebSocketDisconnect):
            raise error


async def _read(websocket: WebSocket, hub: Hub, subscriber: Subscriber) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        hub.handle_request(subscriber, data if data is not None else message.get("bytes", b""))


async def _write(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        item = await subscriber.queue.get()
        if isinstance(item, Closing):
            # Best effort and bounded: a client too slow to read events may never read this.
            with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, TimeoutError):
                async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                    await websocket.send_text(item.to_text())
                    await websocket.close(code=item.code, reason=item.reason)
            return
        await websocket.send_text(item)
