"""Response cache: a read's query in -> its encoded JSON body, until new events change the data.

Two tiers. In process, a byte-bounded LRU of bodies is checked first: a hit costs one dict
lookup, which is what keeps the hot reads (the latest candles of a chart, positions) fast
under load. In Redis (when the bus is Redis), bodies are shared by every replica and survive a
restart, each with the TTL of its data kind. A Redis failure is a miss, never an error.

Invalidation is by generation, not by deleting keys. Every key carries the id of the newest
stream entry that changed its (kind, scope), a scope being one symbol or `*` for every symbol;
`note` moves the generation when the gateway's relay sees such an entry. Replicas
see the same entries, so they compute the same keys and share them; superseded keys are never
read again and leave by LRU (in process) or TTL (Redis). Each service stores its rows before
it publishes the event, so a read after the event sees them. A candle that is stored but not
published (a late one, or a revision) shows once the kind's TTL has run out.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import metrics
from shared.messages import Message, Stream

log = logging.getLogger(__name__)

ALL_SYMBOLS: Final = "*"
KEY_PREFIX: Final = "candlebus:cache:"
KNOWN_READS: Final = 10_000  # request keys the fast path recognises (LRU)


class Kind(enum.StrEnum):
    """What a cached body holds; it decides the TTL and which events invalidate it."""

    CANDLES = "candles"
    INDICATORS = "indicators"
    COMPUTED = "computed_indicators"
    SIGNALS = "signals"
    ORDERS = "orders"
    FILLS = "fills"
    POSITIONS = "positions"
    PNL = "pnl"


# Backstops for changes no event announces; events invalidate long before.
TTL_S: Final[dict[Kind, int]] = {
    Kind.CANDLES: 60,
    Kind.INDICATORS: 60,
    Kind.COMPUTED: 300,  # expensive to compute; keyed by the newest candle anyway
    Kind.SIGNALS: 30,
    Kind.ORDERS: 30,
    Kind.FILLS: 30,
    Kind.POSITIONS: 10,
    Kind.PNL: 10,
}

# Which kinds an entry on each stream changes (PnL marks open positions at the last close).
INVALIDATES: Final[dict[Stream, tuple[Kind, ...]]] = {
    Stream.CANDLES: (Kind.CANDLES, Kind.COMPUTED, Kind.PNL),
    Stream.INDICATORS: (Kind.INDICATORS,),
    Stream.SIGNALS: (Kind.SIGNALS,),
    Stream.ORDERS: (Kind.ORDERS,),
    Stream.FILLS: (Kind.FILLS, Kind.PNL),
    Stream.POSITIONS: (Kind.POSITIONS, Kind.PNL),
}


@dataclass(frozen=True, slots=True)
class Cached:
    """An encoded response body and the headers that belong with it (e.g. the next page)."""

    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class _Stored(msgspec.Struct, array_like=True):
    headers: list[tuple[str, str]]
    body: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Stored).decode


class ResponseCache:
    """Bodies by (kind, scope, query), in process and in Redis, invalidated by stream events."""

    def __init__(
        self,
        redis: Redis | None,
        *,
        max_bytes: int,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._redis = redis
        self._max_bytes = max_bytes
        self._clock = clock
        # Key -> (expiry, body, its slot: kind, scope and query).
        self._local: OrderedDict[str, tuple[float, Cached, tuple[Kind, str, str]]] = OrderedDict()
        self._local_bytes = 0
        self._slots: dict[tuple[Kind, str, str], str] = {}  # (kind, scope, query) -> its key
        # Until an event moves it, a generation is this process's own: a restarted replica
        # never reads what an earlier one cached before events it did not see.
        self._boot = uuid.uuid4().hex[:12]
        self._generations: dict[tuple[Kind, str], str] = {}
        self._in_flight: dict[str, asyncio.Future[Cached]] = {}
        # Request key -> what the route said it reads, and the route (see `remember`).
        self._known: OrderedDict[str, tuple[Kind, str, object]] = OrderedDict()
        self._redis_failing = False

    def generation(self, kind: Kind, scope: str) -> str:
        """Return the current generation of a (kind, scope)."""
        return self._generations.get((kind, scope), self._boot)

    def note(self, stream: Stream, entry_id: str, message: Message) -> None:
        """Invalidate what a new stream entry changes: its symbol's scope and `*`."""
        symbol = getattr(message, "symbol", None)
        for kind in INVALIDATES.get(stream, ()):
            if isinstance(symbol, str):
                self._generations[(kind, symbol)] = entry_id
                self._generations[(kind, ALL_SYMBOLS)] = entry_id
            else:  # no symbol to go by: every scope of the kind
                for key in [key for key in self._generations if key[0] is kind]:
                    self._generations[key] = entry_id
                self._generations[(kind, ALL_SYMBOLS)] = entry_id

    async def fetch(
        self, kind: Kind, scope: str, query: str, compute: Callable[[], Awaitable[Cached]]
    ) -> Cached:
        """Return the cached response of `query`, else compute, store and return it.

        Concurrent misses of one key wait for the first one's computation instead of
        repeating it (a new candle would otherwise send every chart to the database at once).
        """
        if not self.enabled:
            return await compute()
        # Taken before computing: an event arriving meanwhile moves the generation, so what is
        # computed now is stored under the old key and never served after the event.
        key = self._key((kind, scope, query), self.generation(kind, scope))
        found = self._get_local(key)
        if found is not None:
            metrics.RESPONSE_CACHE.labels(kind=kind.value, result="local_hit").inc()
            return found
        waiting = self._in_flight.get(key)
        if waiting is not None:
            metrics.RESPONSE_CACHE.labels(kind=kind.value, result="coalesced").inc()
            return await self._wait_for(waiting, compute)
        future: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            cached = await self._get_redis(kind, key)
            if cached is None:
                metrics.RESPONSE_CACHE.labels(kind=kind.value, result="miss").inc()
                cached = await compute()
                await self._put_redis(kind, key, cached)
            self._put_local((kind, scope, query), key, cached)
            future.set_result(cached)
            return cached
        except asyncio.CancelledError:
            future.cancel()  # this request went away: its waiters compute for themselves
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            del self._in_flight[key]

    @staticmethod
    async def _wait_for(
        waiting: asyncio.Future[Cached], compute: Callable[[], Awaitable[Cached]]
    ) -> Cached:
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if waiting.cancelled() and task is not None and not task.cancelling():
                return await compute()
            raise

    def remember(self, query: str, kind: Kind, scope: str, route: object) -> None:
        """Record which (kind, scope) a request key reads, and its route, so `lookup` can serve
        the next identical request without routing, validation or dependencies."""
        if not self.enabled:
            return
        self._known[query] = (kind, scope, route)
        self._known.move_to_end(query)
        while len(self._known) > KNOWN_READS:
            self._known.popitem(last=False)

    def lookup(self, query: str) -> tuple[Cached, object] | None:
        """Return the fresh body kept in process for a request key `remember` has seen, and
        its route; None (nothing counted) when the full path must answer."""
        known = self._known.get(query)
        if known is None:
            return None
        kind, scope, route = known
        found = self._get_local(self._key((kind, scope, query), self.generation(kind, scope)))
        if found is None:
            return None
        metrics.RESPONSE_CACHE.labels(kind=kind.value, result="local_hit").inc()
        return found, route

    @staticmethod
    def _key(slot: tuple[Kind, str, str], generation: str) -> str:
        """Return the key of a slot's (kind, scope, query) body of one generation."""
        kind, scope, query = slot
        return f"{kind}:{scope}:{generation}:{query}"

    def clear(self) -> None:
        """Forget every body kept in process."""
        self._local.clear()
        self._slots.clear()
        self._local_bytes = 0
        metrics.RESPONSE_CACHE_BYTES.set(0)

    def _get_local(self, key: str) -> Cached | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        expires_at, cached, _ = entry
        if expires_at <= self._clock():
            self._drop_local(key)
            return None
        self._local.move_to_end(key)
        return cached

    def _put_local(self, slot: tuple[Kind, str, str], key: str, cached: Cached) -> None:
        """Keep a body under `key`, the generation's key of `slot` (kind, scope, query).

        Only the current generation's body of a slot is kept: a key of an older generation can
        never be looked up again, so it would only hold memory until the size bound pushed it
        out (with candles arriving every minute, minutes of filling up to the bound).
        """
        kind, scope, _ = slot
        size = len(cached.body)
        if size > self._max_bytes // 4:
            return  # one huge page must not flush everything else
        if key != self._key(slot, self.generation(kind, scope)):
            return  # an event moved the generation while this was computed
        # A slot has at most one body kept, the one `_slots` names: this key's, or an older one.
        superseded = self._slots.get(slot)
        if superseded is not None:
            self._drop_local(superseded)
        self._local[key] = (self._clock() + TTL_S[kind], cached, slot)
        self._slots[slot] = key
        self._local_bytes += size
        while self._local_bytes > self._max_bytes:
            self._drop_local(next(iter(self._local)))
        metrics.RESPONSE_CACHE_BYTES.set(self._local_bytes)

    def _drop_local(self, key: str) -> None:
        _, cached, slot = self._local.pop(key)
        self._local_bytes -= len(cached.body)
        if self._slots.get(slot) == key:
            del self._slots[slot]

    def _redis_key(self, key: str) -> str:
        kind, scope, generation, query = key.split(":", 3)
        digest = hashlib.sha256(query.encode()).hexdigest()[:32]
        return f"{KEY_PREFIX}{kind}:{scope}:{generation}:{digest}"

    async def _get_redis(self, kind: Kind, key: str) -> Cached | None:
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(self._redis_key(key))
        except RedisError as error:
            self._redis_failed(kind, error)
            return None
        if not isinstance(raw, bytes):
            return None
        try:
            stored = _decode(raw)
        except msgspec.DecodeError:
            return None  # written by an incompatible version: recompute
        metrics.RESPONSE_CACHE.labels(kind=kind.value, result="redis_hit").inc()
        return Cached(stored.body, tuple(stored.headers))

    async def _put_redis(self, kind: Kind, key: str, cached: Cached) -> None:
        if self._redis is None:
            return
        value = _encode(_Stored(list(cached.headers), cached.body))
        try:
            await self._redis.set(self._redis_key(key), value, ex=TTL_S[kind])
        except RedisError as error:
            self._redis_failed(kind, error)
            return
        if self._redis_failing:
            self._redis_failing = False
            log.info("response cache: Redis answers again")

    def _redis_failed(self, kind: Kind, error: RedisError) -> None:
        metrics.RESPONSE_CACHE.labels(kind=kind.value, result="error").inc()
        if not self._redis_failing:  # one line per outage, not one per request
            self._redis_failing = True
            log.warning("response cache: Redis failed (%s); serving from the database", error)
