"""The stand-in's spot account: validated orders in -> orders, fills and balances out.

No HTTP and no JSON here: `trading.py` validates the signed requests, calls this and writes
Binance's answers. `Market.account` is the one account every API key trades on.

- MARKET orders fill at once at the last price (`Market.last_price`: the close of the candle
  the clock is in), in pieces of at most `max_fill_qty` (default: one fill). A LIMIT order
  that is marketable fills the same way at that price; otherwise it rests, its funds locked,
  until cancelled: nothing fills it later.
- Commission: `commission_bps` of what is received, in the received asset (base on a buy,
  quote on a sell), as Binance charges when fees are not paid in BNB.
- Refusals as Binance words them: a `newClientOrderId` seen before -> -2010 "Duplicate order
  sent." (for every order the account remembers; with `reuse_done_ids` only while that order
  is open, as Binance documents it: a filled order's id can be used again), funds short ->
  -2010 "Account has insufficient balance for requested action.", below the lot step ->
  -1013 "Filter failure: LOT_SIZE", unknown order -> -2013 (query) or -2011 (cancel).

Balances start empty: a test funds them with `fund()`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Final

from tests.standin.series import DECIMALS, Listing
from tests.standin.wire import BinanceError

DEFAULT_COMMISSION_BPS: Final = 10.0  # Binance spot's standard 0.1 %
OPEN_STATUSES: Final = frozenset({"NEW", "PARTIALLY_FILLED"})
FIRST_ORDER_ID: Final = 1001
FIRST_TRADE_ID: Final = 50_001


def _round(value: float) -> float:
    return round(value, DECIMALS)


@dataclass(frozen=True)
class Fill:
    """One trade of an order: a piece of it at one price, with its commission."""

    trade_id: int
    order_id: int
    market_id: str
    price: float
    qty: float
    commission: float
    commission_asset: str
    time_ms: int
    is_buyer: bool

    @property
    def quote_qty(self) -> float:
        """Return what the trade was worth in the quote asset."""
        return _round(self.price * self.qty)


@dataclass
class Order:
    """An order the account holds, in any status."""

    order_id: int
    client_order_id: str
    market_id: str
    base: str
    quote: str
    side: str  # BUY or SELL
    type: str  # MARKET or LIMIT
    orig_qty: float
    price: float  # the limit price; 0 for a market order
    time_in_force: str
    time_ms: int
    update_ms: int
    status: str = "NEW"
    fills: list[Fill] = field(default_factory=list)

    @property
    def executed_qty(self) -> float:
        """Return the base quantity filled so far."""
        return _round(sum(f.qty for f in self.fills))

    @property
    def cumulative_quote(self) -> float:
        """Return the quote quantity filled so far."""
        return _round(sum(f.quote_qty for f in self.fills))

    @property
    def is_open(self) -> bool:
        """Return whether the order is still working."""
        return self.status in OPEN_STATUSES

    def copy(self) -> Order:
        """Return a copy that later changes to this order leave alone."""
        return replace(self, fills=list(self.fills))


@dataclass(frozen=True)
class NewOrder:
    """A POST /api/v3/order request after Binance's validation."""

    listing: Listing
    side: str
    type: str
    quantity: float
    price: float
    time_in_force: str
    client_order_id: str | None
    response_type: str


class Account:
    """The one API user's balances, orders and trades; thread-safe (server thread and tests)."""

    def __init__(
        self,
        *,
        commission_bps: float = DEFAULT_COMMISSION_BPS,
        max_fill_qty: float | None = None,
        reuse_done_ids: bool = False,
    ) -> None:
        """Start with no funds and no orders."""
        self.commission_bps = commission_bps
        self.max_fill_qty = max_fill_qty
        self.reuse_done_ids = reuse_done_ids
        self._lock = threading.Lock()
        self._free: dict[str, float] = {}
        self._locked: dict[str, float] = {}
        self._orders: list[Order] = []
        self._next_order_id = FIRST_ORDER_ID
        self._next_trade_id = FIRST_TRADE_ID

    def fund(self, **free: float) -> None:
        """Set the free balance of each asset named, e.g. fund(BTC=1.0, ETH=0)."""
        with self._lock:
            for asset, amount in free.items():
                self._free[asset] = _round(amount)

    def balance(self, asset: str) -> tuple[float, float]:
        """Return an asset's (free, locked) balance."""
        with self._lock:
            return self._free.get(asset, 0.0), self._locked.get(asset, 0.0)

    def balances(self) -> dict[str, tuple[float, float]]:
        """Return every asset the account has held, with its (free, locked) balance."""
        with self._lock:
            assets = sorted(set(self._free) | set(self._locked))
            return {a: (self._free.get(a, 0.0), self._locked.get(a, 0.0)) for a in assets}

    def orders(self, *, client_order_id: str | None = None) -> list[Order]:
        """Return copies of the orders, oldest first, optionally only those with a client id."""
        with self._lock:
            return [
                o.copy()
                for o in self._orders
                if client_order_id is None or o.client_order_id == client_order_id
            ]

    def place(self, request: NewOrder, price: float, now_ms: int) -> Order:
        """Place an order at the last `price`; fill it at once if it is marketable."""
        with self._lock:
            client_id = request.client_order_id or f"standin-{self._next_order_id}"
            if any(
                o.client_order_id == client_id and (o.is_open or not self.reuse_done_ids)
                for o in self._orders
            ):
                raise BinanceError(400, -2010, "Duplicate order sent.")
            listing = request.listing
            order = Order(
                order_id=self._next_order_id,
                client_order_id=client_id,
                market_id=listing.market_id,
                base=listing.base,
                quote=listing.quote,
                side=request.side,
                type=request.type,
                orig_qty=request.quantity,
                price=request.price,
                time_in_force=request.time_in_force,
                time_ms=now_ms,
                update_ms=now_ms,
            )
            marketable = request.type == "MARKET" or (
                request.price >= price if request.side == "BUY" else request.price <= price
            )
            if marketable:
                if order.side == "BUY":
                    self._check_funds(order.quote, order.orig_qty * price)
                else:
                    self._check_funds(order.base, order.orig_qty)
                self._fill(order, price, now_ms)
            else:
                self._lock_funds(order)
            self._next_order_id += 1
            self._orders.append(order)
            return order.copy()

    def _check_funds(self, asset: str, needed: float) -> None:
        if self._free.get(asset, 0.0) + 1e-12 < needed:
            raise BinanceError(400, -2010, "Account has insufficient balance for requested action.")

    def _fill(self, order: Order, price: float, now_ms: int) -> None:
        rate = self.commission_bps / 10_000
        buy = order.side == "BUY"
        for qty in _pieces(order.orig_qty, self.max_fill_qty):
            quote_qty = _round(price * qty)
            commission = _round(qty * rate if buy else quote_qty * rate)
            fill = Fill(
                trade_id=self._next_trade_id,
                order_id=order.order_id,
                market_id=order.market_id,
                price=price,
                qty=qty,
                commission=commission,
                commission_asset=order.base if buy else order.quote,
                time_ms=now_ms,
                is_buyer=buy,
            )
            self._next_trade_id += 1
            order.fills.append(fill)
            if buy:
                self._move(order.quote, -quote_qty)
                self._move(order.base, qty - commission)
            else:
                self._move(order.base, -qty)
                self._move(order.quote, quote_qty - commission)
        order.status = "FILLED"
        order.update_ms = now_ms

    def _lock_funds(self, order: Order) -> None:
        asset, amount = self._reserved(order)
        self._check_funds(asset, amount)
        self._move(asset, -amount)
        self._locked[asset] = _round(self._locked.get(asset, 0.0) + amount)

    @staticmethod
    def _reserved(order: Order) -> tuple[str, float]:
        if order.side == "BUY":
            return order.quote, _round(order.orig_qty * order.price)
        return order.base, order.orig_qty

    def _move(self, asset: str, amount: float) -> None:
        self._free[asset] = _round(self._free.get(asset, 0.0) + amount)

    def _find(self, market_id: str, order_id: int | None, client_id: str | None) -> Order | None:
        for order in reversed(self._orders):  # a reused client id names its latest order
            if order.market_id == market_id and (
                order.order_id == order_id
                if order_id is not None
                else order.client_order_id == client_id
            ):
                return order
        return None

    def query(self, market_id: str, order_id: int | None, client_id: str | None) -> Order:
        """Return one order by id or client id (-2013 if there is none)."""
        with self._lock:
            order = self._find(market_id, order_id, client_id)
            if order is None:
                raise BinanceError(400, -2013, "Order does not exist.")
            return order.copy()

    def cancel(
        self, market_id: str, order_id: int | None, client_id: str | None, now_ms: int
    ) -> Order:
        """Cancel an open order, releasing its locked funds (-2011 if it is not open)."""
        with self._lock:
            order = self._find(market_id, order_id, client_id)
            if order is None or not order.is_open:
                raise BinanceError(400, -2011, "Unknown order sent.")
            asset, amount = self._reserved(order)
            self._locked[asset] = _round(self._locked.get(asset, 0.0) - amount)
            self._move(asset, amount)
            order.status, order.update_ms = "CANCELED", now_ms
            return order.copy()

    def open_orders(self, market_id: str | None) -> list[Order]:
        """Return the open orders of one symbol, or of all of them."""
        with self._lock:
            return [
                o.copy()
                for o in self._orders
                if o.is_open and (market_id is None or o.market_id == market_id)
            ]

    def trades(self, market_id: str, order_id: int | None, limit: int) -> list[Fill]:
        """Return the account's trades in one symbol (of one order), oldest first."""
        with self._lock:
            fills = [
                f
                for o in self._orders
                if o.market_id == market_id and (order_id is None or o.order_id == order_id)
                for f in o.fills
            ]
        return sorted(fills, key=lambda f: f.trade_id)[-limit:]


def _pieces(quantity: float, max_piece: float | None) -> list[float]:
    """Split `quantity` into fills of at most `max_piece` (the last one takes the rest)."""
    if max_piece is None or quantity <= max_piece:
        return [quantity]
    whole = math.ceil(quantity / max_piece - 1e-9)
    return [max_piece] * (whole - 1) + [_round(quantity - max_piece * (whole - 1))]
