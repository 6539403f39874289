"""Live execution (exchange I/O): a trader's pending orders -> the exchange -> its fills.

`send_pending` sends every order the trader holds pending through the live broker and applies
the answer to the trader and the batch's ledger: the exchange's fills, or its refusal. A sell
below the exchange's lot size (what rounding leaves after partial exits) is not sent: the
holding is closed and the dust stays on the account. An order
whose fate stays unknown (the exchange unreachable for the broker's whole retry budget) stays
pending and is sent again after the next batch or at the next start; the broker looks every
order up by its client id before sending it, so no attempt places a second one.

The executor saves the pending orders before calling this ("order written"), and the fills
after it ("fill written"): a process killed between the two finds the order pending at start,
looks it up on the exchange, and records its fills then.
"""

from __future__ import annotations

import logging

from services.executor.live_broker import BrokerUnavailable, LiveBroker, Rejected
from services.executor.reconciliation import Reconciliation
from services.executor.records import Ledger
from services.executor.trader import PendingOrder, Trader
from shared import metrics
from shared.messages import OrderPlaced

log = logging.getLogger(__name__)


def order_of(order: PendingOrder, exchange: str) -> OrderPlaced:
    """The order message the broker places for a pending order."""
    return OrderPlaced(
        client_order_id=order.client_order_id, signal_id=order.signal_id, exchange=exchange,
        symbol=order.symbol, side=order.side, quantity=order.quantity,
        created_at_ms=order.not_before_ms, candle_closed_at_ms=order.not_before_ms,
    )  # fmt: skip


async def send_pending(trader: Trader, broker: LiveBroker, ledger: Ledger) -> int:
    """Send each of the trader's pending orders once; return how many were settled (filled
    or refused). Orders left unsettled stay pending."""
    settled = 0
    for order in list(trader.pending.values()):
        cid = order.client_order_id
        if order.side == "sell" and broker.sellable(order.symbol, order.quantity) == 0.0:
            trader.close_dust(cid)
            ledger.cancelled(cid)
            settled += 1
            log.info(
                "%s: %g left is below the lot size: closed as dust", order.symbol, order.quantity
            )
            continue
        try:
            outcome = await broker.place_market(order_of(order, broker.exchange.id))
        except BrokerUnavailable as error:
            metrics.ORDERS_UNSETTLED.inc()
            log.warning("order %s not settled (%s): it stays pending", cid, error)
            continue
        settled += 1
        if isinstance(outcome, Rejected):
            trader.reject(cid)
            ledger.rejected(cid)
            metrics.ORDERS_REJECTED.labels(outcome.reason).inc()
            log.warning("order %s %s refused: %s", cid, order.symbol, outcome.reason)
        else:
            trader.fill_external(cid, outcome)
            ledger.exchange_filled(cid, outcome)
    return settled


def log_reconciliation(result: Reconciliation) -> None:
    """Say at start where the exchange and the store still disagree once the pending orders
    were settled (an order still pending is sent again, looked up first, after a batch)."""
    for order in result.settled:
        log.info(
            "order %s (%s %s) is %s on the exchange: its fills are collected on its next send",
            order.client_order_id, order.side, order.symbol, order.status,
        )  # fmt: skip
    for order in result.unknown_open:
        log.warning(
            "order %s (%s %s %g) is open on the exchange but unknown here: left alone",
            order.client_order_id, order.side, order.symbol, order.amount,
        )  # fmt: skip
    for mismatch in result.balance_mismatches:
        log.warning(
            "%s: the exchange holds %g, the positions here %g",
            mismatch.asset, mismatch.exchange_quantity, mismatch.store_quantity,
        )  # fmt: skip
