"""Keep the server's own send of each WebSocket connection in its scope, for the hub's fan-out.

Between the server's send and a route's `WebSocket.send`, Starlette puts two exception-handling
wrappers and the `WebSocket` object: three calls more for every frame to every client, and a
fan-out to 1,000 clients is 1,000 sends in one stretch of the event loop. No exception a frame's
send may raise is one those wrappers would turn into an answer (a failed send ends the client,
in the hub), so the hub sends frames with the server's own function, which this middleware,
outermost, records.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

RAW_SEND: Final = "candlebus.raw_send"  # the scope key


class RawWebSocketSendMiddleware:
    """Record a WebSocket connection's send, as the server passed it, under `RAW_SEND`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)
