"""One process runtime for every service: logging, /metrics, bus + store, signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import start_http_server

from shared.bus import Bus, RedisBus
from shared.settings import CommonSettings
from shared.store import Store

S = TypeVar("S", bound=CommonSettings)
ServiceMain = Callable[[S, Bus, Store], Awaitable[None]]

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Configure the root logger once: one line per event, UTC timestamps."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


async def run_until_signalled(coro: Awaitable[None]) -> None:
    """Run `coro` until it ends or SIGTERM/SIGINT arrives, then cancel it and wait for it."""
    task = asyncio.ensure_future(coro)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        # A cancel can be swallowed by a client library mid-read: repeat it until it lands.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        if task.cancelled():
            log.info("stopped by signal")
        else:
            task.result()
    finally:
        stopping.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def serve(name: str, main: ServiceMain[S], settings: S) -> None:
    """Connect the bus and the store, run `main` until a signal, and close both."""
    bus = RedisBus.from_settings(settings)
    store = Store.from_settings(settings)
    log.info("%s starting (consumer %s)", name, settings.consumer_name)
    try:
        await run_until_signalled(main(settings, bus, store))
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
        await store.close()
        log.info("%s stopped", name)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's event loop factory where it is installed (a faster loop), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_service(name: str, main: ServiceMain[S], settings: S) -> None:
    """Run one service as a process: the only entry point every `__main__` calls.

    An unexpected exception propagates: the process exits non-zero, the supervisor restarts it,
    and the entries it had not acked are delivered again.
    """
    configure_logging(settings.log_level)
    # Long-lived objects created at start never need scanning again, and a hot loop allocates
    # many short-lived ones: fewer, cheaper collections.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(name, main, settings))
