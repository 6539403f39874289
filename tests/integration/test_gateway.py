"""The gateway's REST API served by uvicorn over real Redis and Postgres, over real sockets
(the WebSocket side is tested in test_gateway_ws.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio
import sqlalchemy as sa
import uvicorn
from prometheus_client import REGISTRY

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.bus import RedisBus
from shared.messages import CandleClosed, Stream
from shared.store import (
    Store,
    TraderStateRow,
    TradingStep,
    create_engine,
    downgrade,
    upgrade,
)
from tests.fakes import (
    OPEN_TIME_MS,
    candle,
    fill,
    indicators_for,
    order,
    position,
    real_candles,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

READ_TOKEN = "read-token-of-the-gateway-integration-tests"
ADMIN_TOKEN = "admin-token-of-the-gateway-integration-tests"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}


class _Server(uvicorn.Server):
    """uvicorn that leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(
    redis_url: str, database_url: str, **overrides: Any
) -> AsyncIterator[tuple[str, RedisBus]]:
    """Serve a gateway on a free local port; yield its address and a second Redis connection."""
    gateway_bus, publisher = RedisBus(redis_url), RedisBus(redis_url)
    store = Store(create_engine(database_url))
    failures: list[BaseException] = []
    settings = GatewaySettings(
        _env_file=None, redis_url=redis_url, database_url=database_url, block_ms=100,
        api_tokens_read=READ_TOKEN, api_tokens_admin=ADMIN_TOKEN, **overrides,
    )  # fmt: skip
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


async def test_rest_reads_candles_stored_in_postgres(redis_url: str, database_url: str) -> None:
    candles = real_candles(50)
    store = Store(create_engine(database_url))
    try:
        await store.save_candles(candles)
    finally:
        await store.close()

    async with (
        serving(redis_url, database_url) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
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


async def saved(database_url: str, candles: list[CandleClosed]) -> None:
    store = Store(create_engine(database_url))
    try:
        await store.save_candles(candles)
    finally:
        await store.close()


def on_exchange(candles: list[CandleClosed], exchange: str) -> list[CandleClosed]:
    return [msgspec.structs.replace(c, exchange=exchange) for c in candles]


# --- pages rendered by Postgres --------------------------------------------------------------


async def test_postgres_renders_the_same_json_as_python_for_candles_and_indicators(
    database_url: str, tmp_path: Path
) -> None:
    candles = real_candles(60) + on_exchange(real_candles(60), "kraken")
    rows = indicators_for(real_candles(60))  # NaN while warming up: stored as NULL
    sqlite_url = "sqlite:///" + str(tmp_path / "same.db")
    upgrade(sqlite_url)
    pages = {}
    for url in (database_url, sqlite_url):
        store = Store(create_engine(url))
        try:
            await store.save_candles(candles)
            await store.save_indicators(rows)
            pages[url] = [
                await store.json_page(table, symbol="ETH/BTC", timeframe="1m", limit=limit)
                for table in ("candles", "indicators")
                for limit in (1, 25, 500)
            ]
        finally:
            await store.close()

    for from_postgres, from_python in zip(pages[database_url], pages[sqlite_url], strict=True):
        assert json.loads(from_postgres.body) == json.loads(from_python.body)
        assert (from_postgres.count, from_postgres.first, from_postgres.last) == (
            from_python.count, from_python.first, from_python.last,
        )  # fmt: skip
    everything = json.loads(pages[database_url][2].body)
    assert len(everything) == 120 and [row["exchange"] for row in everything[:2]] == [
        "binance", "kraken",
    ]  # fmt: skip
    assert everything[0]["close"] == candles[0].close  # the exact float, through text
    warming = json.loads(pages[database_url][5].body)[0]
    assert warming["rsi"] is None and list(warming)[-1] == "candle_closed_at_ms"


async def walk(http: httpx.AsyncClient, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Follow X-Next-Cursor from a first page to the last; return every page."""
    pages = []
    cursor = None
    while True:
        response = await http.get(
            "/api/v1/candles", params=params | ({"cursor": cursor} if cursor else {})
        )
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = response.headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in response.headers
            return pages
        assert (
            response.headers["link"].endswith('>; rel="next"')
            and cursor in response.headers["link"]
        )


async def test_cursor_pages_cover_every_candle_once_in_both_directions(
    redis_url: str, database_url: str
) -> None:
    binance = real_candles(50)
    candles = binance + on_exchange(binance, "kraken")  # ties in time on two exchanges
    await saved(database_url, candles)
    every = sorted((c.open_time_ms, c.exchange) for c in candles)
    market = {"symbol": "ETH/BTC", "timeframe": "1m", "limit": 7}

    async with (
        serving(redis_url, database_url) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
    ):
        backward = await walk(http, market)
        forward = await walk(http, market | {"start_ms": 0})
        one_exchange = await walk(http, market | {"exchange": "kraken", "limit": 20})

    def keys(pages: list[list[dict[str, Any]]]) -> list[tuple[int, str]]:
        return [(row["open_time_ms"], row["exchange"]) for page in pages for row in page]

    assert len(backward) == len(forward) == 15  # 100 rows, 7 a page
    for page in backward + forward:
        assert keys([page]) == sorted(keys([page]))  # each page oldest first
    assert sorted(keys(backward)) == every and len(set(keys(backward))) == 100
    assert keys(forward) == every
    assert keys([backward[0]]) == every[-7:]  # the first page is the latest
    assert [len(page) for page in one_exchange] == [20, 20, 10]
    assert {exchange for _, exchange in keys(one_exchange)} == {"kraken"}


async def test_a_cursor_that_was_not_issued_is_422(redis_url: str, database_url: str) -> None:
    async with (
        serving(redis_url, database_url) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
    ):
        response = await http.get(
            "/api/v1/candles", params={"symbol": "ETH/BTC", "timeframe": "1m", "cursor": "bm9wZQ"}
        )

    assert response.status_code == 422
    assert "cursor is not one this API returned" in response.text


# --- the response cache ----------------------------------------------------------------------


def cache_count(kind: str, result: str) -> float:
    labels = {"kind": kind, "result": result}
    return REGISTRY.get_sample_value("candlebus_response_cache_total", labels) or 0.0


async def test_cached_candles_are_served_until_a_new_candle_event_then_reread(
    redis_url: str, database_url: str
) -> None:
    candles = real_candles(30)
    await saved(database_url, candles[:20])
    params = {"symbol": "ETH/BTC", "timeframe": "1m", "limit": 5}

    async with (
        serving(redis_url, database_url) as (address, publisher),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
    ):
        misses = cache_count("candles", "miss")
        first = (await http.get("/api/v1/candles", params=params)).json()
        hits = cache_count("candles", "local_hit")
        second = (await http.get("/api/v1/candles", params=params)).json()
        assert cache_count("candles", "local_hit") == hits + 1
        assert cache_count("candles", "miss") == misses + 1

        # As the collector does: store, then publish. The gateway must not serve the old page.
        await saved(database_url, candles[20:21])
        await publisher.publish(Stream.CANDLES, candles[20])

        async def latest() -> int:
            response = await http.get("/api/v1/candles", params=params)
            return int(response.json()[-1]["open_time_ms"])

        deadline = asyncio.get_running_loop().time() + 5
        while await latest() != candles[20].open_time_ms:
            assert asyncio.get_running_loop().time() < deadline, "the cache never let go"
            await asyncio.sleep(0.02)

    assert first == second
    assert [row["open_time_ms"] for row in first] == [c.open_time_ms for c in candles[15:20]]


async def test_replicas_share_cached_pages_through_redis(redis_url: str, database_url: str) -> None:
    candles = real_candles(10)
    await saved(database_url, candles)
    params = {"symbol": "ETH/BTC", "timeframe": "1m", "limit": 10}

    async with (
        serving(redis_url, database_url) as (first_address, publisher),
        serving(redis_url, database_url) as (second_address, _),
        httpx.AsyncClient(base_url=f"http://{first_address}", headers=READ) as first,
        httpx.AsyncClient(base_url=f"http://{second_address}", headers=READ) as second,
    ):
        # After the same event both replicas are on the same generation, hence the same keys.
        await publisher.publish(Stream.CANDLES, candles[-1])
        await asyncio.sleep(0.5)
        from_first = await first.get("/api/v1/candles", params=params)
        redis_hits = cache_count("candles", "redis_hit")
        from_second = await second.get("/api/v1/candles", params=params)

    assert cache_count("candles", "redis_hit") == redis_hits + 1
    assert from_second.content == from_first.content


# --- market status, PnL ----------------------------------------------------------------------


async def test_symbols_report_the_newest_candle_its_source_and_staleness(
    redis_url: str, database_url: str
) -> None:
    fresh = msgspec.structs.replace(
        candle("LTC/BTC"), open_time_ms=(int(time.time()) // 60 - 1) * 60_000
    )
    await saved(database_url, [*real_candles(20), fresh])

    async with (
        serving(redis_url, database_url) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
    ):
        every = (await http.get("/api/v1/symbols")).json()
        one = (await http.get("/api/v1/symbols", params={"symbol": "LTC/BTC"})).json()

    assert [(m["symbol"], m["stale"]) for m in every] == [("ETH/BTC", True), ("LTC/BTC", False)]
    eth = every[0]
    assert eth["last_open_time_ms"] == real_candles(20)[-1].open_time_ms
    assert eth["last_close"] == real_candles(20)[-1].close and eth["source"] == "replay"
    assert eth["staleness_s"] > 365 * 24 * 3600  # a 2018 candle
    assert [{**m, "staleness_s": 0} for m in one] == [{**every[1], "staleness_s": 0}]
    assert one[0]["staleness_s"] < 180 and not one[0]["paused"]


async def test_pnl_marks_open_positions_at_the_newest_close_and_replays_fills_for_equity(
    redis_url: str, database_url: str
) -> None:
    candles = real_candles(5)
    store = Store(create_engine(database_url))
    try:
        await store.save_candles(candles)
        await store.record_execution(order=order(), fill=fill(), position=position())
        snapshot = json.dumps({"initial_equity": 1_000.0})
        await store.save_trading_step(
            TradingStep(
                orders=(),
                fills=(),
                positions=(),
                decisions=(),
                state=TraderStateRow("paper", snapshot, "0-0", 1),
            )
        )
    finally:
        await store.close()

    async with (
        serving(redis_url, database_url) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
    ):
        summary = (await http.get("/api/v1/pnl")).json()
        curve = (await http.get("/api/v1/pnl/equity")).json()

    last = candles[-1].close
    unrealized = position().quantity * (last - position().avg_price)
    assert summary["initial_equity"] == 1_000.0 and summary["fills"] == 1
    assert summary["fees"] == pytest.approx(fill().fee)
    assert summary["markets"][0]["last_price"] == last
    assert summary["unrealized_pnl"] == pytest.approx(unrealized)
    assert summary["equity"] == pytest.approx(1_000.0 + summary["realized_pnl"] + unrealized)
    assert summary["open_positions"] == 1
    (point,) = curve
    assert point["time_ms"] == fill().filled_at_ms
    assert point["realized_pnl"] == pytest.approx(-fill().fee)  # a buy: only its fee so far
    assert point["equity"] == pytest.approx(1_000.0 - fill().fee)


# --- readiness, limits, tokens ---------------------------------------------------------------


async def test_ready_checks_redis_postgres_and_consumer_lag(
    redis_url: str, database_url: str
) -> None:
    async with (
        serving(redis_url, database_url, ready_max_lag_entries=3) as (address, publisher),
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        ready = await http.get("/ready")
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.xgroup_create(Stream.CANDLES.value, "indicators", id="0", mkstream=True)
            for minute in range(5):
                await publisher.publish(Stream.CANDLES, candle(open_time_ms=minute * 60_000))
        finally:
            await client.aclose()
        lagging = await http.get("/ready")

    assert ready.status_code == 200, ready.text
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {
        "relay": True, "redis": True, "postgres": True, "stream_lag": True,
    }  # fmt: skip
    assert lagging.status_code == 503
    (lag,) = [c for c in lagging.json()["checks"] if c["name"] == "stream_lag"]
    assert not lag["ok"] and "candles/indicators 5" in lag["detail"]


async def test_ready_is_503_when_postgres_is_gone(redis_url: str) -> None:
    gone = "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"
    async with (
        serving(redis_url, gone) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        response = await http.get("/ready")

    assert response.status_code == 503
    (check,) = [c for c in response.json()["checks"] if c["name"] == "postgres"]
    assert not check["ok"] and "OperationalError" in check["detail"]
    assert "127.0.0.1:1" not in response.text


async def test_over_the_rate_limit_is_429_with_retry_after_and_probes_are_exempt(
    redis_url: str, database_url: str
) -> None:
    params = {"symbol": "ETH/BTC", "timeframe": "1m"}
    async with (
        serving(redis_url, database_url, rate_limit_per_s=0.5, rate_limit_burst=3) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
    ):
        answers = [(await http.get("/api/v1/candles", params=params)).status_code for _ in range(5)]
        refused = await http.get("/api/v1/candles", params=params)
        probes = [(await http.get(path)).status_code for path in ("/health", "/ready") * 3]
        # Another client (no token: by address) has a budget of its own.
        anonymous = await http.get("/api/v1/candles", params=params, headers={"Authorization": ""})

    assert answers == [200, 200, 200, 429, 429]
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 2
    assert "rate limit exceeded" in refused.json()["detail"]
    assert probes == [200] * 6
    assert anonymous.status_code == 401


async def test_request_bodies_over_the_limit_are_413_declared_or_streamed(
    redis_url: str, database_url: str
) -> None:
    body = json.dumps({"symbols": ["ETH/BTC"], "config": {"pad": "x" * 5_000}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1_000):
            yield body[start : start + 1_000]

    async with (
        serving(redis_url, database_url, max_request_bytes=4_096) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}", headers=READ) as http,
    ):
        declared = await http.post("/api/v1/backtests", content=body)
        streamed = await http.post("/api/v1/backtests", content=chunks())
        small = await http.post("/api/v1/backtests", json={"symbols": ["ETH/BTC"], "config": {}})

    assert declared.status_code == 413 and streamed.status_code == 413
    assert "larger than 4096 bytes" in declared.json()["detail"]
    assert small.status_code == 202


async def test_cors_allows_listed_origins_only_and_never_credentials(
    redis_url: str, database_url: str
) -> None:
    origin = "https://dashboard.example.org"
    async with (
        serving(redis_url, database_url, cors_origins=origin) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        preflight = {
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        listed = await http.options("/api/v1/candles", headers={"Origin": origin, **preflight})
        other = await http.options(
            "/api/v1/candles", headers={"Origin": "https://elsewhere.example", **preflight}
        )

    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-credentials" not in listed.headers
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


async def test_every_api_route_needs_a_token(redis_url: str, database_url: str) -> None:
    async with (
        serving(redis_url, database_url) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        schema = (await http.get("/openapi.json")).json()
        refused = {}
        for path, operations in schema["paths"].items():
            if not path.startswith("/api/v1"):
                continue
            for method in operations:
                url = path.replace("{job_id}", "x")
                refused[(method, path)] = (await http.request(method, url)).status_code

    assert len(refused) >= 12
    assert set(refused.values()) == {401}, refused


async def test_latest_candles_read_the_covering_index_only_and_0005_keeps_it_visible(
    database_url: str,
) -> None:
    candles = real_candles(3_000)
    await saved(
        database_url, candles + [msgspec.structs.replace(c, symbol="XMR/BTC") for c in candles]
    )
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("VACUUM ANALYZE candles"))
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    sa.text(
                        "EXPLAIN (ANALYZE) SELECT exchange, open_time_ms, open, high, low, close, "
                        "volume FROM candles WHERE symbol = 'ETH/BTC' AND timeframe = '1m' "
                        "ORDER BY open_time_ms DESC, exchange DESC LIMIT 1440"
                    )
                )
            )
            options = conn.execute(
                sa.text("SELECT reloptions FROM pg_class WHERE relname = 'candles'")
            ).scalar_one()
        downgrade(database_url, "0004")
        with engine.connect() as conn:
            reset = conn.execute(
                sa.text("SELECT reloptions FROM pg_class WHERE relname = 'candles'")
            ).scalar_one()
    finally:
        engine.dispose()

    assert "Index Only Scan using ix_candles_symbol_timeframe_time" in plan, plan
    assert "Heap Fetches: 0" in plan, plan
    assert set(options) == {
        "autovacuum_vacuum_insert_scale_factor=0",
        "autovacuum_vacuum_insert_threshold=50000",
    }
    assert reset is None
