"""Run the stand-in in-process: a market in -> uvicorn on a free port in a thread, its URL out."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvicorn

from tests.standin.app import create_app
from tests.standin.clock import Clock
from tests.standin.market import Market
from tests.standin.series import load_catalog

START_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class StandIn:
    """A running stand-in: where it listens and the market object that drives it."""

    base_url: str  # e.g. http://127.0.0.1:41234, for build_exchange(api_url=...)
    market: Market

    @property
    def ws_url(self) -> str:
        """Return the WebSocket base URL of the same server."""
        return "ws" + self.base_url.removeprefix("http")


def build_market(
    data_dir: Path, *, now_ms: int | None = None, speed: float = 0.0, end_ms: int | None = None
) -> Market:
    """Return a market over `data_dir`'s files; the clock starts at `now_ms` (default: the end)."""
    catalog = load_catalog(data_dir, end_ms=end_ms)
    return Market(catalog, Clock(catalog.end_ms if now_ms is None else now_ms, speed=speed))


def uvicorn_config(
    market: Market, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> uvicorn.Config:
    """Return the uvicorn settings the stand-in runs with, in a thread or as a process."""
    return uvicorn.Config(
        create_app(market),
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",
        loop="asyncio",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,  # hung requests must not hold up a test's teardown
        access_log=False,
    )


@contextmanager
def serve_standin(market: Market, *, host: str = "127.0.0.1") -> Iterator[StandIn]:
    """Serve `market` on a free port in a background thread until the block ends."""
    sock = socket.socket()
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(market))
    # uvicorn installs signal handlers only in the main thread; a thread runs without them.
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="standin", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the stand-in did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield StandIn(f"http://{host}:{port}", market)
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
        sock.close()
