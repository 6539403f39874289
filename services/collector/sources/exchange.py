"""Exchange feed (I/O): (symbol, timeframe, since, limit) in -> OHLCV rows from the healthiest
source out, within each exchange's request budget.

A source is one ccxt client: the configured exchange, and optionally a fallback (another
exchange, or a second endpoint of the same one). Every request first takes its weight from its
exchange's token bucket, which every symbol shares; sources of the same exchange share one
bucket, since the exchange counts them together. A 429 or 418 holds that bucket for the
`Retry-After` the exchange sent, so nothing is sent inside the window. Each source has a
circuit breaker; while the primary's is open the fallback serves, and the primary gets a trial
call when its cooldown ends. Other failures back off exponentially with full jitter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ccxt

from shared import metrics
from shared.ccxt_client import (
    build_exchange,
    classify,
    klines_weight,
    retry_after_s,
)
from shared.pacing import Backoff, BreakerState, SourcePool, TokenBucket

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


# The weight of loading an exchange's markets: Binance's GET /api/v3/exchangeInfo (20), about
# the most any exchange charges for it.
MARKETS_WEIGHT = 20.0


async def take(bucket: TokenBucket, weight: float) -> float:
    """Take `weight` from the bucket, in pieces if it is more than the bucket holds; return the
    seconds waited."""
    waited = 0.0
    while weight > 0:
        piece = min(weight, bucket.capacity)
        waited += await bucket.acquire(piece)
        weight -= piece
    return waited


class FetchFailed(Exception):
    """No source answered within the attempts allowed; the market is polled again later."""


class MarketUnavailable(Exception):
    """The exchange does not know the symbol or timeframe: asking again will not help."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How to reach one source: a ccxt exchange id, optionally at another base URL."""

    name: str
    exchange_id: str
    api_url: str | None = None


@dataclass(slots=True)
class Source:
    """A live source: its ccxt client, its exchange's shared bucket and one request's weight."""

    name: str
    exchange_id: str
    client: Any
    bucket: TokenBucket
    weight: float


@dataclass(frozen=True, slots=True)
class Fetched:
    """Rows one request returned, and the source that served them."""

    rows: list[list[Any]]
    source: str


class ExchangeFeed:
    """Fetches OHLCV rows through a pool of sources, politely and with retries."""

    def __init__(
        self,
        sources: Sequence[Source],
        pool: SourcePool,
        backoff: Backoff,
        *,
        max_attempts: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`pool` names the same sources, primary first; `clock` is monotonic seconds."""
        self._sources = {source.name: source for source in sources}
        self._pool = pool
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._clock = clock
        self._sleep = sleep
        self._export_pool()
        for name in pool.names:  # series that exist before the first wait (shared/metrics.py)
            metrics.RATE_LIMIT_WAITS.labels(name)
            metrics.RATE_LIMIT_WAIT_SECONDS.labels(name)

    @property
    def sources(self) -> list[Source]:
        """Every source, primary first."""
        return [self._sources[name] for name in self._pool.names]

    @property
    def pool(self) -> SourcePool:
        """The sources' breakers and health."""
        return self._pool

    async def load_markets(self) -> dict[str, set[str]]:
        """Load each source's markets (through its bucket); return the symbols each lists.

        A source that cannot be reached now is left out with a warning: it is retried by
        ccxt on its first request.
        """
        listed: dict[str, set[str]] = {}
        for source in self.sources:
            for attempt in range(1, self._max_attempts + 1):
                await take(source.bucket, MARKETS_WEIGHT)
                try:
                    markets = await source.client.load_markets()
                except Exception as error:
                    outcome = classify(error)
                    metrics.COLLECTOR_REQUESTS.labels(source.name, outcome).inc()
                    self._hold_if_told(source, outcome)
                    log.warning(
                        "%s: loading markets failed (%s, attempt %d)", source.name, outcome, attempt
                    )
                    await self._sleep(self._backoff.next_delay(attempt))
                    continue
                metrics.COLLECTOR_REQUESTS.labels(source.name, "ok").inc()
                listed[source.name] = set(markets)
                break
        return listed

    async def fetch(self, symbol: str, timeframe: str, since_ms: int, limit: int) -> Fetched:
        """Return up to `limit` rows from `since_ms` on, from the first source that answers.

        Raises MarketUnavailable when the primary does not know the market, FetchFailed after
        `max_attempts` failed requests.
        """
        for attempt in range(1, self._max_attempts + 1):
            name = self._pool.pick()
            if name is None:  # every breaker is open: wait for the first trial
                retry_at = self._pool.retry_at or self._clock()
                await self._sleep(max(0.0, retry_at - self._clock()))
                name = self._pool.pick()
                if name is None:
                    continue
            self._export_pool()
            source = self._sources[name]
            waited = await source.bucket.acquire(source.weight)
            if waited > 0:
                metrics.RATE_LIMIT_WAITS.labels(name).inc()
                metrics.RATE_LIMIT_WAIT_SECONDS.labels(name).inc(waited)
            started = self._clock()
            try:
                rows = await source.client.fetch_ohlcv(
                    symbol, timeframe, since=since_ms, limit=limit
                )
                # ccxt answers a body that is not JSON with empty or junk rows, not an error.
                # No await since the request: the client's last body is this request's.
                if source.client.last_json_response is None:
                    raise ccxt.BadResponse(f"{name}: the OHLCV answer is not JSON")
            except Exception as error:
                elapsed = self._clock() - started
                outcome = classify(error)
                metrics.COLLECTOR_REQUESTS.labels(name, outcome).inc()
                metrics.COLLECTOR_REQUEST_SECONDS.labels(name).observe(elapsed)
                if outcome == "bad_request":
                    if name == self._pool.names[0]:
                        raise MarketUnavailable(f"{name}: {symbol} {timeframe}: {error}") from None
                    self._pool.report(name, False, elapsed)
                    continue
                self._pool.report(name, False, elapsed)
                self._export_pool()
                told = self._hold_if_told(source, outcome)
                log.warning(
                    "%s: %s %s since %d failed: %s (attempt %d)",
                    name, symbol, timeframe, since_ms, outcome, attempt,
                )  # fmt: skip
                other_ready = any(
                    self._pool.breaker(other).ready for other in self._pool.names if other != name
                )
                if told is None and not other_ready:  # nobody else to ask: back off first
                    await self._sleep(self._backoff.next_delay(attempt))
                continue
            elapsed = self._clock() - started
            metrics.COLLECTOR_REQUESTS.labels(name, "ok").inc()
            metrics.COLLECTOR_REQUEST_SECONDS.labels(name).observe(elapsed)
            self._pool.report(name, True, elapsed)
            self._export_pool()
            return Fetched(rows=rows if isinstance(rows, list) else [], source=name)
        raise FetchFailed(f"{symbol} {timeframe} since {since_ms}: {self._max_attempts} attempts")

    def _hold_if_told(self, source: Source, outcome: str) -> float | None:
        """On a 429 or 418, hold the exchange's bucket for its Retry-After (or a backoff step
        if it sent none); return the seconds held, None for other outcomes."""
        if outcome not in ("rate_limited", "banned"):
            return None
        seconds = retry_after_s(source.client)
        if seconds is None:
            seconds = self._backoff.next_delay(1)
        source.bucket.hold_until(self._clock() + seconds)
        log.warning("%s: %s, holding every request for %.1f s", source.name, outcome, seconds)
        return seconds

    def _export_pool(self) -> None:
        for name in self._pool.names:
            metrics.BREAKER_STATE.labels(name).set(int(self._pool.breaker(name).state))
        metrics.FALLBACK_IN_USE.set(1 if self._pool.fallback_in_use else 0)

    async def close(self) -> None:
        """Close every source's HTTP session."""
        for source in self.sources:
            try:
                await source.client.close()
            except Exception:
                log.debug("closing %s failed", source.name, exc_info=True)


def open_feed(
    specs: Sequence[SourceSpec],
    *,
    budget_weight_per_min: float,
    page_limit: int,
    timeout_ms: int,
    credentials: dict[str, str] | None,
    failure_threshold: int,
    cooldown_s: float,
    backoff: Backoff,
    max_attempts: int,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> ExchangeFeed:
    """Build the ccxt clients, one bucket per exchange id and a pool with the primary first.

    `credentials` ("apiKey", "secret") go to the primary exchange's sources only.
    """
    buckets: dict[str, TokenBucket] = {}
    sources: list[Source] = []
    for spec in specs:
        keys = credentials if spec.exchange_id == specs[0].exchange_id else None
        client = build_exchange(
            spec.exchange_id,
            api_url=spec.api_url,
            api_key=(keys or {}).get("apiKey"),
            secret=(keys or {}).get("secret"),
            timeout_ms=timeout_ms,
        )
        client.enableLastJsonResponse = True  # to tell a malformed body from no candles
        bucket = buckets.setdefault(
            spec.exchange_id,
            TokenBucket.per_minute(budget_weight_per_min, clock=clock, sleep=sleep),
        )
        sources.append(
            Source(spec.name, spec.exchange_id, client, bucket, klines_weight(client, page_limit))
        )

    def on_change(name: str, old: BreakerState, new: BreakerState) -> None:
        log.warning("%s: circuit breaker %s -> %s", name, old.name.lower(), new.name.lower())

    pool = SourcePool(
        [spec.name for spec in specs],
        clock=clock,
        failure_threshold=failure_threshold,
        cooldown_s=cooldown_s,
        on_change=on_change,
    )
    return ExchangeFeed(sources, pool, backoff, max_attempts=max_attempts, clock=clock, sleep=sleep)
