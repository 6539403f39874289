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

from services.gateway.auth import TokenRegistry
from services.gateway.backtests import BacktestJobs
from services.gateway.body_limit import BodySizeLimitMiddleware
from services.gateway.cache import ResponseCache
from services.gateway.cached_reads import CachedReadsMiddleware
from services.gateway.flusher import pace
from services.gateway.http_metrics import HttpMetricsMiddleware
from services.gateway.hub import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, Hub
from services.gateway.ratelimit import RateLimiter, RateLimitMiddleware
from services.gateway.raw_send import RawWebSocketSendMiddleware
from services.gateway.relay import relay, start_cursors
from services.gateway.routes import (
    backtests,
    candles,
    controls,
    events,
    fills,
    health,
    holdings,
    indicators,
    orders,
    page,
    pnl,
    positions,
    signals,
    symbols,
)
from services.gateway.settings import GatewaySettings
from services.indicators.on_demand import IndicatorCache
from shared.bus import Bus, RedisBus
from shared.store import Store

log = logging.getLogger(__name__)

RelayFailureHook = Callable[[BaseException], None]

RELAY_STOP_TIMEOUT_S: Final = 10.0
# Probes must never be turned away by the rate limit.
UNLIMITED_PATHS: Final = ("/health", "/ready")


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
    # Set here, not in the lifespan: WebSocket and HTTP checks need it from the first request.
    app.state.tokens = TokenRegistry(
        read=[token.get_secret_value() for token in settings.api_tokens_read],
        admin=[token.get_secret_value() for token in settings.api_tokens_admin],
    )
    routers = (
        health, page, events, candles, indicators, signals, orders, fills, positions, backtests,
        controls, holdings, symbols, pnl,
    )  # fmt: skip
    for router in routers:
        app.include_router(router.router)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(Exception, _internal_error)
    _add_middleware(app, settings)
    return app


def _add_middleware(app: FastAPI, settings: GatewaySettings) -> None:
    # Each one added wraps the ones before: metrics see every answer (429s and 413s too), and
    # CORS headers go on refusals as well, so a browser can read their Retry-After.
    app.add_middleware(CachedReadsMiddleware, tokens=app.state.tokens)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.rate_limit_per_s > 0:
        limiter = RateLimiter(rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst)
        app.add_middleware(
            RateLimitMiddleware,
            limiter=limiter,
            tokens=app.state.tokens,
            exempt_paths=UNLIMITED_PATHS,
        )
    if settings.cors_origins:
        # An allowlist, never "*" (settings refuse it); tokens travel in a header, not in
        # cookies, so credentials are never allowed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After", "Link", "X-Next-Cursor"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RawWebSocketSendMiddleware)  # outermost: it sees the server's own send


def _lifespan(
    settings: GatewaySettings, bus: Bus, store: Store, on_relay_failure: RelayFailureHook
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Return the lifespan: state on `app.state`, the relay task started, stopped, surfaced."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub(
            queue_size=settings.ws_queue_size,
            max_channels=settings.ws_max_channels,
            batch_max=settings.ws_batch_max,
        )
        app.state.settings = settings
        app.state.bus = bus
        app.state.store = store
        app.state.hub = hub
        app.state.backtests = jobs = BacktestJobs(store)
        app.state.indicator_frames = IndicatorCache()  # frames computed on demand
        app.state.relay_error = None
        # Seeded before any client can subscribe, so every id the hub hands out is exact.
        cursors = await start_cursors(bus)
        hub.seed(cursors)
        pacing = asyncio.create_task(
            pace(hub, flush_s=settings.ws_flush_ms / 1000, heartbeat_s=settings.ws_heartbeat_s),
            name="gateway hub pacing",
        )
        app.state.cache = cache = ResponseCache(
            bus.client if isinstance(bus, RedisBus) else None,
            max_bytes=settings.cache_max_bytes,
            enabled=settings.cache_enabled,
        )
        task = asyncio.create_task(
            relay(
                bus, hub, block_ms=settings.block_ms, count=settings.batch_size, after=cursors,
                before_publish=cache.note,  # from the relay's cursors: no entry unnoticed
            ),
            name="gateway relay",
        )  # fmt: skip

        def surface_failure(done: asyncio.Task[None]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is None:  # relay() only ever ends by raising
                return
            if app.state.relay_error is not None:  # report the first failure only
                return
            app.state.relay_error = error
            log.error("relay stopped, stopping the gateway: %r", error, exc_info=error)
            hub.close_all("relay stopped", CLOSE_INTERNAL_ERROR)
            on_relay_failure(error)

        task.add_done_callback(surface_failure)
        pacing.add_done_callback(surface_failure)  # only a defect ends it; then as the relay
        app.state.relay = task
        try:
            yield
        finally:
            hub.close_all("server stopping", CLOSE_GOING_AWAY)
            await jobs.close()
            await _cancel(task)
            await _cancel(pacing)
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
