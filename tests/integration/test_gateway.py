"""The gateway served by uvicorn over real Redis and Postgres, driven over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.bus import RedisBus
from shared.messages import Stream
from shared.store import Store, create_engine
from tests.fakes import OPEN_TIME_MS, candle, order, real_candles, signal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FRAME_WAIT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn that leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(redis_url: str, database_url: str) -> AsyncIterator[tuple[str, RedisBus]]:
    """Serve a gateway on a free local port; yield its address and a second Redis connection."""
    gateway_bus, publisher = RedisBus(redis_url), RedisBus(redis_url)
    store = Store(create_engine(database_url))
    failures: list[BaseException] = []
    settings = GatewaySettings(
        _env_file=None, redis_url=redis_url, database_url=database_url, block_ms=100
    )
    app = create_app(settings, bus=gateway_bus, store=store, on_relay_failure=failures.append)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    serve = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            assert not serve.done(), "the gateway did not start"
            await asyncio.sleep(0.01)
        yield f"127.0.0.1:{listener.getsockname()[1]}", publisher
        assert failures == []
    finally:
        server.should_exit = True
        await serve
        listener.close()
        await gateway_bus.close()
        await publisher.close()
        await store.close()


async def receive(websocket: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(websocket.recv(), FRAME_WAIT_S))
    return frame


async def wait_until_relaying(websocket: ClientConnection, publisher: RedisBus) -> set[str]:
    """Publish marker candles until one arrives: the relay tails from when it started."""
    ids: set[str] = set()
    for attempt in range(1, 50):
        ids.add(await publisher.publish(Stream.CANDLES, candle(open_time_ms=attempt * 60_000)))
        with contextlib.suppress(TimeoutError):
            frame = json.loads(await asyncio.wait_for(websocket.recv(), 0.2))
            assert frame["id"] in ids, frame
            return ids
    raise AssertionError("the relay never delivered a marker candle")


async def test_websocket_client_receives_candles_and_signals_published_to_redis(
    redis_url: str, database_url: str
) -> None:
    async with (
        serving(redis_url, database_url) as (address, publisher),
        connect(f"ws://{address}/ws") as websocket,
    ):
        await websocket.send(
            json.dumps({"op": "subscribe", "channels": ["candles:ETH/BTC", "signals"]})
        )
        assert await receive(websocket) == {
            "type": "subscribed",
            "channels": ["candles:ETH/BTC", "signals"],
        }
        markers = await wait_until_relaying(websocket, publisher)

        real = real_candles(1)[0]
        await publisher.publish(Stream.CANDLES, candle("LTC/BTC"))
        await publisher.publish(Stream.ORDERS, order())
        candle_id = await publisher.publish(Stream.CANDLES, real)
        signal_id = await publisher.publish(Stream.SIGNALS, signal())

        events: dict[str, dict[str, Any]] = {}
        while len(events) < 2:
            frame = await receive(websocket)
            assert frame["channel"] in {"candles:ETH/BTC", "signals"}, frame
            if frame["id"] not in markers:
                events[frame["stream"]] = frame

    assert events["candles"]["id"] == candle_id
    assert events["candles"]["channel"] == "candles:ETH/BTC"
    assert events["candles"]["data"]["close"] == real.close
    assert events["candles"]["data"]["open_time_ms"] == real.open_time_ms
    assert events["signals"]["id"] == signal_id
    assert events["signals"]["data"]["signal_id"] == signal().signal_id


async def test_rest_reads_candles_stored_in_postgres(redis_url: str, database_url: str) -> None:
    candles = real_candles(50)
    store = Store(create_engine(database_url))
    try:
        await store.save_candles(candles)
    finally:
        await store.close()

    async with (
        serving(redis_url, database_url) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        latest = await http.get(
            "/api/v1/candles", params={"symbol": "ETH/BTC", "timeframe": "1m", "limit": 3}
        )
        invalid = await http.get(
            "/api/v1/candles",
            params={"symbol": "ETH/BTC", "timeframe": "1m", "start_ms": OPEN_TIME_MS, "end_ms": 0},
        )
        health = await http.get("/health")

    assert latest.status_code == 200
    assert [row["open_time_ms"] for row in latest.json()] == [c.open_time_ms for c in candles[-3:]]
    assert invalid.status_code == 422
    assert "must be <= end_ms" in invalid.json()["detail"][0]["msg"]
    assert health.json()["status"] == "ok"
