"""The response cache: generations moved by stream events, TTLs, the byte bound, coalescing."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.gateway.cache import ALL_SYMBOLS, TTL_S, Cached, Kind, ResponseCache
from services.gateway.hub import Hub
from services.gateway.relay import relay, start_cursors
from shared.bus import MemoryBus
from shared.messages import Stream
from tests.fakes import candle, fill, position, signal


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A computation that counts its calls and returns a new body each time."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Cached:
        self.calls += 1
        return Cached(f"body {self.calls}".encode(), (("X-Next-Cursor", str(self.calls)),))


def lookups(kind: Kind, result: str) -> float:
    labels = {"kind": kind.value, "result": result}
    return REGISTRY.get_sample_value("candlebus_response_cache_total", labels) or 0.0


def new_cache(clock: Clock | None = None, max_bytes: int = 1_000_000) -> ResponseCache:
    return ResponseCache(None, max_bytes=max_bytes, clock=clock or Clock())


async def test_a_second_read_is_a_local_hit_with_the_same_body_and_headers() -> None:
    cache, source = new_cache(), Source()
    hits = lookups(Kind.CANDLES, "local_hit")

    first = await cache.fetch(Kind.CANDLES, "ETH/BTC", "/candles?limit=5", source)
    second = await cache.fetch(Kind.CANDLES, "ETH/BTC", "/candles?limit=5", source)
    other = await cache.fetch(Kind.CANDLES, "ETH/BTC", "/candles?limit=6", source)

    assert first == second == Cached(b"body 1", (("X-Next-Cursor", "1"),))
    assert other.body == b"body 2" and source.calls == 2
    assert lookups(Kind.CANDLES, "local_hit") == hits + 1


async def test_an_event_of_the_symbol_invalidates_its_scope_and_every_symbol_scope() -> None:
    cache, source = new_cache(), Source()
    for scope in ("ETH/BTC", "LTC/BTC", ALL_SYMBOLS):
        await cache.fetch(Kind.CANDLES, scope, "q", source)

    cache.note(Stream.CANDLES, "5-0", candle("ETH/BTC"))

    assert (await cache.fetch(Kind.CANDLES, "ETH/BTC", "q", source)).body == b"body 4"
    assert (await cache.fetch(Kind.CANDLES, ALL_SYMBOLS, "q", source)).body == b"body 5"
    assert (await cache.fetch(Kind.CANDLES, "LTC/BTC", "q", source)).body == b"body 2"  # kept
    assert cache.generation(Kind.CANDLES, "ETH/BTC") == "5-0"


@pytest.mark.parametrize(
    ("stream", "message", "changed", "kept"),
    [
        (Stream.CANDLES, candle(), {Kind.CANDLES, Kind.COMPUTED, Kind.PNL}, {Kind.INDICATORS}),
        (Stream.FILLS, fill(), {Kind.FILLS, Kind.PNL}, {Kind.ORDERS, Kind.POSITIONS}),
        (Stream.POSITIONS, position(), {Kind.POSITIONS, Kind.PNL}, {Kind.FILLS}),
        (Stream.SIGNALS, signal(), {Kind.SIGNALS}, {Kind.ORDERS, Kind.PNL}),
    ],
)
async def test_each_stream_invalidates_the_kinds_built_from_it(
    stream: Stream, message: object, changed: set[Kind], kept: set[Kind]
) -> None:
    cache = new_cache()
    before = {kind: cache.generation(kind, "ETH/BTC") for kind in Kind}

    cache.note(stream, "9-1", message)  # type: ignore[arg-type]

    assert {kind for kind in Kind if cache.generation(kind, "ETH/BTC") != before[kind]} == changed
    assert not kept & changed


async def test_entries_expire_after_their_kind_ttl() -> None:
    clock = Clock()
    cache, source = new_cache(clock), Source()
    await cache.fetch(Kind.POSITIONS, ALL_SYMBOLS, "q", source)

    clock.now += TTL_S[Kind.POSITIONS] - 0.1
    assert (await cache.fetch(Kind.POSITIONS, ALL_SYMBOLS, "q", source)).body == b"body 1"
    clock.now += 0.2
    assert (await cache.fetch(Kind.POSITIONS, ALL_SYMBOLS, "q", source)).body == b"body 2"


async def test_the_least_recently_used_bodies_go_once_over_the_byte_bound() -> None:
    cache = new_cache(max_bytes=100)

    async def body_of(size: int) -> Cached:
        return Cached(b"x" * size)

    for name in ("a", "b", "c"):
        await cache.fetch(Kind.SIGNALS, ALL_SYMBOLS, name, lambda: body_of(20))
    await cache.fetch(Kind.SIGNALS, ALL_SYMBOLS, "a", lambda: body_of(99))  # touch: a is newest
    await cache.fetch(Kind.SIGNALS, ALL_SYMBOLS, "d", lambda: body_of(20))
    await cache.fetch(Kind.SIGNALS, ALL_SYMBOLS, "e", lambda: body_of(21))  # 101 bytes

    kept = {key.rsplit(":", 1)[1] for key in cache._local}
    assert kept == {"a", "c", "d", "e"} and cache._local_bytes == 81
    assert REGISTRY.get_sample_value("candlebus_response_cache_bytes") == 81
    await cache.fetch(Kind.SIGNALS, ALL_SYMBOLS, "huge", lambda: body_of(60))
    assert "huge" not in {key.rsplit(":", 1)[1] for key in cache._local}  # over a quarter


async def test_concurrent_misses_of_one_key_compute_once() -> None:
    cache, release, calls = new_cache(), asyncio.Event(), []

    async def slow() -> Cached:
        calls.append(1)
        await release.wait()
        return Cached(b"once")

    readers = [
        asyncio.create_task(cache.fetch(Kind.CANDLES, "ETH/BTC", "q", slow)) for _ in range(10)
    ]
    await asyncio.sleep(0.01)
    release.set()

    assert [r.body for r in await asyncio.gather(*readers)] == [b"once"] * 10
    assert calls == [1]


async def test_a_failed_computation_fails_its_waiters_and_is_not_cached() -> None:
    cache, release = new_cache(), asyncio.Event()

    async def broken() -> Cached:
        await release.wait()
        raise RuntimeError("database went away")

    readers = [
        asyncio.create_task(cache.fetch(Kind.ORDERS, ALL_SYMBOLS, "q", broken)) for _ in range(3)
    ]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*readers, return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in results)
    assert (await cache.fetch(Kind.ORDERS, ALL_SYMBOLS, "q", Source())).body == b"body 1"


async def test_a_cancelled_reader_leaves_its_waiters_to_compute_for_themselves() -> None:
    cache, source = new_cache(), Source()

    async def never() -> Cached:
        await asyncio.Event().wait()
        raise AssertionError

    first = asyncio.create_task(cache.fetch(Kind.FILLS, ALL_SYMBOLS, "q", never))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(cache.fetch(Kind.FILLS, ALL_SYMBOLS, "q", source))
    await asyncio.sleep(0.01)
    first.cancel()

    assert (await waiter).body == b"body 1"


async def test_a_disabled_cache_always_computes() -> None:
    cache, source = ResponseCache(None, max_bytes=1_000, enabled=False), Source()

    for _ in range(3):
        await cache.fetch(Kind.CANDLES, "ETH/BTC", "q", source)

    assert source.calls == 3


async def test_the_relay_invalidates_from_the_bus_tail() -> None:
    cache, bus = new_cache(), MemoryBus()
    hub = Hub(queue_size=10, max_channels=10)
    cursors = await start_cursors(bus)
    hub.seed(cursors)
    following = asyncio.create_task(
        relay(bus, hub, block_ms=10, count=100, after=cursors, before_publish=cache.note)
    )
    await asyncio.sleep(0.02)

    entry_id = await bus.publish(Stream.POSITIONS, position("LTC/BTC"))
    for _ in range(100):
        if cache.generation(Kind.POSITIONS, "LTC/BTC") == entry_id:
            break
        await asyncio.sleep(0.01)
    following.cancel()

    assert cache.generation(Kind.POSITIONS, "LTC/BTC") == entry_id
    assert cache.generation(Kind.POSITIONS, ALL_SYMBOLS) == entry_id


def cached_bytes() -> float:
    return REGISTRY.get_sample_value("candlebus_response_cache_bytes") or 0.0


async def test_only_the_current_generation_of_a_read_is_kept() -> None:
    """A body superseded by an event can never be served again: it goes at once, not when the
    byte bound pushes it out, so memory holds what can still be served and stays flat."""
    cache, source = new_cache(), Source()
    for event in range(50):
        await cache.fetch(Kind.CANDLES, "ETH/BTC", "/candles?limit=5", source)
        await cache.fetch(Kind.POSITIONS, ALL_SYMBOLS, "/positions", source)
        cache.note(Stream.CANDLES, f"{event + 1}-0", candle("ETH/BTC"))

    assert source.calls == 51  # candles computed once per generation; positions once
    kept = len(b"body 50") + len(b"body 2")  # the last of each, no more
    assert cache._local_bytes == kept and cached_bytes() == kept


async def test_a_body_computed_across_an_event_is_served_but_not_kept() -> None:
    cache, source = new_cache(), Source()
    gate = asyncio.Event()

    async def slow() -> Cached:
        await gate.wait()
        return await source()

    reading = asyncio.ensure_future(cache.fetch(Kind.CANDLES, "ETH/BTC", "q", slow))
    await asyncio.sleep(0)
    cache.note(Stream.CANDLES, "7-0", candle("ETH/BTC"))  # while it is being computed
    gate.set()

    assert (await reading).body == b"body 1"
    assert cache._local_bytes == 0  # its generation is gone: no request could reach it
    assert (await cache.fetch(Kind.CANDLES, "ETH/BTC", "q", source)).body == b"body 2"
