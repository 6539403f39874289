"""WebSocket /ws: a token, then subscribe/unsubscribe requests in -> batched stream events out.

The token (read or admin role) comes as `Authorization: Bearer <token>` or, from a browser, as
the `token` query parameter; without a known one the server accepts and at once closes with
1008 (policy violation), so a page can tell a refused token from a network failure.

Client frames: `{"op": "subscribe" | "unsubscribe", "channels": ["candles:ETH/BTC", "signals"]}`,
and on subscribe optionally `"since": {"candles": "<last id>", ...}` to resume streams.
Server frames (every one is a JSON object with a `type`):

- `events`: `{"events": [{"channel", "stream", "id", "data"}, ...]}`, in stream order per stream;
- `subscribed`: every channel now held, and `ids`: the last id of each stream received live;
- `resumed`: `{"stream", "count", "gap"}` once a resumed stream's backlog was sent;
- `heartbeat`: `{"time_ms", "rates": entries/s per stream, "ids"}` every few seconds;
- `error`: `{"reason"}`, the connection stays open;
- `dropped`: `{"reason"}` just before the server closes the connection.

docs/websocket.md has the whole protocol, resuming included.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from services.gateway.auth import UNAUTHORIZED, websocket_role
from services.gateway.dependencies import BusDep, HubDep, SettingsDep
from services.gateway.hub import CLOSE_POLICY_VIOLATION, Hub
from services.gateway.raw_send import RAW_SEND
from services.gateway.relay import backfill
from services.gateway.subscriber import Closing, Subscriber
from shared.bus import Bus

FAREWELL_TIMEOUT_S: Final = 5.0

router = APIRouter()


@router.websocket("/ws")
async def stream_events(
    websocket: WebSocket, hub: HubDep, bus: BusDep, settings: SettingsDep
) -> None:
    """Serve one client: a reader applies its requests; the hub sends its frames."""
    await websocket.accept()
    if websocket_role(websocket) is None:
        await websocket.close(code=CLOSE_POLICY_VIOLATION, reason=UNAUTHORIZED)
        return
    subscriber = hub.connect()
    # Frames go out through the server's own send, past Starlette's layers (see raw_send).
    subscriber.attach(websocket.scope.get(RAW_SEND, websocket.send))
    reader = asyncio.create_task(_read(websocket, hub, bus, subscriber, settings.ws_resume_page))
    ended = asyncio.create_task(subscriber.wait_closed())
    tasks = {reader, ended}
    try:
        # Either ending ends the connection: the client left, the hub dropped it, or a send
        # failed. A send stuck on a client that stopped reading is cancelled, not waited for.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        subscriber.detach()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        hub.disconnect(subscriber)
    if subscriber.closing is not None:
        await _farewell(websocket, subscriber.closing)
    if reader in done and not reader.cancelled():
        error = reader.exception()
        if error is not None and not isinstance(error, WebSocketDisconnect):
            raise error


async def _read(
    websocket: WebSocket, hub: Hub, bus: Bus, subscriber: Subscriber, page: int
) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        plan = hub.handle_request(
            subscriber, data if data is not None else message.get("bytes", b"")
        )
        if plan:
            # Inline: the client's next request waits until its backlog has been queued.
            await backfill(bus, hub, subscriber, plan, page=page)


async def _farewell(websocket: WebSocket, closing: Closing) -> None:
    # Best effort and bounded: a client too slow to read events may never read this.
    with contextlib.suppress(
        WebSocketDisconnect, WebSocketDisconnected, TimeoutError, RuntimeError
    ):
        async with asyncio.timeout(FAREWELL_TIMEOUT_S):
            await websocket.send_text(closing.to_text())
            await websocket.close(code=closing.code, reason=closing.reason)
