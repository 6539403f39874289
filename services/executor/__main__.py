"""Executor service: ticks (every candle with its signal) -> orders, fills and positions.

A thin loop around one `Trader`: each batch of ticks steps it candle by candle (`records`),
then what changed (orders, fills, positions, decisions on signals, and the trader's whole
snapshot with the last tick it covers) is written in ONE transaction, published, and acked.
A process killed anywhere restarts from the last snapshot; ticks it had not acked come again
and those the snapshot covers change nothing, so every order exists once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

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


async def main(settings: ExecutorSettings, bus: Bus, store: Store) -> None:
    """Trade every batch of ticks; ack only after its records are durable and published."""
    trader = await restore(settings, store)
    controls = Controls(store, settings.account)
    await controls.apply(trader)
    positions = await positions_of(store)
    export_book(trader, positions)
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
            for message in batch.messages:
                assert isinstance(message, TicksDecided)
                for tick in message.ticks:
                    ledger.apply(trader, tick)
            if ledger.ticks == 0:  # all seen before (a redelivery the snapshot covers)
                await bus.ack(batch)  # at once: a crash loop must not dead-letter good ticks
                handled.inc(len(batch.entries))
                continue
            now_ms = int(time.time() * 1000)
            state = TraderStateRow(
                account=settings.account, snapshot=json.dumps(trader.snapshot()),
                stream_id=batch.entries[-1].id, updated_at_ms=now_ms,
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
            controls.answered(ledger.answered)
            placed = ledger.placed
            await bus.publish_many(Stream.ORDERS, placed)
            await bus.publish_many(Stream.FILLS, ledger.fills)
            await bus.publish_many(Stream.POSITIONS, list(ledger.changed.values()))
            await bus.ack(batch)
        handled.inc(len(batch.entries))
        for decision in ledger.decisions:
            if decision.outcome == "skipped":
                metrics.ORDERS_SKIPPED.labels(decision.reason).inc()
        for order in placed:
            metrics.ORDERS.labels(order.side).inc()
            metrics.STAGE_LATENCY.labels("order").observe(
                (now_ms - order.candle_closed_at_ms) / 1000
            )
        for fill in ledger.fills:
            metrics.FILLS.labels(fill.side).inc()
        if ledger.fills:
            export_book(trader, positions)
        metrics.UNREALIZED_PNL.set(trader.equity - trader.initial_equity - trader.realized_pnl)


if __name__ == "__main__":
    run_service(SERVICE, main, ExecutorSettings())
