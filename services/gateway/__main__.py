"""Gateway service: the REST API, the WebSocket fan-out and the dashboard, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.runtime import run_service
from shared.store import Store

SERVICE = "gateway"


class _Server(uvicorn.Server):
    """uvicorn server that leaves SIGTERM/SIGINT to the runtime (one shutdown path)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: FastAPI, settings: GatewaySettings) -> uvicorn.Config:
    """Return how uvicorn serves the app: no access log (tokens ride in WebSocket URLs), and
    WebSockets with pings and permessage-deflate."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # The Sans-I/O websockets protocol: its permessage-deflate keeps a small window
        # (12 bits, memLevel 5) per connection, so compression costs little memory per client.
        ws="websockets-sansio",
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=settings.ws_ping_interval_s,
    )


async def main(settings: GatewaySettings, bus: Bus, store: Store) -> None:
    """Serve the app until cancelled, then let uvicorn close connections gracefully."""
    # A relay failure stops the server; the error then propagates so the process exits non-zero.
    app = create_app(
        settings,
        bus=bus,
        store=store,
        on_relay_failure=lambda _error: setattr(server, "should_exit", True),
    )
    server = _Server(server_config(app, settings))
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True  # stop accepting, finish in-flight requests, then return
        await serving
        raise
    if app.state.relay_error is not None:
        raise RuntimeError("gateway relay failed") from app.state.relay_error
    if not server.started:
        raise RuntimeError(f"gateway could not listen on {settings.host}:{settings.port}")


if __name__ == "__main__":
    run_service(SERVICE, main, GatewaySettings())
