"""One process runtime for every service: logging, /metrics, bus + store, signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from prometheus_client import start_http_server
from redis.exceptions import RedisError

from shared import metrics
from shared.bus import Bus, RedisBus
from shared.bus_types import METRICS_INTERVAL_S
from shared.settings import CommonSettings, secrets_of
from shared.store import Store

S = TypeVar("S", bound=CommonSettings)
T = TypeVar("T")
ServiceMain = Callable[[S, Bus, Store], Awaitable[None]]

log = logging.getLogger(__name__)


class RedactingFormatter(logging.Formatter):
    """A formatter that writes `***` wherever a secret would appear in a line or a traceback,
    whichever library logged it."""

    def __init__(self, fmt: str, datefmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt, datefmt)
        # Longest first, so a secret that contains another is hidden whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once: one line per event, UTC timestamps, `secrets` hidden."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = RedactingFormatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s",
        "%Y-%m-%dT%H:%M:%S",
        secrets,
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


async def uninterrupted(work: Awaitable[T]) -> T:
    """Await `work` to its end even when the caller is cancelled meanwhile, then pass the
    cancel on. For a step that must not stop halfway on shutdown, such as storing candles and
    publishing them: the stop waits for the step instead of leaving it half done."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def export_group_metrics_forever(bus: RedisBus) -> None:
    """Export the lag of the groups reading what this process publishes, every interval. A
    Redis error skips one round: the service's own loop deals with Redis being away."""
    while True:
        await asyncio.sleep(METRICS_INTERVAL_S)
        try:
            await bus.export_published_group_metrics()
        except RedisError as exc:
            log.warning("consumer group metrics not read: %s", exc)


async def alongside(work: Awaitable[None], helper: Awaitable[None]) -> None:
    """Run `work` with `helper` beside it; `helper` is cancelled when `work` ends."""
    task = asyncio.ensure_future(helper)
    try:
        await work
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def serve(name: str, main: ServiceMain[S], settings: S) -> None:
    """Connect the bus and the store, run `main` until a signal, and close both."""
    bus = RedisBus.from_settings(settings)
    store = Store.from_settings(settings)
    log.info("%s starting (consumer %s)", name, settings.consumer_name)
    try:
        work = main(settings, bus, store)
        await run_until_signalled(alongside(work, export_group_metrics_forever(bus)))
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
    configure_logging(settings.log_level, secrets_of(settings))
    # Long-lived objects created at start never need scanning again, and a hot loop allocates
    # many short-lived ones: fewer, cheaper collections.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    metrics.create_known_series(name)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(name, main, settings))
