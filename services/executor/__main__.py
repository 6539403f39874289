"""Executor service: SignalEmitted -> OrderPlaced + OrderFilled + PositionChanged, exactly once."""

from __future__ import annotations

import logging
import time

from services.executor.broker import PaperBroker
from services.executor.positions import Skip, apply_fill, order_quantity
from services.executor.settings import ExecutorSettings
from shared import metrics
from shared.bus import Bus
from shared.messages import TIMEFRAME_MS, OrderPlaced, SignalEmitted, Stream, client_order_id
from shared.runtime import run_service
from shared.store import Store

SERVICE = "executor"
log = logging.getLogger(__name__)


async def republish(signal_id: str, store: Store, bus: Bus) -> None:
    """Publish a recorded order's events again: a crash may have cut them off."""
    found = await store.order_of_signal(signal_id)
    if found is None:
        return
    order, fills = found
    await bus.publish(Stream.ORDERS, order)
    await bus.publish_many(Stream.FILLS, fills)
    position = await store.position(exchange=order.exchange, symbol=order.symbol)
    if position is not None:
        await bus.publish(Stream.POSITIONS, position)


async def execute(
    signal: SignalEmitted, broker: PaperBroker, store: Store, bus: Bus, settings: ExecutorSettings
) -> bool:
    """Decide a signal once: place, fill and record its one order, or record why not.

    Return True when this call recorded a new order.

    A signal seen before (a redelivery, or a duplicate published after a crash upstream) is
    never decided again: its order's events are published again, or nothing happens.
    """
    decided = await store.decision_of(signal.signal_id)
    if decided is not None:
        if decided.outcome == "ordered":
            await republish(signal.signal_id, store, bus)
        return False
    position = await store.position(exchange=signal.exchange, symbol=signal.symbol)
    quantity = order_quantity(signal, position, quote_amount=settings.order_quote_amount)
    # Times derive from the candle, so a redelivered signal rebuilds identical messages.
    decided_at_ms = signal.open_time_ms + TIMEFRAME_MS[signal.timeframe]
    if isinstance(quantity, Skip):
        if await store.record_skip(
            signal=signal, reason=quantity.reason, decided_at_ms=decided_at_ms
        ):
            metrics.ORDERS_SKIPPED.labels(quantity.reason).inc()
            log.info("no order for %s: %s", signal.signal_id, quantity.reason)
        return False
    order = OrderPlaced(
        client_order_id=client_order_id(signal.signal_id),
        signal_id=signal.signal_id,
        exchange=signal.exchange,
        symbol=signal.symbol,
        side=signal.side,
        quantity=quantity,
        created_at_ms=decided_at_ms,
        candle_closed_at_ms=signal.candle_closed_at_ms,
    )
    fill = broker.fill(order, price=signal.price, now_ms=decided_at_ms)
    new_position = apply_fill(position, fill)
    if not await store.record_execution(order=order, fill=fill, position=new_position):
        return False  # another delivery recorded it first
    await bus.publish(Stream.ORDERS, order)
    await bus.publish(Stream.FILLS, fill)
    await bus.publish(Stream.POSITIONS, new_position)
    metrics.ORDERS.labels(order.side).inc()
    metrics.FILLS.labels(fill.side).inc()
    metrics.STAGE_LATENCY.labels("order").observe(
        (time.time() * 1000 - signal.candle_closed_at_ms) / 1000
    )
    log.info(
        "%s %.8g %s at %.8g (order %s, signal %s)",
        order.side,
        order.quantity,
        order.symbol,
        fill.price,
        order.client_order_id,
        signal.signal_id,
    )
    return True


async def export_book(store: Store) -> None:
    """Set the open-positions and realized-PnL gauges from the stored positions."""
    positions = await store.positions()
    metrics.OPEN_POSITIONS.set(sum(1 for p in positions if p.quantity > 0))
    metrics.REALIZED_PNL.set(sum(p.realized_pnl for p in positions))


async def main(settings: ExecutorSettings, bus: Bus, store: Store) -> None:
    """Execute every signal in order; ack only after its order is durable and published."""
    broker = PaperBroker(slippage_bps=settings.slippage_bps, fee_bps=settings.fee_bps)
    await export_book(store)
    handled = metrics.MESSAGES_HANDLED.labels(SERVICE, Stream.SIGNALS)
    seconds = metrics.HANDLE_SECONDS.labels(SERVICE, Stream.SIGNALS)
    async for batch in bus.consume(
        Stream.SIGNALS,
        group=SERVICE,
        consumer=settings.consumer_name,
        count=settings.batch_size,
        block_ms=settings.block_ms,
    ):
        with seconds.time():
            ordered = False
            for message in batch.messages:
                assert isinstance(message, SignalEmitted)
                ordered |= await execute(message, broker, store, bus, settings)
            await bus.ack(batch)
        handled.inc(len(batch.entries))
        if ordered:
            await export_book(store)


if __name__ == "__main__":
    run_service(SERVICE, main, ExecutorSettings())
