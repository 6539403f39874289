"""Hub: channel parsing, routing, batching into frames, dropping slow clients, and resuming."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.gateway.hub import (
    SLOW_CONSUMER,
    ChannelError,
    Hub,
    parse_channel,
)
from services.gateway.resume import ResumeError, entry_before, resume_plan
from services.gateway.subscriber import Closing, Subscriber
from shared.messages import Message, Stream
from tests.fakes import candle, indicators, order, signal

EVERY_CHANNEL = ("candles:*", "indicators:*", "signals", "orders", "fills", "positions")


def frames(hub: Hub, subscriber: Subscriber) -> list[dict[str, Any]]:
    """Flush the hub and return every frame the client's socket side would send, decoded."""
    hub.flush()
    out: list[dict[str, Any]] = []
    while (text := subscriber.take()) is not None:
        out.append(json.loads(text))
    return out


def events(hub: Hub, subscriber: Subscriber) -> list[dict[str, Any]]:
    """Return the events of every frame waiting for the client, in order."""
    return [event for frame in frames(hub, subscriber) for event in frame.get("events", [])]


def subscribed(hub: Hub, *channels: str) -> Subscriber:
    client = hub.connect()
    hub.subscribe(client, channels)
    return client


def request(hub: Hub, client: Subscriber, **payload: object) -> dict[Stream, str]:
    return hub.handle_request(client, json.dumps(payload))


def dropped_count() -> float:
    value = REGISTRY.get_sample_value(
        "candlebus_websocket_dropped_total", {"reason": "slow_consumer"}
    )
    return value or 0.0


# --- channels and routing --------------------------------------------------------------------


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
        ("ticks", "executor's input only"),
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

    assert [event["channel"] for event in events(hub, eth)] == ["candles:ETH/BTC"]
    assert [event["channel"] for event in events(hub, every)] == ["candles:ETH/BTC"]
    assert frames(hub, ltc) == [] and frames(hub, eth_indicators) == []


def test_client_on_a_symbol_and_the_wildcard_gets_each_event_once() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = subscribed(hub, "candles:ETH/BTC", "candles:*")

    hub.publish(Stream.CANDLES, "5-0", candle())

    assert len(events(hub, client)) == 1


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

    assert [event["stream"] for event in events(hub, listening)] == [stream.value]
    assert frames(hub, others) == []


def test_event_carries_channel_stream_id_and_nan_as_null() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = subscribed(hub, "indicators:*")

    hub.publish(Stream.INDICATORS, "1700000000000-3", indicators())

    (frame,) = frames(hub, client)
    assert frame["type"] == "events"
    (event,) = frame["events"]
    assert event["channel"] == "indicators:ETH/BTC"
    assert event["stream"] == "indicators"
    assert event["id"] == "1700000000000-3"
    data = event["data"]
    assert data["rsi"] is None and data["prev_stoch_k"] is None and data["stoch_k"] == 50.0


def test_unsubscribed_channel_stops_receiving_and_ack_lists_what_is_left() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = hub.connect()
    request(hub, client, op="subscribe", channels=["signals", "orders"])
    request(hub, client, op="unsubscribe", channels=["signals", "fills"])

    hub.publish(Stream.SIGNALS, "1-0", signal())
    hub.publish(Stream.ORDERS, "2-0", order())

    sent = frames(hub, client)
    assert sent[0] == {"type": "subscribed", "channels": ["orders", "signals"], "ids": {}}
    assert sent[1] == {"type": "subscribed", "channels": ["orders"], "ids": {}}
    assert [event["stream"] for event in sent[2]["events"]] == ["orders"]


@pytest.mark.parametrize(
    ("request_text", "reason"),
    [
        ("not json", "Invalid JSON"),
        ('{"op": "listen", "channels": ["signals"]}', "op"),
        ('{"op": "subscribe", "channels": []}', "channels"),
        ('{"op": "subscribe", "channels": ["signals", "trades"]}', "unknown channel 'trades'"),
        ('{"op": "subscribe", "channels": ["signals"], "extra": 1}', "extra"),
        ('{"op": "subscribe", "channels": ["signals"], "since": {"signals": "x"}}', "pattern"),
        ('{"op": "subscribe", "channels": ["signals"], "since": {"trades": "1-0"}}', "unknown"),
        (
            '{"op": "subscribe", "channels": ["signals"], "since": {"orders": "1-0"}}',
            "not the stream of any channel",
        ),
        ('{"op": "unsubscribe", "channels": ["signals"], "since": {"signals": "1-0"}}', "since"),
    ],
)
def test_bad_request_is_answered_with_an_error_and_changes_nothing(
    request_text: str, reason: str
) -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = hub.connect()

    hub.handle_request(client, request_text)

    (frame,) = frames(hub, client)
    assert frame["type"] == "error"
    assert reason in str(frame["reason"])
    assert client.channels == set() and client.holding == {} and not client.closed


def test_subscribing_past_the_channel_limit_is_refused() -> None:
    hub = Hub(queue_size=10, max_channels=2)
    client = hub.connect()

    request(hub, client, op="subscribe", channels=["signals", "orders", "fills"])

    assert frames(hub, client) == [{"type": "error", "reason": "at most 2 channels per connection"}]
    assert client.channels == set()


# --- batching --------------------------------------------------------------------------------


def test_events_wait_for_the_flush_and_then_share_one_frame() -> None:
    hub = Hub(queue_size=100, max_channels=10, batch_max=50)
    client = subscribed(hub, "signals")

    for number in range(5):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())

    assert not client.flushed  # the flusher has not run: nothing may be sent yet
    assert hub.flush() == 1 and client.flushed
    (frame,) = frames(hub, client)
    assert [event["id"] for event in frame["events"]] == [f"{n}-0" for n in range(5)]


def test_a_full_batch_is_sent_without_waiting_and_frames_hold_at_most_batch_max() -> None:
    hub = Hub(queue_size=100, max_channels=10, batch_max=4)
    client = subscribed(hub, "signals")

    for number in range(3):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())
    assert not client.flushed
    hub.publish(Stream.SIGNALS, "3-0", signal())
    assert client.flushed  # the fourth event filled a batch
    for number in range(4, 10):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())

    sizes = [len(frame["events"]) for frame in frames(hub, client)]
    assert sizes == [4, 4, 2]


def test_replies_keep_their_place_between_events_and_go_out_at_once() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    client = subscribed(hub, "signals")
    hub.publish(Stream.SIGNALS, "1-0", signal())
    hub.publish(Stream.SIGNALS, "2-0", signal())

    request(hub, client, op="subscribe", channels=["orders"])
    assert client.flushed  # a reply is not held back by the batching window
    hub.publish(Stream.ORDERS, "3-0", order())

    kinds = [(frame["type"], len(frame.get("events", []))) for frame in frames(hub, client)]
    assert kinds == [("events", 2), ("subscribed", 0), ("events", 1)]


async def test_socket_side_waits_for_a_flush_then_drains_everything_waiting() -> None:
    hub = Hub(queue_size=100, max_channels=10, batch_max=3)
    client = subscribed(hub, "signals")
    waiting = asyncio.ensure_future(client.next_frame())
    hub.publish(Stream.SIGNALS, "1-0", signal())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # published, but not flushed

    hub.flush()
    first = json.loads(await asyncio.wait_for(waiting, 1))
    assert [event["id"] for event in first["events"]] == ["1-0"]
    # Events that arrive while a frame is being sent go out after it without another flush.
    for number in range(2, 6):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())
    hub.flush()
    rest = [json.loads(await asyncio.wait_for(client.next_frame(), 1)) for _ in range(2)]
    assert [[event["id"] for event in frame["events"]] for frame in rest] == [
        ["2-0", "3-0", "4-0"],
        ["5-0"],
    ]


# --- slow clients ----------------------------------------------------------------------------


def test_full_outbox_drops_the_slow_client_while_the_fast_one_gets_everything() -> None:
    hub = Hub(queue_size=3, max_channels=10)
    slow = subscribed(hub, "signals")
    fast = subscribed(hub, "signals")
    dropped_before = dropped_count()

    fast_events: list[dict[str, Any]] = []
    for number in range(10):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())
        fast_events.extend(events(hub, fast))  # the fast client keeps up; the slow one never reads

    assert [event["id"] for event in fast_events] == [f"{n}-0" for n in range(10)]
    assert slow.closing == Closing(SLOW_CONSUMER, 1008)
    assert slow.closed and slow.channels == set() and len(slow.outbox) == 0  # memory freed
    assert slow.take() is None
    assert dropped_count() == dropped_before + 1


async def test_publishing_never_waits_for_a_client_that_does_not_read() -> None:
    hub = Hub(queue_size=5, max_channels=10, batch_max=2)
    slow = subscribed(hub, "signals")
    fast = subscribed(hub, "signals")
    received: list[str] = []

    async def read_fast() -> None:
        while len(received) < 200:
            frame = await fast.next_frame()
            assert frame is not None
            received.extend(event["id"] for event in json.loads(frame)["events"])

    reader = asyncio.create_task(read_fast())
    async with asyncio.timeout(5):
        for number in range(200):
            hub.publish(Stream.SIGNALS, f"{number}-0", signal())
            hub.flush()
            await asyncio.sleep(0)  # let the fast reader run, as the relay does between reads
        await reader

    assert received == [f"{n}-0" for n in range(200)]
    assert slow.closed
    assert await asyncio.wait_for(slow.wait_closed(), 1) == Closing(SLOW_CONSUMER, 1008)
    assert await slow.next_frame() is None


def test_close_all_tells_every_client_why() -> None:
    hub = Hub(queue_size=2, max_channels=10)
    first, second = subscribed(hub, "signals"), subscribed(hub, "orders")
    hub.publish(Stream.SIGNALS, "1-0", signal())

    hub.close_all("relay stopped", 1011)

    assert first.closing == second.closing == Closing("relay stopped", 1011)
    assert frames(hub, first) == []
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


# --- ids, heartbeats and resuming ------------------------------------------------------------


def test_ack_and_heartbeat_carry_the_last_id_of_each_stream_the_client_receives() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    hub.seed({Stream.CANDLES: "10-0", Stream.SIGNALS: "0-0", Stream.ORDERS: "7-0"})
    client = hub.connect()
    request(hub, client, op="subscribe", channels=["candles:ETH/BTC", "signals"])
    hub.publish(Stream.CANDLES, "11-0", candle("LTC/BTC"))  # not for this client: still counts
    hub.publish(Stream.CANDLES, "12-0", candle("ETH/BTC"))
    hub.publish(Stream.CANDLES, "13-0", candle("LTC/BTC"))

    hub.heartbeat(1_700_000_000_000, elapsed_s=2.0)

    ack, batch, beat = frames(hub, client)
    assert ack["ids"] == {"candles": "10-0", "signals": "0-0"}
    assert [event["id"] for event in batch["events"]] == ["12-0"]
    assert beat == {
        "type": "heartbeat",
        "time_ms": 1_700_000_000_000,
        "rates": {
            "candles": 1.5,
            "indicators": 0.0,
            "signals": 0.0,
            "orders": 0.0,
            "fills": 0.0,
            "positions": 0.0,
        },
        "ids": {"candles": "13-0", "signals": "0-0"},
    }


def test_resumed_stream_holds_live_events_and_releases_only_those_after_the_backlog() -> None:
    hub = Hub(queue_size=100, max_channels=10)
    hub.seed({Stream.CANDLES: "20-0", Stream.SIGNALS: "5-0"})
    client = hub.connect()

    plan = request(
        hub, client, op="subscribe", channels=["candles:ETH/BTC", "signals"], since={"candles": "3"}
    )
    assert plan == {Stream.CANDLES: "3-0"}
    # Live events during the backlog read: candles are held, signals flow as usual.
    hub.publish(Stream.CANDLES, "21-0", candle("ETH/BTC"))
    hub.publish(Stream.SIGNALS, "6-0", signal())
    hub.publish(Stream.CANDLES, "22-0", candle("ETH/BTC"))
    assert client.held == 2
    # The backlog read overlaps the held events (it ran after they were published).
    backlog = [("4-0", candle("ETH/BTC")), ("5-0", candle("LTC/BTC")), ("21-0", candle())]
    assert hub.replay(client, Stream.CANDLES, backlog) == 2  # the LTC candle is not wanted
    hub.finish_resume(client, Stream.CANDLES, "21-0", sent=2, gap=False)
    hub.publish(Stream.CANDLES, "23-0", candle("ETH/BTC"))

    sent = frames(hub, client)
    assert sent[0] == {
        "type": "subscribed",
        "channels": ["candles:ETH/BTC", "signals"],
        "ids": {"signals": "5-0"},  # not candles: its backlog is still to come
    }
    ids = [
        (event["stream"], event["id"]) for frame in sent[1:] for event in frame.get("events", [])
    ]
    assert ids == [
        ("signals", "6-0"),
        ("candles", "4-0"),
        ("candles", "21-0"),
        ("candles", "22-0"),
        ("candles", "23-0"),
    ]
    assert {"type": "resumed", "stream": "candles", "count": 2, "gap": False} in sent
    assert client.holding == {} and client.held == 0


def test_held_live_events_count_toward_the_limit() -> None:
    hub = Hub(queue_size=3, max_channels=10)
    client = hub.connect()
    request(hub, client, op="subscribe", channels=["signals"], since={"signals": "1-0"})
    frames(hub, client)  # the ack has gone out

    for number in range(2, 6):
        hub.publish(Stream.SIGNALS, f"{number}-0", signal())

    assert client.closed and client.holding == {} and client.held == 0


def test_since_is_refused_for_a_stream_the_connection_already_receives() -> None:
    hub = Hub(queue_size=10, max_channels=10)
    client = subscribed(hub, "candles:ETH/BTC")

    plan = request(
        hub, client, op="subscribe", channels=["candles:LTC/BTC"], since={"candles": "1-0"}
    )

    assert plan == {}
    (frame,) = frames(hub, client)
    assert frame["type"] == "error" and "already subscribed" in frame["reason"]
    assert client.channels == {"candles:ETH/BTC"}


def test_resume_plan_normalises_ids_and_checks_streams() -> None:
    assert resume_plan({"orders": "17"}, ["orders"], busy=()) == {Stream.ORDERS: "17-0"}
    with pytest.raises(ResumeError, match="unknown stream"):
        resume_plan({"trades": "1-0"}, ["orders"], busy=())


@pytest.mark.parametrize(
    ("entry_id", "before"),
    [
        ("5-3", "5-2"),
        ("5-0", "4-18446744073709551615"),
        ("0-0", None),
        ("7", "6-18446744073709551615"),
    ],
)
def test_entry_before_is_the_greatest_id_below(entry_id: str, before: str | None) -> None:
    assert entry_before(entry_id) == before
