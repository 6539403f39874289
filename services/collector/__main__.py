"""Collector service: a candle source -> validated candles, stored, then published."""

from __future__ import annotations

import asyncio
import logging
import time

from services.collector.ingest import dedupe, stamped, validate
from services.collector.poller import MarketClock, Poller, PollerConfig
from services.collector.settings import CollectorSettings
from services.collector.sources import source_from_settings
from services.collector.sources.exchange import ExchangeFeed, SourceSpec, open_feed
from services.collector.sources.stream import KlineStream
from shared import metrics
from shared.bus import Bus
from shared.messages import CandleClosed, Stream, market_key
from shared.pacing import Backoff
from shared.runtime import run_service, uninterrupted
from shared.store import Store

SERVICE = "collector"
log = logging.getLogger(__name__)


async def publish_unpublished(
    bus: Bus, store: Store, republish_limit: int, source_name: str
) -> dict[tuple[str, str, str], int]:
    """Publish candles a crash left stored but unpublished; return each market's last time.

    The bus records the last candle published per market atomically with the entry itself, so
    the gap between that and the store's last candle is exactly what was lost in between. A bus
    with no record of a market (a new Redis) gets nothing old: its consumers restore from the
    store.
    """
    last_stored = await store.last_candle_times()
    for market, stored_ms in last_stored.items():
        last = await bus.last_message(Stream.CANDLES, market_key(*market))
        if not isinstance(last, CandleClosed) or last.open_time_ms >= stored_ms:
            continue
        if republish_limit == 0:
            log.warning(
                "%s: stored candles after %d were never published; republishing is off",
                market_key(*market),
                last.open_time_ms,
            )
            continue
        exchange, symbol, timeframe = market
        rows = await store.candles_between(
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            start_ms=last.open_time_ms + 1,
            limit=republish_limit,
        )
        candles = [
            CandleClosed(
                exchange=row.exchange,
                symbol=row.symbol,
                timeframe=row.timeframe,
                open_time_ms=row.open_time_ms,
                open=row.open,
                high=row.high,
                low=row.low,
                close=row.close,
                volume=row.volume,
                source=source_name,
                closed_at_ms=0,
            )
            for row in rows
        ]
        await bus.publish_many(Stream.CANDLES, stamped(candles, int(time.time() * 1000)))
        log.info("republished %d stored candles of %s", len(candles), market_key(*market))
    return last_stored


def feed_from_settings(settings: CollectorSettings) -> ExchangeFeed:
    """Build the exchange feed: the exchange first, then its fallback if one is configured."""
    exchange = settings.exchange or "binance"
    specs = [SourceSpec(exchange, exchange, settings.api_url)]
    if settings.fallback_exchange is not None:
        fallback = settings.fallback_exchange
        specs.append(SourceSpec(fallback, fallback, settings.fallback_api_url))
    elif settings.fallback_api_url is not None:
        specs.append(SourceSpec(f"{exchange}-fallback", exchange, settings.fallback_api_url))
    credentials = None
    if settings.api_key is not None and settings.api_secret is not None:
        credentials = {
            "apiKey": settings.api_key.get_secret_value(),
            "secret": settings.api_secret.get_secret_value(),
        }
    return open_feed(
        specs,
        budget_weight_per_min=settings.weight_budget_per_min,
        page_limit=settings.page_limit,
        timeout_ms=settings.request_timeout_ms,
        credentials=credentials,
        failure_threshold=settings.breaker_failures,
        cooldown_s=settings.breaker_cooldown_s,
        backoff=Backoff(settings.backoff_base_s, settings.backoff_cap_s),
        max_attempts=settings.max_attempts,
    )


async def poll_exchange(settings: CollectorSettings, bus: Bus, store: Store) -> None:
    """Keep the configured markets of a real exchange current (see `poller`)."""
    feed = feed_from_settings(settings)
    exchange = feed.sources[0].name
    stream = None
    if settings.stream:
        stream = KlineStream.open(
            f"{exchange}-stream",
            exchange,
            api_url=settings.api_url,
            timeout_ms=settings.request_timeout_ms,
            backoff=Backoff(settings.backoff_base_s, settings.backoff_cap_s),
        )
        if stream is None:
            log.warning("%s has no kline stream in ccxt: polling REST only", exchange)
    try:
        listed = await feed.load_markets()
        unknown = sorted(set(settings.symbols) - listed.get(exchange, set(settings.symbols)))
        if unknown:
            raise ValueError(f"{exchange} does not list {', '.join(unknown)}")
        last_stored = await publish_unpublished(bus, store, settings.republish_limit, exchange)
        poller = Poller(
            feed,
            bus,
            store,
            PollerConfig(
                exchange=exchange,
                symbols=settings.symbols,
                timeframes=settings.timeframes,
                calendars={
                    symbol: settings.symbol_calendars.get(symbol, settings.calendar)
                    for symbol in settings.symbols
                },
                backfill_hours=settings.backfill_hours,
                page_limit=settings.page_limit,
                settle_ms=settings.settle_ms,
                clock_tolerance_ms=settings.clock_tolerance_ms,
                gap_retries=settings.gap_retries,
                recheck_candles=settings.recheck_candles,
                stream_grace_ms=settings.stream_grace_ms,
                max_concurrency=settings.max_concurrency,
                budget_weight_per_min=settings.weight_budget_per_min,
            ),
            MarketClock(settings.clock_start_ms, settings.clock_anchor_s, settings.clock_speed),
            stream,
        )
        await poller.restore(last_stored)
        log.info("%s: %s", exchange, poller.budget_report())
        await poller.run()
    finally:
        await feed.close()
        if stream is not None:
            await stream.close()


async def main(settings: CollectorSettings, bus: Bus, store: Store) -> None:
    """Collect from the configured source: an exchange, a replay or a synthetic market."""
    if settings.source == "exchange":
        await poll_exchange(settings, bus, store)
        return
    await replay_or_simulate(settings, bus, store)


async def store_and_publish(bus: Bus, store: Store, candles: list[CandleClosed]) -> int:
    """Store candles, then publish them; return how many were new to the store."""
    stored = await store.save_candles(candles)
    await bus.publish_many(Stream.CANDLES, stamped(candles, int(time.time() * 1000)))
    return stored


async def replay_or_simulate(settings: CollectorSettings, bus: Bus, store: Store) -> None:
    """Validate, store and publish every batch the source yields, resuming after the store."""
    source = source_from_settings(settings)
    resume_after = await publish_unpublished(bus, store, settings.republish_limit, source.name)
    log.info("collecting %d markets from %s", len(source.markets()), source.name)
    async for batch in source.batches(resume_after):
        valid, rejected = validate(batch, now_ms=source.now_ms())
        for rejection in rejected:
            metrics.CANDLES_REJECTED.labels(rejection.reason).inc()
            log.warning(
                "rejected %s %d: %s",
                rejection.candle.key,
                rejection.candle.open_time_ms,
                rejection.reason,
            )
        candles = dedupe(valid)
        if not candles:
            continue
        stored = await uninterrupted(store_and_publish(bus, store, candles))
        metrics.CANDLES_STORED.labels(source.name).inc(stored)
        metrics.CANDLES_PUBLISHED.labels(source.name).inc(len(candles))
    log.info("source %s is exhausted; idling", source.name)
    await asyncio.Event().wait()


if __name__ == "__main__":
    run_service(SERVICE, main, CollectorSettings())
