"""The five services on a replayed market, watched by a real Prometheus, with API traffic.

The collector polls the stand-in exchange (a process serving real recorded candles through the
Binance API, tests/standin) on an accelerated market clock, so the exchange-side metrics
(requests, latency, rate limiter, breakers, gaps, staleness) are as real as the pipeline's.
A WebSocket client and a small HTTP client keep the gateway busy. Used by
tests/e2e/test_observability.py and scripts/plot_overview.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import websockets

from tests.conftest import DATA_DIR
from tests.e2e.harness import SERVICES, Pipeline, free_port, wait_until
from tests.e2e.prometheus import PrometheusServer, local_config
from tests.standin.remote import StandInProcess, run_standin_process
from tests.standin.series import DAY_MS, load_catalog

SYMBOLS = ("ETH/BTC", "ADA/BTC", "XMR/BTC", "DASH/BTC")  # two liquid, two with many gaps
MARKET_SPEED = 60.0  # market seconds per wall second: a 1m candle closes every second
BACKFILL_HOURS = 12  # enough history for the strategy to signal and the executor to trade


@dataclass
class ObservedRun:
    """What is running: the services, the exchange they poll, the Prometheus watching them."""

    pipeline: Pipeline
    exchange: StandInProcess
    prometheus: PrometheusServer
    started_at: float  # wall time the services started (Prometheus was scraping by then)


class GatewayTraffic:
    """A WebSocket subscriber and a poller of a few REST routes, each on its own thread."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._stop = threading.Event()
        self.events = 0
        self.subscribed = threading.Event()
        self._threads = [
            threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]

    def __enter__(self) -> GatewayTraffic:
        for thread in self._threads:
            thread.start()
        assert self.subscribed.wait(15), "the gateway never acknowledged the subscription"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    async def _listen(self) -> None:
        port, token = self._pipeline.gateway_port, self._pipeline.read_token
        channels = ["candles:*", "indicators:ETH/BTC", "signals", "orders", "fills", "positions"]
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
            await ws.send(json.dumps({"op": "subscribe", "channels": channels}))
            while not self._stop.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.2))
                except TimeoutError:
                    continue
                kind = message.get("type")
                if kind == "subscribed":
                    self.subscribed.set()
                elif kind == "events":  # a batch of stream events
                    self.events += len(message["events"])
                elif kind == "event":
                    self.events += 1

    def _poll(self) -> None:
        paths = [
            "/health",
            "/api/v1/candles?symbol=ETH/BTC&timeframe=1m&limit=200",
            "/api/v1/indicators?symbol=ETH/BTC&timeframe=1m&limit=200",
            # The same frame asked two ways: the second is an indicator cache hit while the
            # market has no new candle, even where the response cache tells the URLs apart.
            "/api/v1/indicators/computed?symbol=ADA/BTC&timeframe=1m&limit=300",
            "/api/v1/indicators/computed?symbol=ADA/BTC&timeframe=1m&limit=300&rsi_period=14",
            "/api/v1/signals?limit=100",
            "/api/v1/orders?limit=100",
            "/api/v1/positions",
            "/api/v1/candles?symbol=ETH/BTC",  # no timeframe: a 422
            "/no/such/page",  # unmatched: a 404
        ]
        base = f"http://127.0.0.1:{self._pipeline.gateway_port}"
        with httpx.Client(base_url=base, headers=self._pipeline.auth_headers(), timeout=5) as http:
            while not self._stop.wait(0.25):
                for path in paths:
                    # Refused while the gateway stops: the test checks the services itself.
                    with contextlib.suppress(httpx.TransportError):
                        http.get(path)


@contextmanager
def observed_pipeline(
    redis_url: str, database_url: str, workdir: Path, *, scrape_interval_s: float = 1.0
) -> Iterator[ObservedRun]:
    """Start the stand-in exchange, Prometheus and the five services; stop them all after."""
    catalog = load_catalog(DATA_DIR)
    start_ms = catalog.end_ms - DAY_MS
    with ExitStack() as stack:
        exchange = stack.enter_context(run_standin_process(speed=0.0))
        exchange.control.set_clock(now_ms=start_ms, speed=MARKET_SPEED)
        anchor_s = time.time()  # the stand-in anchored its clock just before answering
        pipeline = Pipeline(
            redis_url=redis_url,
            database_url=database_url,
            log_dir=workdir,
            metrics_ports={name: free_port() for name in SERVICES},
            per_service_env={
                "collector": {
                    "SOURCE": "exchange",
                    "EXCHANGE": "binance",
                    "API_URL": exchange.base_url,
                    "SYMBOLS": ",".join(SYMBOLS),
                    "TIMEFRAMES": "1m",
                    "BACKFILL_HOURS": str(BACKFILL_HOURS),
                    "SETTLE_MS": "1000",
                    "CLOCK_START_MS": str(start_ms),
                    "CLOCK_ANCHOR_S": repr(anchor_s),
                    "CLOCK_SPEED": str(MARKET_SPEED),
                }
            },
        )
        stack.callback(pipeline.stop)
        interval = f"{scrape_interval_s:g}s"
        prometheus = PrometheusServer(
            workdir / "prometheus",
            local_config(
                pipeline.metrics_ports, scrape_interval=interval, evaluation_interval=interval
            ),
        )
        prometheus.start()
        stack.callback(prometheus.stop)
        started_at = time.time()
        pipeline.start("gateway", "executor", "signals", "indicators")
        wait_until(pipeline.consuming, timeout_s=120, what="the consumers to start reading")
        pipeline.start("collector")
        yield ObservedRun(pipeline, exchange, prometheus, started_at)
