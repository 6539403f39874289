"""Start-up reconciliation (pure): the store's open orders and positions + the exchange's open
orders and balances in -> where they disagree out.

The live broker gathers both sides (`LiveBroker.reconcile`); the comparison lives here, with
no I/O, so it is tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from shared.messages import OrderPlaced, PositionChanged

CLIENT_ID_PREFIX: Final = "cb-"  # shared.messages.client_order_id: the ids this system gives


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    """What reconciliation needs to know of one order on the exchange."""

    client_order_id: str
    symbol: str
    side: str
    status: str  # ccxt's: open, closed, canceled, expired, rejected
    amount: float
    filled: float


@dataclass(frozen=True, slots=True)
class BalanceMismatch:
    """A base asset whose exchange balance differs from the store's positions in it."""

    asset: str
    exchange_quantity: float
    store_quantity: float


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Where the exchange and the store disagree at start."""

    settled: tuple[ExchangeOrder, ...]  # the store: open; the exchange: done ("missing": unknown)
    unknown_open: tuple[ExchangeOrder, ...]  # open on the exchange, ours, unknown to the store
    balance_mismatches: tuple[BalanceMismatch, ...]

    @property
    def in_sync(self) -> bool:
        """Return whether the store and the exchange agree."""
        return not (self.settled or self.unknown_open or self.balance_mismatches)


def base_asset(symbol: str) -> str:
    """Return the base asset of a unified symbol: ETH/BTC -> ETH."""
    return symbol.split("/", 1)[0]


def compare_with_exchange(
    *,
    known_open: Sequence[OrderPlaced],
    open_on_exchange: Sequence[ExchangeOrder],
    looked_up: Mapping[str, ExchangeOrder | None],
    balances: Mapping[str, float],
    positions: Sequence[PositionChanged],
    prefix: str = CLIENT_ID_PREFIX,
    relative_tolerance: float = 1e-6,
    absolute_tolerance: float = 1e-8,
) -> Reconciliation:
    """Compare the store's open orders and positions with the exchange's orders and balances.

    `looked_up` holds the exchange's answer (None: no such order) for the store's open orders
    that are not open on the exchange. Balances are compared for the base asset of every
    position given (summed over its markets), against the exchange's total (free + locked).
    """
    open_ids = {order.client_order_id for order in open_on_exchange}
    settled = tuple(
        looked_up.get(order.client_order_id)
        or ExchangeOrder(order.client_order_id, order.symbol, order.side, "missing", 0.0, 0.0)
        for order in known_open
        if order.client_order_id not in open_ids
    )
    known_ids = {order.client_order_id for order in known_open}
    unknown = tuple(
        order
        for order in open_on_exchange
        if order.client_order_id.startswith(prefix) and order.client_order_id not in known_ids
    )
    held: dict[str, float] = {}
    for position in positions:
        asset = base_asset(position.symbol)
        held[asset] = held.get(asset, 0.0) + position.quantity
    mismatches = []
    for asset, quantity in sorted(held.items()):
        balance = balances.get(asset, 0.0)
        allowed = max(absolute_tolerance, relative_tolerance * max(abs(balance), abs(quantity)))
        if abs(balance - quantity) > allowed:
            mismatches.append(BalanceMismatch(asset, balance, quantity))
    return Reconciliation(settled, unknown, tuple(mismatches))
