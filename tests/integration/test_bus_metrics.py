"""What the Redis bus tells Prometheus about its consumer groups, on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from shared.bus import RedisBus
from shared.messages import Stream
from tests.fakes import real_candles

pytestmark = pytest.mark.integration


def gauge(name: str, stream: Stream, group: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": stream.value, "group": group})


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[RedisBus]:
    made = RedisBus(redis_url)
    yield made
    await made.close()


async def test_producer_reports_the_lag_of_a_group_that_stopped_reading(bus: RedisBus) -> None:
    candles = real_candles(30)
    await bus.publish_many(Stream.CANDLES, candles[:10])
    reading = bus.consume(Stream.CANDLES, group="stuck", consumer="c1", count=4, block_ms=100)
    await anext(reading)  # four delivered, never acked; then the consumer stops reading
    await reading.aclose()

    await bus.publish_many(Stream.CANDLES, candles[10:])
    await bus.export_published_group_metrics()

    assert gauge("candlebus_consumer_lag_entries", Stream.CANDLES, "stuck") == 26
    assert gauge("candlebus_consumer_pending_entries", Stream.CANDLES, "stuck") == 4


async def test_a_consumer_starts_with_its_dead_letter_series_at_zero(bus: RedisBus) -> None:
    consumer = bus.consume(Stream.TICKS, group="fresh", consumer="c", count=1, block_ms=10)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(anext(consumer), timeout=1.5)  # it never yields: nothing to read
    await consumer.aclose()

    for reason in ("undecodable", "max_deliveries"):
        labels = {"stream": "ticks", "reason": reason}
        assert REGISTRY.get_sample_value("candlebus_dead_letters_total", labels) == 0
