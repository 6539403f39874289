"""Signals service: IndicatorsComputed -> SignalEmitted (stored, then published)."""

from __future__ import annotations

import time

from services.signals.settings import SignalsSettings
from services.signals.strategy import StochRsiBands
from shared import metrics
from shared.bus import Bus
from shared.messages import IndicatorsComputed, SignalEmitted, Stream
from shared.runtime import run_service
from shared.store import Store

SERVICE = "signals"


async def main(settings: SignalsSettings, bus: Bus, store: Store) -> None:
    """Evaluate the strategy on every indicator message; store and publish the signals."""
    strategy = StochRsiBands()
    handled = metrics.MESSAGES_HANDLED.labels(SERVICE, Stream.INDICATORS)
    seconds = metrics.HANDLE_SECONDS.labels(SERVICE, Stream.INDICATORS)
    async for batch in bus.consume(
        Stream.INDICATORS,
        group=SERVICE,
        consumer=settings.consumer_name,
        count=settings.batch_size,
        block_ms=settings.block_ms,
    ):
        with seconds.time():
            signals: list[SignalEmitted] = []
            for message in batch.messages:
                assert isinstance(message, IndicatorsComputed)
                if (signal := strategy.evaluate(message)) is not None:
                    signals.append(signal)
            if signals:
                await store.save_signals(signals)  # idempotent: signal_id is the key
                await bus.publish_many(Stream.SIGNALS, signals)
            await bus.ack(batch)
        handled.inc(len(batch.entries))
        now_ms = time.time() * 1000
        for signal in signals:
            metrics.SIGNALS.labels(signal.side).inc()
            metrics.STAGE_LATENCY.labels("signal").observe(
                (now_ms - signal.candle_closed_at_ms) / 1000
            )


if __name__ == "__main__":
    run_service(SERVICE, main, SignalsSettings())
