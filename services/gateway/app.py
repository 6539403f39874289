"""The app factory: settings, a bus and a store in -> the FastAPI app (REST, /ws, page) out."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from services.gateway.http_metrics import HttpMetricsMiddleware
from services.gateway.hub import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, Hub
from services.gateway.relay import relay
from services.gateway.routes import (
    candles,
    events,
    fills,
    health,
    indicators,
    orders,
    page,
    positions,
    signals,
)
from services.gateway.settings import GatewaySettings
from shared.bus import Bus
from shared.store import Store

log = logging.getLogger(__name__)

RelayFailureHook = Callable[[BaseException], None]

RELAY_STOP_TIMEOUT_S: Final = 10.0


def stop_process(error: BaseException) -> None:
    """Ask this process to stop as on SIGTERM, so the server drains and the lifespan re-raises."""
    signal.raise_signal(signal.SIGTERM)


def create_app(
    settings: GatewaySettings,
    *,
    bus: Bus,
    store: Store,
    on_relay_failure: RelayFailureHook = stop_process,
) -> FastAPI:
    """Build the gateway; its lifespan runs the relay from `bus` to the WebSocket hub.

    The caller owns `bus` and `store` (and closes them). If the relay fails, WebSocket clients
    are told and closed, `app.state.relay_error` is set, /health turns 503, `on_relay_failure`
    is called (by default: stop the process), and the lifespan re-raises the error at shutdown.
    """
    app = FastAPI(
        title="candlebus gateway",
        version="1",
        summary="Candles, indicators, signals, orders, fills and positions; live over /ws.",
        lifespan=_lifespan(settings, bus, store, on_relay_failure),
    )
    app.state.relay_error = None
    for router in (health, page, events, candles, indicators, signals, orders, fills, positions):
        app.include_router(router.router)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(Exception, _internal_error)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET"]
        )
    app.add_middleware(HttpMetricsMiddleware)
    return app


def _lifespan(
    settings: GatewaySettings, bus: Bus, store: Store, on_relay_failure: RelayFailureHook
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Return the lifespan: state on `app.state`, the relay task started, stopped, surfaced."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub(queue_size=settings.ws_queue_size, max_channels=settings.ws_max_channels)
        app.state.settings = settings
        app.state.bus = bus
        app.state.store = store
        app.state.hub = hub
        app.state.relay_error = None
        task = asyncio.create_task(
            relay(bus, hub, block_ms=settings.block_ms, count=settings.batch_size),
            name="gateway relay",
        )

        def surface_failure(done: asyncio.Task[None]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is None:  # relay() only ever ends by raising
                return
            app.state.relay_error = error
            log.error("relay stopped, stopping the gateway: %r", error, exc_info=error)
            hub.close_all("relay stopped", CLOSE_INTERNAL_ERROR)
            on_relay_failure(error)

        task.add_done_callback(surface_failure)
        app.state.relay = task
        try:
            yield
        finally:
            hub.close_all("server stopping", CLOSE_GOING_AWAY)
            await _cancel(task)
            error = app.state.relay_error
            if error is not None:
                raise error

    return lifespan


async def _cancel(task: asyncio.Task[None]) -> None:
    # The Redis client now and then swallows a cancellation that lands mid-read and reads on:
    # cancel again until the task ends, within a bound, so shutdown never hangs on the relay.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELAY_STOP_TIMEOUT_S
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.done():
        log.warning("relay did not stop within %.0f s; shutting down anyway", RELAY_STOP_TIMEOUT_S)


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's shape (detail: [{loc, msg, type}]) without echoing inputs or exception objects.
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # The server logs the traceback; the client learns only that it was not its fault.
    return JSONResponse(
        {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )
