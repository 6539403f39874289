"""Executor service: ticks (every candle with its signal) -> orders, fills and positions.

A thin loop around one `Trader`: each batch of ticks steps it candle by candle (`records`),
then what changed (orders, fills, positions, decisions on signals, and the trader's whole
snapshot with the last tick it covers) is written in ONE transaction, published, and acked.
A process killed anywhere restarts from the last snapshot; ticks it had not acked come again
and those the snapshot covers change nothing, so every order exists once.

With BROKER=live the orders go to the exchange (live.py): a batch's pending orders are saved
first, then sent, and the exchange's fills saved in a second transaction before the ack. The
snapshot is the outbox: orders pending in it at start are sent (looked up first) before
anything else, then the rest is reconciled with the exchange.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from contextlib import AsyncExitStack

from services.executor.live import log_reconciliation, order_of, send_pending
from services.executor.live_broker import LiveBroker, connect_live_broker
from services.executor.records import Ledger
from services.executor.settings import ExecutorSettings
from services.executor.trader import Trader
from shared import metrics
from shared.bus import Bus
from shared.messages import PositionChanged, Stream, TicksDecided
from shared.runtime import run_service
from shared.store import CloseRequestRow, Store, TraderStateRow, TradingStep

SERVICE = "executor"
log = logging.getLogger(__name__)


async def restore(settings: ExecutorSettings, store: Store) -> Trader:
    """Return the account's trader as last saved, or a new one."""
    saved = await store.trader_state(settings.account)
    if saved is None:
        return settings.new_trader()
    trader = Trader.restore(
        json.loads(saved.snapshot), settings.exit_rules(), settings.position_sizing(),
        settings.risk_limits(), slippage_bps=settings.slippage_bps, fee_bps=settings.fee_bps,
        live=settings.broker == "live",
    )  # fmt: skip
    log.info(
        "restored trader %s: %d holdings, %d pending orders, cash %.8g",
        settings.account, len(trader.holdings), len(trader.pending), trader.cash,
    )  # fmt: skip
    return trader


async def positions_of(store: Store) -> dict[str, PositionChanged]:
    """The stored positions, by symbol."""
    return {
        row.symbol: PositionChanged(
            exchange=row.exchange,
            symbol=row.symbol,
            quantity=row.quantity,
            avg_price=row.avg_price,
            realized_pnl=row.realized_pnl,
            updated_at_ms=row.updated_at_ms,
            cause_fill_id=row.cause_fill_id,
        )
        for row in await store.positions()
    }


def export_book(trader: Trader, positions: dict[str, PositionChanged]) -> None:
    """Set the open-positions and realised-PnL gauges."""
    metrics.OPEN_POSITIONS.set(len(trader.holdings))
    metrics.REALIZED_PNL.set(sum(p.realized_pnl for p in positions.values()))


class Controls:
    """What a person set by hand, read from the store at most once a second: the kill switch
    (the setting KILL_SWITCH holds until someone sets it there), paused symbols, and requests
    to close a position (each answered once, on its symbol's next candle)."""

    def __init__(self, store: Store, account: str, *, every_s: float = 1.0) -> None:
        self._store, self._account, self._every_s = store, account, every_s
        self._read_at = -math.inf
        self._closes: dict[str, CloseRequestRow] = {}  # open requests, the oldest per symbol
        self._answered: set[tuple[str, int]] = set()  # (symbol, requested at) answered here

    async def apply(self, trader: Trader) -> None:
        """Put the stored kill switch and paused symbols on the trader's limits if they
        changed, and take up new close requests."""
        now = time.monotonic()
        if now - self._read_at < self._every_s:
            return
        self._read_at = now
        controls = await self._store.controls(self._account)
        paused = frozenset(row.symbol for row in await self._store.paused_symbols(self._account))
        limits = trader.limits
        if controls is not None and controls.kill_switch != limits.kill_switch:
            limits = dataclasses.replace(limits, kill_switch=controls.kill_switch)
            state = "ON: no new entries" if controls.kill_switch else "off: entries allowed"
            log.warning("kill switch %s (%s)", state, controls.reason or "no reason given")
        if paused != limits.paused:
            log.warning("paused symbols (no new entries): %s", sorted(paused) or "none")
            limits = dataclasses.replace(limits, paused=paused)
        trader.limits = limits
        metrics.KILL_SWITCH.labels(self._account).set(1 if limits.kill_switch else 0)
        self._closes = {}
        for request in await self._store.close_requests(self._account):
            key = (request.symbol, request.requested_at_ms)
            if key not in self._answered:
                self._closes.setdefault(request.symbol, request)

    def closes(self) -> dict[str, CloseRequestRow]:
        """The close requests to answer on each symbol's next candle."""
        return dict(self._closes)

    def answered(self, requests: list[CloseRequestRow]) -> None:
        """Note requests answered (and stored): they are not taken up again."""
        for request in requests:
            self._answered.add((request.symbol, request.requested_at_ms))
            self._closes.pop(request.symbol, None)  # the one taken up for it


async def connect(settings: ExecutorSettings) -> LiveBroker:
    """The live broker the settings describe (keys checked by the settings)."""
    assert settings.api_key is not None and settings.api_secret is not None
    return await connect_live_broker(
        settings.exchange,
        api_key=settings.api_key.get_secret_value(),
        secret=settings.api_secret.get_secret_value(),
        api_url=settings.api_url,
        timeout_ms=settings.order_timeout_ms,
        submissions=settings.order_submissions,
    )


async def save(
    store: Store, settings: ExecutorSettings, trader: Trader, ledger: Ledger, stream_id: str
) -> None:
    """Write what the ledger holds and the trader's snapshot in one transaction."""
    state = TraderStateRow(
        account=settings.account, snapshot=json.dumps(trader.snapshot()),
        stream_id=stream_id, updated_at_ms=int(time.time() * 1000),
    )  # fmt: skip
    await store.save_trading_step(
        TradingStep(
            orders=list(ledger.orders.values()),
            statuses=list(ledger.statuses.items()),
            fills=ledger.fills,
            positions=list(ledger.changed.values()),
            decisions=ledger.decisions,
            state=state,
            answered=ledger.answered,
        )
    )


async def publish(bus: Bus, ledger: Ledger) -> None:
    """Publish the ledger's new orders, fills and positions."""
    await bus.publish_many(Stream.ORDERS, ledger.placed)
    await bus.publish_many(Stream.FILLS, ledger.fills)
    await bus.publish_many(Stream.POSITIONS, list(ledger.changed.values()))


async def resume_live(
    settings: ExecutorSettings, trader: Trader, broker: LiveBroker, store: Store, bus: Bus,
    positions: dict[str, PositionChanged],
) -> None:  # fmt: skip
    """At start: settle the orders the snapshot left pending (each looked up first), then
    reconcile what is left with the exchange's open orders and balances."""
    if trader.pending:
        ledger = Ledger(positions)
        saved = await store.trader_state(settings.account)
        await settle(store, settings, trader, broker, ledger, saved.stream_id if saved else "0-0")
        await publish(bus, ledger)
    name = broker.exchange.id
    known = [order_of(order, name) for order in trader.pending.values()]
    log_reconciliation(await broker.reconcile(known, list(positions.values())))


async def main(settings: ExecutorSettings, bus: Bus, store: Store) -> None:
    """Trade every batch of ticks; ack only after its records are durable and published."""
    trader = await restore(settings, store)
    controls = Controls(store, settings.account)
    await controls.apply(trader)
    positions = await positions_of(store)
    export_book(trader, positions)
    async with AsyncExitStack() as stack:
        broker = None
        if settings.broker == "live":
            broker = await connect(settings)
            stack.push_async_callback(broker.close)
            await resume_live(settings, trader, broker, store, bus, positions)
        await trade(settings, bus, store, trader, controls, positions, broker)


async def trade(
    settings: ExecutorSettings, bus: Bus, store: Store, trader: Trader, controls: Controls,
    positions: dict[str, PositionChanged], broker: LiveBroker | None,
) -> None:  # fmt: skip
    """The consuming loop: ticks -> trader -> (live: the exchange) -> store, bus, ack."""
    handled = metrics.MESSAGES_HANDLED.labels(SERVICE, Stream.TICKS)
    seconds = metrics.HANDLE_SECONDS.labels(SERVICE, Stream.TICKS)
    async for batch in bus.consume(
        Stream.TICKS,
        group=SERVICE,
        consumer=settings.consumer_name,
        count=settings.batch_size,
        block_ms=settings.block_ms,
    ):
        await controls.apply(trader)
        with seconds.time():
            ledger = Ledger(positions, closes=controls.closes())
            saved_ticks = 0  # of the ledger's ticks, those whose records are saved
            tried: set[str] = set()  # orders sent in this batch: an unsettled one waits for
            for entry in batch.entries:  # the next batch, not for every tick of this one
                assert isinstance(entry.message, TicksDecided)
                for tick in entry.message.ticks:
                    ledger.apply(trader, tick)
                    if broker is not None and untried(trader, tried):  # send it now
                        await save(store, settings, trader, ledger, entry.id)  # order written
                        saved_ticks = ledger.ticks
                        await settle(store, settings, trader, broker, ledger, entry.id, tried)
            stream_id = batch.entries[-1].id
            if broker is not None and untried(trader, tried):  # left from an earlier batch
                await settle(store, settings, trader, broker, ledger, stream_id, tried)
            if not (ledger.ticks or ledger.fills or ledger.statuses):  # all seen before
                await bus.ack(batch)  # at once: a crash loop must not dead-letter good ticks
                handled.inc(len(batch.entries))
                continue
            if ledger.ticks > saved_ticks:
                await save(store, settings, trader, ledger, stream_id)
            controls.answered(ledger.answered)
            await publish(bus, ledger)
            await bus.ack(batch)
        handled.inc(len(batch.entries))
        observe(ledger, trader, positions)


def untried(trader: Trader, tried: set[str]) -> bool:
    """Return whether the trader holds a pending order not sent in this batch yet."""
    return any(order.client_order_id not in tried for order in trader.pending.values())


async def settle(
    store: Store, settings: ExecutorSettings, trader: Trader, broker: LiveBroker,
    ledger: Ledger, stream_id: str, tried: set[str] | None = None,
) -> None:  # fmt: skip
    """Send the trader's pending orders and save the exchange's answers (fill written); note
    the orders sent in `tried`."""
    if tried is not None:
        tried.update(order.client_order_id for order in trader.pending.values())
    if await send_pending(trader, broker, ledger):
        await save(store, settings, trader, ledger, stream_id)


def observe(ledger: Ledger, trader: Trader, positions: dict[str, PositionChanged]) -> None:
    """Count what one batch did."""
    now_ms = int(time.time() * 1000)
    for decision in ledger.decisions:
        if decision.outcome == "skipped":
            metrics.ORDERS_SKIPPED.labels(decision.reason).inc()
    for order in ledger.placed:
        metrics.ORDERS.labels(order.side).inc()
        metrics.STAGE_LATENCY.labels("order").observe((now_ms - order.candle_closed_at_ms) / 1000)
    for fill in ledger.fills:
        metrics.FILLS.labels(fill.side).inc()
    if ledger.fills:
        export_book(trader, positions)
    metrics.UNREALIZED_PNL.set(trader.equity - trader.initial_equity - trader.realized_pnl)


if __name__ == "__main__":
    run_service(SERVICE, main, ExecutorSettings())
