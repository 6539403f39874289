"""The gateway app over MemoryBus and a SQLite store: REST reads, validation and errors."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from signal import SIGTERM
from signal import signal as set_signal_handler
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.gateway.app import create_app, stop_process
from services.gateway.cache import ALL_SYMBOLS, Kind
from services.gateway.settings import GatewaySettings
from services.indicators.engine import IndicatorParams, compute_frame
from shared.bus import MemoryBus
from shared.messages import Stream
from shared.store import Store, create_engine, upgrade
from shared.store_pages import JsonPage
from tests.fakes import (
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


READ_TOKEN = "read-token-for-the-gateway-tests-0001"
ADMIN_TOKEN = "admin-token-for-the-gateway-tests-0002"
READ_HEADERS = {"Authorization": f"Bearer {READ_TOKEN}"}


def settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        _env_file=None,
        block_ms=20,
        ws_queue_size=100,
        ws_max_channels=10,
        api_tokens_read=READ_TOKEN,
        api_tokens_admin=ADMIN_TOKEN,
        **overrides,
    )


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
    with TestClient(app, headers=READ_HEADERS) as client:
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

    async def json_page(self, table: Any, **query: Any) -> JsonPage:
        raise RuntimeError("password=hunter2 in a driver error")


def test_unexpected_failure_is_a_500_that_leaks_nothing(store: Store, bus: MemoryBus) -> None:
    app = create_app(settings(), bus=bus, store=FailingStore(store.engine))
    with TestClient(app, raise_server_exceptions=False, headers=READ_HEADERS) as client:
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


# --- relay failure hook ------------------------------------------------------------------
# (the WebSocket tests, relay failures included, are in test_events.py)


def test_default_relay_failure_hook_stops_the_process_as_sigterm_does() -> None:
    received: list[int] = []
    previous = set_signal_handler(SIGTERM, lambda signum, frame: received.append(signum))
    try:
        stop_process(ConnectionError("Redis went away"))
    finally:
        set_signal_handler(SIGTERM, previous)

    assert received == [SIGTERM]


# --- tokens, market status, computed indicators, pages, PnL, readiness -----------------------


def test_every_api_route_needs_a_token_and_the_probes_do_not(store: Store, bus: MemoryBus) -> None:
    app = create_app(settings(), bus=bus, store=store)
    with TestClient(app) as anonymous:
        paths = anonymous.get("/openapi.json").json()["paths"]
        refused = {
            (method, path): anonymous.request(method, path.replace("{job_id}", "x")).status_code
            for path, operations in paths.items()
            if path.startswith("/api/v1")
            for method in operations
        }
        probes = [anonymous.get(path).status_code for path in ("/health", "/ready", "/")]

    assert len(refused) >= 12 and set(refused.values()) == {401}, refused
    assert probes == [200, 200, 200]


def test_symbols_show_each_market_with_its_newest_candle(client: TestClient) -> None:
    (market,) = client.get("/api/v1/symbols").json()

    newest = CANDLES[-1]
    assert market["symbol"] == "ETH/BTC" and market["timeframe"] == "1m"
    assert market["last_open_time_ms"] == newest.open_time_ms
    assert market["last_close_time_ms"] == newest.open_time_ms + 60_000
    assert market["last_close"] == newest.close and market["source"] == "replay"
    assert market["stale"] and not market["paused"]
    assert client.get("/api/v1/symbols", params={"timeframe": "5m"}).json() == []


def test_computed_indicators_equal_a_batch_pass_over_the_stored_candles(
    client: TestClient,
) -> None:
    market = {"symbol": "ETH/BTC", "timeframe": "1m", "limit": 50}
    default = client.get("/api/v1/indicators/computed", params=market)
    faster = client.get("/api/v1/indicators/computed", params=market | {"rsi_period": 7})

    frame = compute_frame(
        [c.open_time_ms for c in CANDLES], [c.high for c in CANDLES], [c.low for c in CANDLES],
        [c.close for c in CANDLES], timeframe_ms=60_000, params=IndicatorParams(),
    )  # fmt: skip
    assert default.status_code == 200, default.text
    rows = default.json()
    assert [row["open_time_ms"] for row in rows] == [c.open_time_ms for c in CANDLES[-50:]]
    for name in ("rsi", "stoch_k", "band_lower", "prev_stoch_k", "atr"):
        expected = [None if math.isnan(v) else v for v in frame[name][-50:].tolist()]
        assert [row[name] for row in rows] == pytest.approx(expected), name
    assert [row["rsi"] for row in faster.json()] != [row["rsi"] for row in rows]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"rsi_period": 0}, "greater than or equal to 1"),
        ({"sensitivity": 0}, "greater than 0"),
        ({"atr_period": 1001}, "less than or equal to 1000"),
        ({"cursor": "abc"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_indicator_parameters_are_422(
    client: TestClient, params: dict[str, object], reason: str
) -> None:
    query = {"symbol": "ETH/BTC", "timeframe": "1m", **params}
    response = client.get("/api/v1/indicators/computed", params=query)

    assert response.status_code == 422 and reason in response.text


def test_cursor_pages_walk_back_over_every_candle(client: TestClient) -> None:
    seen: list[int] = []
    params: dict[str, object] = {"symbol": "ETH/BTC", "timeframe": "1m", "limit": 50}
    while True:
        response = client.get("/api/v1/candles", params=params)
        seen = open_times(response) + seen
        if "x-next-cursor" not in response.headers:
            break
        params["cursor"] = response.headers["x-next-cursor"]

    assert seen == [c.open_time_ms for c in CANDLES]


def test_pnl_without_a_saved_trader_has_no_equity(client: TestClient, store: Store) -> None:
    asyncio.run(store.record_execution(order=order(), fill=fill(), position=position()))

    summary = client.get("/api/v1/pnl").json()
    curve = client.get("/api/v1/pnl/equity").json()

    assert summary["initial_equity"] is None and summary["equity"] is None
    assert summary["open_positions"] == 1 and summary["fills"] == 1
    assert [point["equity"] for point in curve] == [None]


def test_ready_on_the_in_process_bus_and_sqlite(client: TestClient) -> None:
    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_a_repeated_read_comes_from_the_cache_until_an_event_and_never_without_a_token(
    client: TestClient, store: Store, bus: MemoryBus
) -> None:
    before = client.get("/api/v1/positions").json()
    # Stored behind the gateway's back (no event): the cached answer stands.
    asyncio.run(store.record_execution(order=order(), fill=fill(), position=position()))
    cached = client.get("/api/v1/positions")
    anonymous = client.get("/api/v1/positions", headers={"Authorization": ""})
    stranger = client.get("/api/v1/positions", headers={"Authorization": "Bearer unknown"})

    assert client.portal is not None
    entry_id = client.portal.call(bus.publish, Stream.POSITIONS, position())
    deadline = time.monotonic() + 5
    while client.app.state.cache.generation(Kind.POSITIONS, ALL_SYMBOLS) != entry_id:
        assert time.monotonic() < deadline, "the cache never heard the event"
        time.sleep(0.01)
    after = client.get("/api/v1/positions").json()

    assert before == [] and cached.json() == [] and cached.status_code == 200
    assert anonymous.status_code == stranger.status_code == 401
    assert [row["symbol"] for row in after] == ["ETH/BTC"]
    assert http_requests("/api/v1/positions", "200") >= 3  # the fast path keeps the label
