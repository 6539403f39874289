"""The gateway app over MemoryBus and a SQLite store: REST reads, validation, errors, /ws."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from signal import SIGTERM
from signal import signal as set_signal_handler
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from starlette.websockets import WebSocketDisconnect

from services.gateway.app import create_app, stop_process
from services.gateway.settings import GatewaySettings
from shared.bus import MemoryBus
from shared.messages import CandleClosed, Message, Stream
from shared.store import CandleRow, Store, create_engine, upgrade
from tests.fakes import (
    candle,
    fill,
    indicators,
    order,
    position,
    real_candles,
    signal,
)

# A test that waits for a frame that never comes fails here instead of hanging.
pytestmark = pytest.mark.timeout(30)

CANDLES = real_candles(120)
EVERY_CHANNEL = ["candles:*", "indicators:*", "signals", "orders", "fills", "positions"]


def settings() -> GatewaySettings:
    return GatewaySettings(_env_file=None, block_ms=20, ws_queue_size=100, ws_max_channels=10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = "sqlite:///" + str(tmp_path / "gateway.db")
    upgrade(url)
    store = Store(create_engine(url))
    asyncio.run(store.save_candles(CANDLES))
    yield store
    store.engine.dispose()


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
def relay_failures() -> list[BaseException]:
    return []


@pytest.fixture
def client(
    store: Store, bus: MemoryBus, relay_failures: list[BaseException]
) -> Iterator[TestClient]:
    app = create_app(settings(), bus=bus, store=store, on_relay_failure=relay_failures.append)
    with TestClient(app) as client:
        yield client


def open_times(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [row["open_time_ms"] for row in response.json()]


# --- REST: candles ---------------------------------------------------------------------------


def test_candles_without_start_are_the_latest_limit_oldest_first(client: TestClient) -> None:
    response = client.get(
        "/api/v1/candles", params={"symbol": "ETH/BTC", "timeframe": "1m", "limit": 5}
    )

    assert open_times(response) == [c.open_time_ms for c in CANDLES[-5:]]


def test_candles_from_a_start_are_the_first_limit_after_it(client: TestClient) -> None:
    start = CANDLES[10].open_time_ms
    response = client.get(
        "/api/v1/candles",
        params={"symbol": "ETH/BTC", "timeframe": "1m", "start_ms": start, "limit": 3},
    )

    assert open_times(response) == [c.open_time_ms for c in CANDLES[10:13]]


def test_candle_range_includes_both_ends_and_carries_the_stored_values(client: TestClient) -> None:
    start, end = CANDLES[2].open_time_ms, CANDLES[4].open_time_ms
    response = client.get(
        "/api/v1/candles",
        params={"symbol": "ETH/BTC", "timeframe": "1m", "start_ms": start, "end_ms": end},
    )

    assert open_times(response) == [start, CANDLES[3].open_time_ms, end]
    first = response.json()[0]
    assert first == {
        "exchange": "binance",
        "symbol": "ETH/BTC",
        "timeframe": "1m",
        "open_time_ms": start,
        "open": CANDLES[2].open,
        "high": CANDLES[2].high,
        "low": CANDLES[2].low,
        "close": CANDLES[2].close,
        "volume": CANDLES[2].volume,
    }


def test_candles_of_another_market_or_timeframe_are_not_returned(client: TestClient) -> None:
    for params in (
        {"symbol": "LTC/BTC", "timeframe": "1m"},
        {"symbol": "ETH/BTC", "timeframe": "5m"},
    ):
        assert client.get("/api/v1/candles", params=params).json() == []


@pytest.mark.parametrize(
    ("params", "loc", "reason"),
    [
        ({"limit": 0}, ["query", "limit"], "greater than or equal to 1"),
        ({"limit": 5001}, ["query", "limit"], "less than or equal to 5000"),
        ({"start_ms": 20, "end_ms": 10}, ["query"], "start_ms (20) must be <= end_ms (10)"),
        ({"start_ms": -1}, ["query", "start_ms"], "greater than or equal to 0"),
        ({"timeframe": "7m"}, ["query", "timeframe"], "timeframe must be one of 1m, 3m, 5m"),
        ({"symbol": "ethbtc"}, ["query", "symbol"], "symbol must look like BASE/QUOTE"),
        ({"symbol": None}, ["query", "symbol"], "Field required"),
        ({"limt": 10}, ["query", "limt"], "Extra inputs are not permitted"),
    ],
)
def test_invalid_candle_query_is_422_with_the_reason(
    client: TestClient, params: dict[str, object], loc: list[str], reason: str
) -> None:
    query = {"symbol": "ETH/BTC", "timeframe": "1m", **params}
    response = client.get(
        "/api/v1/candles", params={k: v for k, v in query.items() if v is not None}
    )

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(error["loc"] == loc and reason in error["msg"] for error in errors), errors


@pytest.mark.parametrize(
    "path", ["/api/v1/signals", "/api/v1/orders", "/api/v1/fills", "/api/v1/positions"]
)
def test_trading_endpoints_reject_a_malformed_symbol(client: TestClient, path: str) -> None:
    response = client.get(path, params={"symbol": "ETH-BTC"})

    assert response.status_code == 422
    assert "BASE/QUOTE" in response.json()["detail"][0]["msg"]


# --- REST: indicators, trading, positions ----------------------------------------------------


def test_indicators_still_warming_up_are_null(client: TestClient, store: Store) -> None:
    asyncio.run(store.save_indicators([indicators()]))

    response = client.get("/api/v1/indicators", params={"symbol": "ETH/BTC", "timeframe": "1m"})

    assert response.status_code == 200
    (row,) = response.json()
    assert row["rsi"] is None and row["prev_stoch_k"] is None
    assert row["stoch_k"] == 50.0 and row["band_upper"] == 90.0


def test_signals_orders_fills_and_positions_read_back_what_was_stored(
    client: TestClient, store: Store
) -> None:
    asyncio.run(store.save_signals([signal()]))
    asyncio.run(store.record_execution(order=order(), fill=fill(), position=position()))

    signals = client.get("/api/v1/signals", params={"symbol": "ETH/BTC"}).json()
    orders = client.get("/api/v1/orders").json()
    fills = client.get("/api/v1/fills", params={"start_ms": fill().filled_at_ms}).json()
    positions = client.get("/api/v1/positions").json()

    assert [s["signal_id"] for s in signals] == [signal().signal_id]
    assert [(o["client_order_id"], o["side"], o["quantity"]) for o in orders] == [
        (order().client_order_id, "buy", 1.5)
    ]
    assert "status" in orders[0] and "id" not in orders[0]
    assert [(f["fill_id"], f["price"], f["fee"]) for f in fills] == [
        (fill().fill_id, 0.0891, 0.0001)
    ]
    assert positions == [
        {
            "exchange": "binance",
            "symbol": "ETH/BTC",
            "quantity": 1.5,
            "avg_price": 0.0891,
            "realized_pnl": 0.0,
            "updated_at_ms": fill().filled_at_ms,
            "cause_fill_id": fill().fill_id,
        }
    ]


def test_trading_endpoints_filter_by_symbol_and_time(client: TestClient, store: Store) -> None:
    asyncio.run(store.save_signals([signal()]))
    asyncio.run(store.record_execution(order=order(), fill=fill(), position=position()))
    after_everything = {"start_ms": fill().filled_at_ms + 1}

    for path in ("/api/v1/signals", "/api/v1/orders", "/api/v1/fills", "/api/v1/positions"):
        assert client.get(path, params={"symbol": "LTC/BTC"}).json() == [], path
    for path in ("/api/v1/signals", "/api/v1/orders", "/api/v1/fills"):
        assert client.get(path, params=after_everything).json() == [], path


# --- errors, metrics, health, page, OpenAPI --------------------------------------------------


class FailingStore(Store):
    """A store whose candle query fails the way a broken database driver would."""

    async def candles_between(self, **query: Any) -> list[CandleRow]:
        raise RuntimeError("password=hunter2 in a driver error")


def test_unexpected_failure_is_a_500_that_leaks_nothing(store: Store, bus: MemoryBus) -> None:
    app = create_app(settings(), bus=bus, store=FailingStore(store.engine))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/candles", params={"symbol": "ETH/BTC", "timeframe": "1m"})

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "hunter2" not in response.text and "Traceback" not in response.text


def http_requests(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("candlebus_http_requests_total", labels) or 0.0


def test_requests_are_counted_by_route_template_not_raw_path(client: TestClient) -> None:
    ok, invalid, unknown = (
        http_requests("/api/v1/candles", "200"),
        http_requests("/api/v1/candles", "422"),
        http_requests("unmatched", "404"),
    )

    client.get("/api/v1/candles", params={"symbol": "ETH/BTC", "timeframe": "1m"})
    client.get("/api/v1/candles", params={"symbol": "ETH/BTC", "timeframe": "1m", "limit": 0})
    client.get("/api/v1/no/such/path")

    assert http_requests("/api/v1/candles", "200") == ok + 1
    assert http_requests("/api/v1/candles", "422") == invalid + 1
    assert http_requests("unmatched", "404") == unknown + 1
    assert http_requests("/api/v1/no/such/path", "404") == 0


def test_health_is_ok_while_the_relay_runs(client: TestClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "websocket_clients": 0}


def test_root_serves_the_live_page(client: TestClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'new WebSocket(scheme + location.host + "/ws")' in response.text
    assert "src=" not in response.text  # no CDN: the page works offline


def test_openapi_documents_each_resource_with_its_response_model(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    for path, model in [
        ("/api/v1/candles", "Candle"),
        ("/api/v1/indicators", "Indicators"),
        ("/api/v1/signals", "Signal"),
        ("/api/v1/orders", "Order"),
        ("/api/v1/fills", "Fill"),
        ("/api/v1/positions", "Position"),
    ]:
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["items"]["$ref"] == f"#/components/schemas/{model}", path
        assert "422" in paths[path]["get"]["responses"], path


# --- WebSocket -------------------------------------------------------------------------------


def publish(client: TestClient, bus: MemoryBus, stream: Stream, message: Message) -> str:
    """Publish on the app's event loop, as another service would; return the entry id."""
    assert client.portal is not None
    entry_id: str = client.portal.call(bus.publish, stream, message)
    return entry_id


def subscribe(websocket: Any, channels: Sequence[str]) -> None:
    websocket.send_json({"op": "subscribe", "channels": list(channels)})
    assert websocket.receive_json() == {"type": "subscribed", "channels": sorted(channels)}


def receive_until(websocket: Any, stream: str, entry_id: str) -> list[dict[str, Any]]:
    """Return the frames received up to and including one entry's event."""
    frames = []
    while True:
        frames.append(websocket.receive_json())
        if frames[-1].get("stream") == stream and frames[-1].get("id") == entry_id:
            return frames


def test_websocket_client_receives_only_its_channels(client: TestClient, bus: MemoryBus) -> None:
    published: list[tuple[Stream, Message]] = [
        (Stream.CANDLES, candle("LTC/BTC")),
        (Stream.INDICATORS, indicators("ETH/BTC")),
        (Stream.ORDERS, order()),
        (Stream.CANDLES, candle("ETH/BTC")),
        (Stream.SIGNALS, signal()),
        (Stream.POSITIONS, position()),
    ]
    with client.websocket_connect("/ws") as filtered, client.websocket_connect("/ws") as observer:
        subscribe(filtered, ["candles:ETH/BTC", "signals"])
        subscribe(observer, EVERY_CHANNEL)

        ids = [publish(client, bus, stream, message) for stream, message in published]
        # Once the observer has every event, the hub has queued whatever the filtered client
        # would get; a marker after that bounds its frames.
        seen = {(frame["stream"], frame["id"]) for frame in (observer.receive_json() for _ in ids)}
        assert seen == {
            (stream.value, entry_id) for (stream, _), entry_id in zip(published, ids, strict=True)
        }
        marker = publish(client, bus, Stream.SIGNALS, signal("XRP/ETH"))
        frames = receive_until(filtered, "signals", marker)[:-1]

    received = sorted((f["channel"], f["stream"], f["id"]) for f in frames)
    assert received == sorted(
        [("candles:ETH/BTC", "candles", ids[3]), ("signals", "signals", ids[4])]
    )
    event = next(f for f in frames if f["stream"] == "candles")
    assert event["type"] == "event"
    assert event["data"]["symbol"] == "ETH/BTC" and event["data"]["close"] == candle().close


def test_unsubscribed_channel_gets_no_more_events(client: TestClient, bus: MemoryBus) -> None:
    with client.websocket_connect("/ws") as websocket:
        subscribe(websocket, ["signals", "orders"])
        websocket.send_json({"op": "unsubscribe", "channels": ["signals"]})
        assert websocket.receive_json() == {"type": "subscribed", "channels": ["orders"]}

        publish(client, bus, Stream.SIGNALS, signal())
        # Same hub call order as the relay sees them: a signal event would precede this order.
        first_order = publish(client, bus, Stream.ORDERS, order())
        frames = receive_until(websocket, "orders", first_order)

    assert [f["stream"] for f in frames] == ["orders"]


def test_bad_request_gets_an_error_and_the_connection_stays_open(client: TestClient) -> None:
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text("subscribe me")
        assert websocket.receive_json()["type"] == "error"
        websocket.send_json({"op": "subscribe", "channels": ["trades"]})
        error = websocket.receive_json()
        assert error["type"] == "error" and "unknown channel 'trades'" in error["reason"]

        subscribe(websocket, ["fills"])


def test_connected_clients_show_in_health(client: TestClient) -> None:
    with client.websocket_connect("/ws") as websocket:
        subscribe(websocket, ["fills"])
        assert client.get("/health").json()["websocket_clients"] == 1


# --- relay failure ---------------------------------------------------------------------------


class BreakableBus(MemoryBus):
    """A MemoryBus whose tail fails, like a lost Redis, once the test breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self._broken = asyncio.Event()

    async def break_tail(self) -> None:
        self._broken.set()

    async def tail(
        self, streams: Sequence[Stream], *, block_ms: int, count: int
    ) -> AsyncIterator[list[tuple[Stream, str, Message]]]:
        await self._broken.wait()
        raise ConnectionError("Redis went away")
        yield []  # an async generator, like the real tail


def test_relay_failure_closes_clients_fails_health_and_stops_the_app(store: Store) -> None:
    bus = BreakableBus()
    failures: list[BaseException] = []
    app = create_app(settings(), bus=bus, store=store, on_relay_failure=failures.append)

    client = TestClient(app).__enter__()
    try:
        assert client.get("/health").status_code == 200
        with client.websocket_connect("/ws") as websocket:
            subscribe(websocket, ["candles:*"])
            assert client.portal is not None
            client.portal.call(bus.break_tail)

            assert websocket.receive_json() == {"type": "dropped", "reason": "relay stopped"}
            with pytest.raises(WebSocketDisconnect) as closed:
                websocket.receive_json()
            assert closed.value.code == 1011

        assert [type(error) for error in failures] == [ConnectionError]
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "relay stopped"
    finally:
        # The relay's error is re-raised when the app shuts down.
        with pytest.raises(ConnectionError, match="Redis went away"):
            client.__exit__(None, None, None)


def test_relay_whose_tail_ends_is_a_failure_too(store: Store) -> None:
    class EndingBus(MemoryBus):
        async def tail(
            self, streams: Sequence[Stream], *, block_ms: int, count: int
        ) -> AsyncIterator[list[tuple[Stream, str, Message]]]:
            for _ in ():
                yield []

    failures: list[BaseException] = []
    app = create_app(settings(), bus=EndingBus(), store=store, on_relay_failure=failures.append)

    client = TestClient(app).__enter__()
    try:
        while not failures:
            client.get("/health")
        assert client.get("/health").status_code == 503
    finally:
        with pytest.raises(RuntimeError, match="tail ended"):
            client.__exit__(None, None, None)


def test_websocket_event_of_a_real_candle_is_its_wire_message(
    client: TestClient, bus: MemoryBus
) -> None:
    real: CandleClosed = CANDLES[-1]
    with client.websocket_connect("/ws") as websocket:
        subscribe(websocket, ["candles:*"])
        entry_id = publish(client, bus, Stream.CANDLES, real)
        (frame,) = receive_until(websocket, "candles", entry_id)

    assert frame["data"] == {
        "v": 1,
        "exchange": "binance",
        "symbol": "ETH/BTC",
        "timeframe": "1m",
        "open_time_ms": real.open_time_ms,
        "open": real.open,
        "high": real.high,
        "low": real.low,
        "close": real.close,
        "volume": real.volume,
        "source": "replay",
        "closed_at_ms": real.closed_at_ms,
    }


def test_default_relay_failure_hook_stops_the_process_as_sigterm_does() -> None:
    received: list[int] = []
    previous = set_signal_handler(SIGTERM, lambda signum, frame: received.append(signum))
    try:
        stop_process(ConnectionError("Redis went away"))
    finally:
        set_signal_handler(SIGTERM, previous)

    assert received == [SIGTERM]
