"""Hub: channel parsing, routing of stream entries to subscribers, and dropping slow clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.gateway.hub import (
    SLOW_CONSUMER,
    ChannelError,
    Closing,
    Hub,
    Subscriber,
    parse_channel,
)
from shared.messages import Message, Stream
from tests.fakes import candle, indicators, order, signal

EVERY_CHANNEL = ("candles:*", "indicators:*", "signals", "orders", "fills", "positions")


def drain(subscriber: Subscriber) -> list[Any]:
    """Return everything queued for a client, JSON frames decoded."""
    out: list[Any] = []
    while not subscriber.queue.empty():
        item = subscriber.queue.get_nowait()
        out.append(item if isinstance(item, Closing) else json.loads(item))
    return out


def subscribed(hub: Hub, *channels: str) -> Subscriber:
    client = hub.connect()
    hub.subscribe(client, channels)
    return client


def dropped_count() -> float:
    value = REGISTRY.get_sample_value(
        "candlebus_websocket_dropped_total", {"reason": "slow_consumer"}
    )
    return value or 0.0


@pytest.mark.parametrize(
    "channel",
    [
        "candles:ETH/BTC",
        "candles:*",
        "indicators:XRP/ETH",
        "indicators:*",
        "signals",
        "orders",
        "fills",
        "positions",
    ],
)
def test_served_channels_parse_unchanged(channel: str) -> None:
    assert parse_channel(channel) == channel


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        ("trades", "unknown channel"),
        ("candles", "needs a symbol"),
        ("candles:", "needs a symbol"),
        ("candles:eth/btc", "needs a symbol"),
        ("candles:ETHBTC", "needs a symbol"),
        ("signals:ETH/BTC", "takes no symbol"),
        ("orders:", "takes no symbol"),
    ],
)
def test_unserved_channels_are_rejected_with_the_reason(channel: str, reason: str) -> None:
    with pytest.raises(ChannelError, match=reason):
        parse_channel(channel)


def test_candle_reaches_its_symbol_and_wildcard_subscribers_only() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    eth = subscribed(hub, "candles:ETH/BTC")
    every = subscribed(hub, "candles:*")
    ltc = subscribed(hub, "candles:LTC/BTC")
    eth_indicators = subscribed(hub, "indicators:ETH/BTC")

    assert hub.publish(Stream.CANDLES, "5-0", candle("ETH/BTC")) == 2

    assert [frame["channel"] for frame in drain(eth)] == ["candles:ETH/BTC"]
    assert [frame["channel"] for frame in drain(every)] == ["candles:ETH/BTC"]
    assert drain(ltc) == [] and drain(eth_indicators) == []


def test_client_on_a_symbol_and_the_wildcard_gets_each_event_once() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = subscribed(hub, "candles:ETH/BTC", "candles:*")

    hub.publish(Stream.CANDLES, "5-0", candle())

    assert len(drain(client)) == 1


@pytest.mark.parametrize(
    ("stream", "message", "channel"),
    [
        (Stream.SIGNALS, signal(), "signals"),
        (Stream.ORDERS, order(), "orders"),
        (Stream.INDICATORS, indicators("XRP/ETH"), "indicators:XRP/ETH"),
    ],
)
def test_each_stream_is_routed_to_its_own_channel(
    stream: Stream, message: Message, channel: str
) -> None:
    hub = Hub(queue_size=10, max_channels=20)
    listening = subscribed(hub, channel)
    others = subscribed(hub, *(c for c in EVERY_CHANNEL if not c.startswith(stream.value)))

    hub.publish(stream, "7-1", message)

    assert [frame["stream"] for frame in drain(listening)] == [stream.value]
    assert drain(others) == []


def test_event_frame_carries_channel_stream_id_and_nan_as_null() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = subscribed(hub, "indicators:*")

    hub.publish(Stream.INDICATORS, "1700000000000-3", indicators())

    (frame,) = drain(client)
    assert isinstance(frame, dict)
    assert frame["type"] == "event"
    assert frame["channel"] == "indicators:ETH/BTC"
    assert frame["stream"] == "indicators"
    assert frame["id"] == "1700000000000-3"
    data = frame["data"]
    assert isinstance(data, dict)
    assert data["rsi"] is None and data["prev_stoch_k"] is None and data["stoch_k"] == 50.0


def test_unsubscribed_channel_stops_receiving_and_ack_lists_what_is_left() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = hub.connect()
    hub.handle_request(client, '{"op": "subscribe", "channels": ["signals", "orders"]}')
    hub.handle_request(client, '{"op": "unsubscribe", "channels": ["signals", "fills"]}')

    hub.publish(Stream.SIGNALS, "1-0", signal())
    hub.publish(Stream.ORDERS, "2-0", order())

    frames = drain(client)
    assert frames[0] == {"type": "subscribed", "channels": ["orders", "signals"]}
    assert frames[1] == {"type": "subscribed", "channels": ["orders"]}
    assert [frame["stream"] for frame in frames[2:]] == ["orders"]


@pytest.mark.parametrize(
    ("request_text", "reason"),
    [
        ("not json", "Invalid JSON"),
        ('{"op": "listen", "channels": ["signals"]}', "op"),
        ('{"op": "subscribe", "channels": []}', "channels"),
        ('{"op": "subscribe", "channels": ["signals", "trades"]}', "unknown channel 'trades'"),
        ('{"op": "subscribe", "channels": ["signals"], "extra": 1}', "extra"),
    ],
)
def test_bad_request_is_answered_with_an_error_and_changes_nothing(
    request_text: str, reason: str
) -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = hub.connect()

    hub.handle_request(client, request_text)

    (frame,) = drain(client)
    assert isinstance(frame, dict) and frame["type"] == "error"
    assert reason in str(frame["reason"])
    assert client.channels == set() and not client.closed


def test_subscribing_past_the_channel_limit_is_refused() -> None:
    hub = Hub(queue_size=10, max_channels=2)
    client = hub.connect()

    hub.handle_request(client, '{"op": "subscribe", "channels": ["signals", "orders", "fills"]}')

    assert drain(client) == [{"type": "error", "reason": "at most 2 channels per connection"}]
    assert client.channels == set()


def test_full_queue_drops_the_slow_client_while_the_fast_one_gets_everything() -> None:
    hub = Hub(queue_size=3, max_channels=10)
    slow = subscribed(hub, "signals")
    fast = subscribed(hub, "signals")
    dropped_before = dropped_count()

    fast_frames: list[Any] = []
    for number in range(10):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())
        fast_frames.extend(drain(fast))  # the fast client keeps up; the slow one never reads

    assert [frame["id"] for frame in fast_frames] == [f"{n}-0" for n in range(10)]
    assert drain(slow) == [Closing(SLOW_CONSUMER, 1008)]
    assert slow.closed and slow.channels == set()
    assert dropped_count() == dropped_before + 1


async def test_publishing_never_waits_for_a_client_that_does_not_read() -> None:
    hub = Hub(queue_size=5, max_channels=10)
    slow = subscribed(hub, "signals")
    fast = subscribed(hub, "signals")
    received: list[str] = []

    async def read_fast() -> None:
        while len(received) < 200:
            item = await fast.queue.get()
            assert isinstance(item, str)
            received.append(json.loads(item)["id"])

    reader = asyncio.create_task(read_fast())
    async with asyncio.timeout(5):
        for number in range(200):
            hub.publish(Stream.SIGNALS, f"{number}-0", signal())
            await asyncio.sleep(0)  # let the fast reader run, as the relay does between reads
        await reader

    assert received == [f"{n}-0" for n in range(200)]
    assert slow.closed and isinstance(slow.queue.get_nowait(), Closing)


def test_close_all_tells_every_client_why() -> None:
    hub = Hub(queue_size=2, max_channels=10)
    first, second = subscribed(hub, "signals"), subscribed(hub, "orders")
    hub.publish(Stream.SIGNALS, "1-0", signal())

    hub.close_all("relay stopped", 1011)

    assert drain(first) == [Closing("relay stopped", 1011)]
    assert drain(second) == [Closing("relay stopped", 1011)]
    assert Closing("relay stopped", 1011).to_text() == '{"type":"dropped","reason":"relay stopped"}'


def test_connected_clients_gauge_follows_connect_and_disconnect() -> None:
    def gauge() -> float:
        return REGISTRY.get_sample_value("candlebus_websocket_clients") or 0.0

    hub = Hub(queue_size=2, max_channels=10)
    before = gauge()
    client = subscribed(hub, "signals")
    assert gauge() == before + 1 and len(hub) == 1

    hub.disconnect(client)
    hub.disconnect(client)  # idempotent: the socket side may disconnect after a drop

    assert gauge() == before and len(hub) == 0
    assert hub.publish(Stream.SIGNALS, "1-0", signal()) == 0
