"""Signals service: IndicatorsComputed -> SignalEmitted (stored, then published)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from services.signals.config import ParamsFile, StoredParams
from services.signals.gate import ChangeGate
from services.signals.settings import SignalsSettings
from services.signals.strategy import StochRsiBands
from shared import metrics
from shared.bus import Bus
from shared.messages import IndicatorsComputed, SignalEmitted, Stream, Tick, TicksDecided
from shared.runtime import run_service
from shared.store import Store

SERVICE = "signals"


def ticks_of(messages: Sequence[object], signals: Sequence[SignalEmitted]) -> TicksDecided:
    """Return the batch's candles in order, each with its signal if the strategy made one."""
    by_candle = {(s.key, s.open_time_ms): s for s in signals}
    ticks: list[Tick] = []
    for m in messages:
        assert isinstance(m, IndicatorsComputed)
        signal = by_candle.get((m.key, m.open_time_ms))
        ticks.append(
            Tick(
                m.exchange,
                m.symbol,
                m.timeframe,
                m.open_time_ms,
                m.open,
                m.high,
                m.low,
                m.close,
                m.atr,
                "" if signal is None else signal.side,
                "" if signal is None else signal.signal_id,
                m.candle_closed_at_ms,
            )
        )
    return TicksDecided(ticks=ticks)


async def main(settings: SignalsSettings, bus: Bus, store: Store) -> None:
    """Evaluate the strategy on every indicator message that can change a decision; store and
    publish the signals. The parameters (file and store) are checked before each batch."""
    params_file = ParamsFile(settings.strategy_config)
    stored = StoredParams(store, StochRsiBands.name)
    strategy = StochRsiBands(params_file.load())
    strategy = StochRsiBands((await stored.changed(strategy.params)) or strategy.params)
    gate = ChangeGate(settings.min_price_move_pct)
    history: dict[str, deque[IndicatorsComputed]] = {}
    handled = metrics.MESSAGES_HANDLED.labels(SERVICE, Stream.INDICATORS)
    seconds = metrics.HANDLE_SECONDS.labels(SERVICE, Stream.INDICATORS)
    skipped = metrics.SIGNALS_SKIPPED_EVALUATIONS
    async for batch in bus.consume(
        Stream.INDICATORS,
        group=SERVICE,
        consumer=settings.consumer_name,
        count=settings.batch_size,
        block_ms=settings.block_ms,
    ):
        changed = params_file.changed(strategy.params) or await stored.changed(strategy.params)
        if changed is not None:
            strategy = StochRsiBands(changed)  # from this batch's first candle on
        with seconds.time():
            signals: list[SignalEmitted] = []
            before = gate.skipped
            for message in batch.messages:
                assert isinstance(message, IndicatorsComputed)
                recent = history.setdefault(message.key, deque(maxlen=settings.history))
                admitted = gate.admit(message, strategy.inputs(message, recent))
                signal = strategy.evaluate(message, recent) if admitted else None
                if signal is not None:
                    signals.append(signal)
                recent.append(message)
            skipped.inc(gate.skipped - before)
            if signals:
                await store.save_signals(signals)  # idempotent: signal_id is the key
                await bus.publish_many(Stream.SIGNALS, signals)
            if batch.messages:  # the trader's input: every candle, in order, with its signal
                await bus.publish(Stream.TICKS, ticks_of(batch.messages, signals))
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
