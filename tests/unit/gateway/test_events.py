"""WebSocket /ws in the app over MemoryBus: tokens, filtering, batched frames, resuming, relay
failures, and the page that uses it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect

from services.gateway.app import create_app
from services.gateway.routes.page import ASSETS
from services.gateway.settings import GatewaySettings
from shared.bus import MemoryBus
from shared.messages import CandleClosed, Message, Stream
from shared.store import Store, create_engine, upgrade
from tests.fakes import candle, indicators, order, position, real_candles, signal

# A test that waits for a frame that never comes fails here instead of hanging.
pytestmark = pytest.mark.timeout(30)

READ_TOKEN = "read-token-for-the-websocket-tests-01"
ADMIN_TOKEN = "admin-token-for-the-websocket-tests-02"
WS = f"/ws?token={READ_TOKEN}"
EVERY_CHANNEL = ["candles:*", "indicators:*", "signals", "orders", "fills", "positions"]


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "block_ms": 20,
        "ws_queue_size": 100,
        "ws_max_channels": 10,
        "ws_heartbeat_s": 60.0,  # out of the way, except where a test wants heartbeats
        "api_tokens_read": READ_TOKEN,
        "api_tokens_admin": ADMIN_TOKEN,
        **overrides,
    }
    return GatewaySettings(_env_file=None, **values)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = "sqlite:///" + str(tmp_path / "gateway.db")
    upgrade(url)
    store = Store(create_engine(url))
    yield store
    store.engine.dispose()


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
def client(store: Store, bus: MemoryBus) -> Iterator[TestClient]:
    failures: list[BaseException] = []
    app = create_app(settings(), bus=bus, store=store, on_relay_failure=failures.append)
    with TestClient(app) as client:
        yield client
    assert failures == []


def publish(client: TestClient, bus: MemoryBus, stream: Stream, message: Message) -> str:
    """Publish on the app's event loop, as another service would; return the entry id."""
    assert client.portal is not None
    entry_id: str = client.portal.call(bus.publish, stream, message)
    return entry_id


def publish_many(
    client: TestClient, bus: MemoryBus, stream: Stream, messages: Sequence[Message]
) -> list[str]:
    assert client.portal is not None
    ids: list[str] = client.portal.call(bus.publish_many, stream, messages)
    return ids


def subscribe(
    websocket: Any, channels: Sequence[str], since: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Subscribe and return the ack (after checking it lists the channels)."""
    request: dict[str, Any] = {"op": "subscribe", "channels": list(channels)}
    if since is not None:
        request["since"] = dict(since)
    websocket.send_json(request)
    ack: dict[str, Any] = websocket.receive_json()
    assert ack["type"] == "subscribed" and set(channels) <= set(ack["channels"]), ack
    return ack


def receive_until(websocket: Any, stream: str, entry_id: str) -> list[dict[str, Any]]:
    """Return the events (and other frames) received up to one entry's event, in order."""
    out: list[dict[str, Any]] = []
    while True:
        frame = websocket.receive_json()
        if frame["type"] != "events":
            out.append(frame)
            continue
        for event in frame["events"]:
            out.append(event)
            if event["stream"] == stream and event["id"] == entry_id:
                return out


# --- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/ws?token=not-a-token-anyone-was-given-at-all"])
def test_websocket_without_a_known_token_is_closed_with_policy_violation(
    client: TestClient, path: str
) -> None:
    with client.websocket_connect(path) as websocket, pytest.raises(WebSocketDisconnect) as closed:
        websocket.receive_json()

    assert closed.value.code == 1008
    assert closed.value.reason == "missing or unknown API token"
    assert client.get("/health").json()["websocket_clients"] == 0


def test_websocket_takes_the_token_from_the_authorization_header(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with client.websocket_connect("/ws", headers=headers) as websocket:
        subscribe(websocket, ["fills"])
        assert client.get("/health").json()["websocket_clients"] == 1


# --- channels --------------------------------------------------------------------------------


def test_websocket_client_receives_only_its_channels(client: TestClient, bus: MemoryBus) -> None:
    published: list[tuple[Stream, Message]] = [
        (Stream.CANDLES, candle("LTC/BTC")),
        (Stream.INDICATORS, indicators("ETH/BTC")),
        (Stream.ORDERS, order()),
        (Stream.CANDLES, candle("ETH/BTC")),
        (Stream.SIGNALS, signal()),
        (Stream.POSITIONS, position()),
    ]
    with client.websocket_connect(WS) as filtered, client.websocket_connect(WS) as observer:
        subscribe(filtered, ["candles:ETH/BTC", "signals"])
        subscribe(observer, EVERY_CHANNEL)

        ids = [publish(client, bus, stream, message) for stream, message in published]
        # Once the observer has every event, the hub has queued whatever the filtered client
        # would get; a marker after that bounds its events.
        seen = receive_until(observer, "positions", ids[-1])
        assert {(e["stream"], e["id"]) for e in seen} == {
            (stream.value, entry_id) for (stream, _), entry_id in zip(published, ids, strict=True)
        }
        marker = publish(client, bus, Stream.SIGNALS, signal("XRP/ETH"))
        got = receive_until(filtered, "signals", marker)[:-1]

    assert [(e["channel"], e["stream"], e["id"]) for e in got] == [
        ("candles:ETH/BTC", "candles", ids[3]),
        ("signals", "signals", ids[4]),
    ]
    assert got[0]["data"]["symbol"] == "ETH/BTC" and got[0]["data"]["close"] == candle().close


def test_event_frames_go_out_through_the_server_s_own_send(
    client: TestClient, bus: MemoryBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub sends frames with the send the server passed in, past Starlette's layers; the
    route's own messages (accept, a farewell, close) still go through `WebSocket.send`."""
    through_starlette: list[str] = []
    starlette_send = StarletteWebSocket.send

    async def counting(self: StarletteWebSocket, message: Any) -> None:
        through_starlette.append(message["type"])
        await starlette_send(self, message)

    monkeypatch.setattr(StarletteWebSocket, "send", counting)
    with client.websocket_connect(WS) as websocket:
        subscribe(websocket, ["signals"])
        ids = [publish(client, bus, Stream.SIGNALS, signal(f"S{i}/BTC")) for i in range(5)]
        got = receive_until(websocket, "signals", ids[-1])

    assert [event["id"] for event in got] == ids
    assert "websocket.send" not in through_starlette
    assert through_starlette[0] == "websocket.accept"


def test_unsubscribed_channel_gets_no_more_events(client: TestClient, bus: MemoryBus) -> None:
    with client.websocket_connect(WS) as websocket:
        subscribe(websocket, ["signals", "orders"])
        websocket.send_json({"op": "unsubscribe", "channels": ["signals"]})
        ack = websocket.receive_json()
        assert ack["type"] == "subscribed" and ack["channels"] == ["orders"]

        publish(client, bus, Stream.SIGNALS, signal())
        # Same hub call order as the relay sees them: a signal event would precede this order.
        first_order = publish(client, bus, Stream.ORDERS, order())
        got = receive_until(websocket, "orders", first_order)

    assert [e["stream"] for e in got] == ["orders"]


def test_bad_request_gets_an_error_and_the_connection_stays_open(client: TestClient) -> None:
    with client.websocket_connect(WS) as websocket:
        websocket.send_text("subscribe me")
        assert websocket.receive_json()["type"] == "error"
        websocket.send_json({"op": "subscribe", "channels": ["trades"]})
        error = websocket.receive_json()
        assert error["type"] == "error" and "unknown channel 'trades'" in error["reason"]

        subscribe(websocket, ["fills"])


def test_websocket_event_of_a_real_candle_is_its_wire_message(
    client: TestClient, bus: MemoryBus
) -> None:
    real: CandleClosed = real_candles(1)[0]
    with client.websocket_connect(WS) as websocket:
        subscribe(websocket, ["candles:*"])
        entry_id = publish(client, bus, Stream.CANDLES, real)
        (event,) = receive_until(websocket, "candles", entry_id)

    assert event["data"] == {
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


# --- batching, heartbeats, resuming ----------------------------------------------------------


def test_entries_published_together_arrive_in_few_frames_in_order(
    store: Store, bus: MemoryBus
) -> None:
    app = create_app(settings(ws_batch_max=40), bus=bus, store=store)
    messages = [candle("ETH/BTC", 60_000 * n) for n in range(100)]
    with TestClient(app) as client, client.websocket_connect(WS) as websocket:
        subscribe(websocket, ["candles:ETH/BTC"])
        ids = publish_many(client, bus, Stream.CANDLES, messages)
        frames: list[list[str]] = []
        while sum(map(len, frames)) < len(ids):
            frame = websocket.receive_json()
            assert frame["type"] == "events"
            frames.append([event["id"] for event in frame["events"]])

    assert [entry_id for frame in frames for entry_id in frame] == ids
    assert all(len(frame) <= 40 for frame in frames)
    assert len(frames) <= 4  # 100 events in at most 4 frames (batches of up to 40)


def test_heartbeats_carry_stream_rates_and_the_client_s_last_ids(
    store: Store, bus: MemoryBus
) -> None:
    app = create_app(settings(ws_heartbeat_s=0.05), bus=bus, store=store)
    with TestClient(app) as client, client.websocket_connect(WS) as websocket:
        subscribe(websocket, ["signals"])
        entry_id = publish(client, bus, Stream.SIGNALS, signal())
        beats = []
        while not beats or beats[-1]["ids"].get("signals") != entry_id:
            frame = websocket.receive_json()
            if frame["type"] == "heartbeat":
                beats.append(frame)

    assert set(beats[-1]["rates"]) == {
        "candles",
        "indicators",
        "signals",
        "orders",
        "fills",
        "positions",
    }
    assert any(beat["rates"]["signals"] > 0 for beat in beats)
    assert beats[-1]["time_ms"] > 1_600_000_000_000


def test_client_reconnecting_with_its_last_ids_gets_what_it_missed_then_live_events(
    client: TestClient, bus: MemoryBus
) -> None:
    with client.websocket_connect(WS) as websocket:
        ack = subscribe(websocket, ["candles:ETH/BTC", "signals"])
        last = dict(ack["ids"])  # where this client stands on each stream
        first = publish(client, bus, Stream.CANDLES, candle("ETH/BTC", 60_000))
        (event,) = receive_until(websocket, "candles", first)
        last[event["stream"]] = event["id"]

    missed = [
        publish(client, bus, Stream.CANDLES, candle(symbol, 60_000 * n))
        for n in range(2, 6)
        for symbol in ("ETH/BTC", "LTC/BTC")
    ]
    missed_signal = publish(client, bus, Stream.SIGNALS, signal())

    with client.websocket_connect(WS) as websocket:
        resumed_ack = subscribe(websocket, ["candles:ETH/BTC", "signals"], since=last)
        live = publish(client, bus, Stream.CANDLES, candle("ETH/BTC", 60_000 * 9))
        got = receive_until(websocket, "candles", live)

    assert resumed_ack["ids"] == {}  # both streams are being resumed: no ids yet
    got_events = [e for e in got if "type" not in e]
    candles = [e["id"] for e in got_events if e["stream"] == "candles"]
    assert candles == [*missed[::2], live]  # ETH only, each once, in order, then live
    assert [e["id"] for e in got_events if e["stream"] == "signals"] == [missed_signal]
    resumed = {frame["stream"]: frame for frame in got if frame.get("type") == "resumed"}
    assert resumed["candles"] == {"type": "resumed", "stream": "candles", "count": 4, "gap": False}
    assert resumed["signals"]["count"] == 1


# --- relay failure ---------------------------------------------------------------------------


class BreakableBus(MemoryBus):
    """A MemoryBus whose tail fails, like a lost Redis, once the test breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self._broken = asyncio.Event()

    async def break_tail(self) -> None:
        self._broken.set()

    async def tail(
        self,
        streams: Sequence[Stream],
        *,
        block_ms: int,
        count: int,
        after: Mapping[Stream, str] | None = None,
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
        with client.websocket_connect(WS) as websocket:
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
            self,
            streams: Sequence[Stream],
            *,
            block_ms: int,
            count: int,
            after: Mapping[Stream, str] | None = None,
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


# --- the page --------------------------------------------------------------------------------


def test_root_serves_the_dashboard_with_nothing_fetched_from_elsewhere(client: TestClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert '<canvas id="price"' in page and '<canvas id="stochrsi"' in page
    # No CDN: every script, stylesheet and icon is one of the gateway's own assets.
    linked = re.findall(r"(?:src|href)=\"([^\"]+)\"", page)
    assert sorted(linked) == [
        "/assets/dashboard.css",
        "/assets/dashboard.js",
        "/assets/favicon.svg",
    ]
    script = client.get("/assets/dashboard.js")
    charts = client.get("/assets/charts.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "/ws?token=" in script.text and "/api/v1/controls/kill-switch" in script.text
    assert 'from "./charts.js"' in script.text and "export function drawPrice" in charts.text
    for text in (page, script.text, charts.text, client.get("/assets/dashboard.css").text):
        assert re.search(r"https?://", text) is None


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_every_dashboard_asset_is_served_with_its_type(client: TestClient, name: str) -> None:
    response = client.get(f"/assets/{name}")

    assert response.status_code == 200 and response.content
    assert response.headers["content-type"] == ASSETS[name]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["index.html", "..%2Fsettings.py", "nothing.js"])
def test_only_the_dashboard_assets_are_served(client: TestClient, name: str) -> None:
    assert client.get(f"/assets/{name}").status_code == 404
