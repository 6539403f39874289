"""The five services as separate processes on real Redis and Postgres, replaying real candles."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from services.executor.settings import ExecutorSettings
from tests.conftest import ohlcv_path
from tests.e2e import checks
from tests.e2e.harness import Pipeline, wait_until

pytestmark = pytest.mark.e2e

FILES = ("ETH_BTC-1m.json", "ADA_BTC-1m.json", "XMR_BTC-1m.json")


class WebSocketWatcher:
    """A dashboard-like client: subscribes to channels and records every event it receives."""

    def __init__(self, port: int, channels: list[str], token: str) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws?token={token}"
        self.channels = channels
        self.events: list[dict[str, object]] = []
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with websockets.connect(self.url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "channels": self.channels}))
            while not self._stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.2)
                except TimeoutError:
                    continue
                message = json.loads(raw)
                if message.get("type") == "subscribed":
                    self.subscribed.set()
                elif message.get("type") == "events":
                    self.events.extend(message["events"])

    def __enter__(self) -> WebSocketWatcher:
        self._thread.start()
        assert self.subscribed.wait(10), "the gateway never acknowledged the subscription"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def channels_seen(self) -> set[str]:
        return {str(event["channel"]) for event in self.events}


@pytest.fixture
def replay_files() -> list[Path]:
    return [ohlcv_path(name) for name in FILES]


@pytest.fixture
def pipeline(
    redis_url: str, database_url: str, tmp_path: Path, replay_files: list[Path]
) -> Iterator[Pipeline]:
    pipe = Pipeline(
        redis_url=redis_url,
        database_url=database_url,
        log_dir=tmp_path,
        per_service_env={
            "collector": {
                "SOURCE": "replay",
                "REPLAY_FILES": ",".join(str(p) for p in replay_files),
            }
        },
    )
    yield pipe
    pipe.stop()


def wait_for_completion(pipeline: Pipeline, expected_candles: int, timeout_s: float) -> None:
    url = pipeline.database_url
    wait_until(
        lambda: (
            pipeline.assert_running() is None and checks.count(url, "candles") >= expected_candles
        ),
        timeout_s=timeout_s,
        what=f"{expected_candles} stored candles",
    )
    wait_until(pipeline.drained, timeout_s=timeout_s, what="every consumer group to drain")


def assert_pipeline_output(pipeline: Pipeline, replay_files: list[Path]) -> tuple[int, int, int]:
    url = pipeline.database_url
    checks.assert_candles_exactly_once(url, checks.file_candles(replay_files))
    rows = checks.assert_indicators_match_batch(url)
    signals = checks.assert_signals_follow_strategy(url)
    orders = checks.assert_orders_exactly_once(url, pipeline.redis_url, ExecutorSettings())
    checks.assert_fills_match_backtest(url, replay_files)
    return rows, signals, orders


def test_replayed_candles_flow_to_orders_and_websocket_clients(
    pipeline: Pipeline, replay_files: list[Path]
) -> None:
    expected = sum(len(times) for times in checks.file_candles(replay_files).values())
    pipeline.start("gateway", "executor", "signals", "indicators")
    wait_until(pipeline.consuming, timeout_s=120, what="the consumers to start reading")
    channels = ["signals", "orders", "candles:ETH/BTC"]
    with WebSocketWatcher(pipeline.gateway_port, channels, pipeline.read_token) as ws:
        pipeline.start("collector")
        wait_for_completion(pipeline, expected, timeout_s=240)
        rows, signals, orders = assert_pipeline_output(pipeline, replay_files)
        assert signals > 0 and orders > 0, "the replay produced no signals or no orders"
        wait_until(
            lambda: {"signals", "orders"} <= ws.channels_seen(),
            timeout_s=10,
            what="the WebSocket client to receive signals and orders",
        )
    assert ws.channels_seen() <= {"signals", "orders", "candles:ETH/BTC"}
    live_orders = {e["data"]["client_order_id"] for e in ws.events if e["channel"] == "orders"}
    assert len(live_orders) == orders
    metrics = pipeline.metrics_text("indicators")
    assert 'candlebus_messages_handled_total{service="indicators",stream="candles"}' in metrics
    print(f"\n{expected} candles, {rows} indicator rows, {signals} signals, {orders} orders")


def test_sigkilled_indicators_and_executor_lose_and_double_nothing(
    pipeline: Pipeline, replay_files: list[Path]
) -> None:
    expected = sum(len(times) for times in checks.file_candles(replay_files).values())
    pipeline.per_service_env["collector"]["REPLAY_SPEED"] = "60000"  # 1,000 minutes a second
    pipeline.start("gateway", "executor", "signals", "indicators")
    wait_until(pipeline.consuming, timeout_s=120, what="the consumers to start reading")
    pipeline.start("collector")
    url = pipeline.database_url
    wait_until(
        lambda: checks.count(url, "indicators") > 2_000,
        timeout_s=60,
        what="indicator rows before the first kill",
    )
    pipeline.kill("indicators")
    rows_at_kill = checks.count(url, "indicators")
    time.sleep(1.0)
    pipeline.start("indicators")
    wait_until(lambda: checks.count(url, "orders") > 0, timeout_s=60, what="a first order")
    wait_until(
        lambda: checks.count(url, "indicators") > rows_at_kill + 1_000,
        timeout_s=60,
        what="indicator rows after the restart",
    )
    # Killed mid-position: the restart must restore stops, targets and trailing state so that
    # the exits come on the same candles at the same prices as without the kill (the fills
    # are compared with an uninterrupted trader and with the backtest).
    held_sql = "SELECT symbol, updated_at_ms FROM positions WHERE quantity > 0"
    wait_until(lambda: bool(checks.query(url, held_sql)), timeout_s=60, what="an open position")
    pipeline.kill("executor")
    held = checks.query(url, held_sql)
    time.sleep(1.0)
    pipeline.start("executor")
    assert checks.count(url, "candles") < expected, "the replay ended before the kills"
    wait_for_completion(pipeline, expected, timeout_s=240)
    rows, signals, orders = assert_pipeline_output(pipeline, replay_files)
    assert orders > 0
    for symbol, since_ms in held:  # each position open at the kill was exited after it
        exits = checks.query(
            url,
            "SELECT count(*) FROM fills WHERE symbol = :s AND side = 'sell' AND filled_at_ms > :t",
            s=symbol,
            t=since_ms,
        )
        assert exits[0][0] > 0, f"{symbol}: the position open at the kill was never exited"
    print(
        f"\nafter two SIGKILLs (the executor's with {len(held)} positions open): {rows} indicator "
        f"rows, {signals} signals, {orders} orders"
    )
