"""Live broker (exchange I/O): OrderPlaced in -> the exchange's fills or a rejection out.

Places market orders through a ccxt async client under the order's client order id, and never
places one twice. Whenever an order may already exist, it is looked up by that id before
anything is sent: first of all (a redelivered order whose earlier submission got through: real
Binance accepts a client id again once its order has filled), and after every answer that
leaves the order's fate unknown. `place_market` decides by what `create_order` raised:

    nothing                               -> the answer's fills (the order's trades if it has none)
    DuplicateOrderId / -2010 "Duplicate"  -> the order exists: look it up, its fills
    ArgumentsRequired, NotSupported       -> raise: a bug here, not the order's fault
    AuthenticationError (not PermissionDenied: bad key, signature) -> raise: nothing can trade
    any other ExchangeError (InsufficientFunds, InvalidOrder, BadSymbol, BadRequest,
      PermissionDenied, ...)               -> Rejected(reason), never retried
    OperationFailed (RequestTimeout, ExchangeNotAvailable, DDoSProtection, other NetworkError,
      BadResponse, Binance -1001)          -> back off, look up: found -> its fills;
                                             not found -> submit again (bounded); else raise

Reads (lookups, trades, balances) are retried on OperationFailed with backoff; when a budget
runs out `BrokerUnavailable` is raised and the order's state is unknown (a later call looks it
up first, so retrying is safe). `reconcile` compares the exchange with the store at start;
the comparison is pure (reconciliation.py). Credentials come from the caller and are never
logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import ccxt
import ccxt.async_support as ccxt_async

from services.executor.reconciliation import (
    ExchangeOrder,
    Reconciliation,
    base_asset,
    compare_with_exchange,
)
from shared.ccxt_client import build_exchange, classify, retry_after_s
from shared.messages import OrderFilled, OrderPlaced, PositionChanged
from shared.pacing import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

TERMINAL_STATUSES: Final = frozenset({"closed", "canceled", "expired", "rejected"})
DETAIL_CHARS: Final = 300
CCXT_LOGGER: Final = "ccxt"
# Binance: no margin pair listings at load_markets (a signed call the broker does not need),
# and open orders of every symbol in one call at start.
LIVE_OPTIONS: Final[dict[str, dict[str, Any]]] = {
    "binance": {"fetchMargins": False, "warnOnFetchOpenOrdersWithoutSymbol": False},
}
_SIGNATURE: Final = re.compile(r"(signature=)[^&\s]+")
_WORD_START: Final = re.compile(r"(?<!^)(?=[A-Z])")


class BrokerUnavailable(Exception):
    """The exchange gave no usable answer within the retry budget; an order's state is unknown."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An order the exchange refused (or ended without any fill): a label and its words."""

    reason: str  # low-cardinality: insufficient_funds, invalid_order, expired, ...
    detail: str = ""


def fills_of(
    order: OrderPlaced, trades: Sequence[Mapping[str, Any]], *, quote: str, fallback_ms: int
) -> list[OrderFilled]:
    """Convert ccxt trades of `order` into fills; fees are valued in the quote asset.

    A fee charged in the base asset (Binance's default on a buy) is also taken off the
    quantity: `quantity` is how far the base holding moved, so positions match the balance.
    A fee in a third asset (BNB) cannot be valued here: it counts as 0, with a warning.
    """
    base = base_asset(order.symbol)
    fills = []
    for index, trade in enumerate(trades, start=1):
        price, amount = float(trade["price"]), float(trade["amount"])
        fees = trade.get("fees") or ([trade["fee"]] if trade.get("fee") else [])
        fee_quote = base_fee = 0.0
        for fee in fees:
            cost, currency = float(fee.get("cost") or 0.0), fee.get("currency")
            if currency == quote:
                fee_quote += cost
            elif currency == base:
                fee_quote += cost * price
                base_fee += cost
            elif cost:
                log.warning("fee of %s in %s not valued", order.client_order_id, currency)
        trade_id = trade.get("id")
        fills.append(
            OrderFilled(
                fill_id=f"{order.client_order_id}-{trade_id if trade_id else index}",
                client_order_id=order.client_order_id,
                exchange=order.exchange,
                symbol=order.symbol,
                side=order.side,
                price=price,
                quantity=amount - base_fee if order.side == "buy" else amount + base_fee,
                fee=fee_quote,
                filled_at_ms=int(trade.get("timestamp") or fallback_ms),
            )
        )
    return fills


def rejection_of(error: ccxt.BaseError, detail: str) -> Rejected:
    """Return the Rejected of an exchange refusal: its ccxt class as a snake_case label."""
    return Rejected(_WORD_START.sub("_", type(error).__name__).lower(), detail)


def is_duplicate(error: ccxt.BaseError) -> bool:
    """Return whether an order was refused because its client id is already taken."""
    return isinstance(error, ccxt.DuplicateOrderId) or (
        isinstance(error, ccxt.InvalidOrder) and "Duplicate order sent" in str(error)
    )


class LiveBroker:
    """Place market orders exactly once and reconcile with the exchange, over a ccxt client."""

    def __init__(
        self,
        exchange: ccxt_async.Exchange,
        *,
        backoff: Backoff | None = None,
        submissions: int = 3,
        reads: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Trade on `exchange`; submit an order at most `submissions` times, a read `reads`."""
        if submissions < 1 or reads < 1:
            raise ValueError(f"need submissions, reads >= 1, got {submissions}, {reads}")
        self.exchange = exchange
        self._backoff = backoff or Backoff(0.5, 8.0)
        self._submissions = submissions
        self._reads = reads
        self._sleep = sleep

    async def place_market(self, order: OrderPlaced) -> list[OrderFilled] | Rejected:
        """Place `order` as a market order once; return its fills or why it was refused.

        An order already on the exchange is not placed again: its fills are returned (so this
        also collects the fills of an order `reconcile` reports settled).
        """
        found = await self._look_up(order)
        if found is not None:
            log.info("order %s already on the exchange: not placed again", order.client_order_id)
            return await self._settle(order, found)
        for submission in range(self._submissions):
            outcome = await self._submit(order, submission)
            if outcome is not None:
                return outcome
        raise BrokerUnavailable(
            f"order {order.client_order_id} not placed after {self._submissions} submissions"
        )

    async def _submit(
        self, order: OrderPlaced, submission: int
    ) -> list[OrderFilled] | Rejected | None:
        """Send the order once and settle it; None when it surely did not get through."""
        try:
            placed = await self.exchange.create_order(
                order.symbol,
                "market",
                order.side,
                order.quantity,
                None,
                {"clientOrderId": order.client_order_id},
            )
        except (ccxt.ArgumentsRequired, ccxt.NotSupported):
            raise
        except ccxt.ExchangeError as error:
            if is_duplicate(error):
                log.info("order %s is a duplicate: looking it up", order.client_order_id)
                return await self._settle(order, await self._must_look_up(order))
            if isinstance(error, ccxt.AuthenticationError) and not isinstance(
                error, ccxt.PermissionDenied
            ):
                raise
            rejected = rejection_of(error, self._redacted(error))
            log.warning("order %s rejected: %s", order.client_order_id, rejected.detail)
            return rejected
        except ccxt.OperationFailed as error:
            log.warning(
                "order %s outcome unknown (%s, submission %d): looking it up",
                order.client_order_id,
                classify(error),
                submission + 1,
            )
            await self._pause(submission, error)
            found = await self._look_up(order)
            return None if found is None else await self._settle(order, found)
        return await self._settle(order, placed)

    def sellable(self, symbol: str, quantity: float) -> float:
        """Return how much of `quantity` the exchange takes in one order (cut to its lot
        size), or 0.0 when that is below its minimum: dust that cannot be sold."""
        try:
            amount = float(self.exchange.amount_to_precision(symbol, quantity))
        except ccxt.InvalidOrder:  # below the lot size
            return 0.0
        minimum = self.exchange.market(symbol)["limits"]["amount"].get("min") or 0.0
        return amount if amount >= minimum and amount > 0 else 0.0

    async def reconcile(
        self, known_open: Sequence[OrderPlaced], positions: Sequence[PositionChanged] = ()
    ) -> Reconciliation:
        """Compare the exchange's open orders and balances with the store's open orders and
        positions (those of other exchanges are left out)."""
        name = self.exchange.id
        known = [order for order in known_open if order.exchange == name]
        held = [position for position in positions if position.exchange == name]
        open_orders = await self._read("open orders", lambda: self.exchange.fetch_open_orders())
        balance = await self._read("balances", lambda: self.exchange.fetch_balance())
        on_exchange = [_exchange_order(o) for o in open_orders]
        open_ids = {o.client_order_id for o in on_exchange}
        looked_up: dict[str, ExchangeOrder | None] = {}
        for order in known:
            if order.client_order_id not in open_ids:
                found = await self._look_up(order)
                looked_up[order.client_order_id] = _exchange_order(found) if found else None
        totals = {asset: float(total or 0.0) for asset, total in balance["total"].items()}
        result = compare_with_exchange(
            known_open=known,
            open_on_exchange=on_exchange,
            looked_up=looked_up,
            balances=totals,
            positions=held,
        )
        log.info(
            "reconciled with %s: %d settled, %d unknown open, %d balance mismatches",
            name,
            len(result.settled),
            len(result.unknown_open),
            len(result.balance_mismatches),
        )
        return result

    async def _settle(
        self, order: OrderPlaced, found: dict[str, Any]
    ) -> list[OrderFilled] | Rejected:
        """Wait (bounded) until the order is done; return its fills, or Rejected if none."""
        for attempt in range(self._reads):
            status = found.get("status")
            if status in TERMINAL_STATUSES:
                if float(found.get("filled") or 0.0) <= 0:
                    return Rejected(status, f"the exchange reports the order {status}, unfilled")
                return await self._fills(order, found)
            await self._pause(attempt)  # open, or an answer without a status: not done yet
            found = await self._must_look_up(order)
        raise BrokerUnavailable(f"order {order.client_order_id} still {found.get('status')}")

    async def _fills(self, order: OrderPlaced, found: dict[str, Any]) -> list[OrderFilled]:
        trades = found.get("trades") or []
        if not trades:
            trades = await self._read(
                "trades",
                lambda: self.exchange.fetch_order_trades(found["id"], order.symbol),
            )
        if not trades:  # the order's own summary: one fill at its average price
            trades = [{"price": found["average"], "amount": found["filled"], **_fees(found)}]
        fallback_ms = found.get("lastTradeTimestamp") or found.get("timestamp")
        market = self.exchange.market(order.symbol)
        fills = fills_of(
            order, trades, quote=market["quote"], fallback_ms=fallback_ms or order.created_at_ms
        )
        log.info(
            "order %s filled: %d fills, %g %s",
            order.client_order_id,
            len(fills),
            sum(f.quantity for f in fills),
            order.symbol,
        )
        return fills

    async def _look_up(self, order: OrderPlaced) -> dict[str, Any] | None:
        """Return the exchange's order with `order`'s client id, or None if it has none."""

        async def fetch() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = await self.exchange.fetch_order(
                    None, order.symbol, {"clientOrderId": order.client_order_id}
                )
            except ccxt.OrderNotFound:
                return None
            return found

        return await self._read(f"order {order.client_order_id}", fetch)

    async def _must_look_up(self, order: OrderPlaced) -> dict[str, Any]:
        found = await self._look_up(order)
        if found is None:
            raise BrokerUnavailable(f"order {order.client_order_id} vanished from the exchange")
        return found

    async def _read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent read, retrying transient failures with backoff."""
        for attempt in range(self._reads):
            try:
                return await call()
            except ccxt.OperationFailed as error:
                log.warning(
                    "reading %s failed (%s), attempt %d", what, classify(error), attempt + 1
                )
                if attempt + 1 < self._reads:
                    await self._pause(attempt, error)
        raise BrokerUnavailable(f"could not read {what} in {self._reads} attempts")

    async def _pause(self, attempt: int, error: BaseException | None = None) -> None:
        wait_s = retry_after_s(self.exchange) if isinstance(error, ccxt.DDoSProtection) else None
        await self._sleep(self._backoff.next_delay(attempt, wait_s))

    def _redacted(self, error: BaseException) -> str:
        """Return an error's text without signatures or credentials, shortened."""
        text = _SIGNATURE.sub(r"\1***", str(error))
        for secret in (self.exchange.apiKey, self.exchange.secret):
            if secret:
                text = text.replace(secret, "***")
        return text[:DETAIL_CHARS]

    async def close(self) -> None:
        """Close the client's connections."""
        await self.exchange.close()


def _exchange_order(order: Mapping[str, Any]) -> ExchangeOrder:
    return ExchangeOrder(
        client_order_id=str(order.get("clientOrderId") or ""),
        symbol=str(order.get("symbol")),
        side=str(order.get("side")),
        status=str(order.get("status")),
        amount=float(order.get("amount") or 0.0),
        filled=float(order.get("filled") or 0.0),
    )


def _fees(order: Mapping[str, Any]) -> dict[str, Any]:
    return {"fees": order.get("fees") or ([order["fee"]] if order.get("fee") else [])}


async def connect_live_broker(
    exchange_id: str,
    *,
    api_key: str,
    secret: str,
    api_url: str | None = None,
    timeout_ms: int = 10_000,
    backoff: Backoff | None = None,
    submissions: int = 3,
    reads: int = 5,
) -> LiveBroker:
    """Build the authenticated ccxt client, load its markets, and return the broker over it.

    `api_key` and `secret` come from the caller's settings; `api_url` moves the client to
    another endpoint (the stand-in in tests).
    """
    # ccxt's DEBUG lines carry every request's headers (the API key) and signed URLs.
    logging.getLogger(CCXT_LOGGER).setLevel(max(logging.INFO, logging.getLogger(CCXT_LOGGER).level))
    exchange = build_exchange(
        exchange_id,
        api_url=api_url,
        api_key=api_key,
        secret=secret,
        timeout_ms=timeout_ms,
        options=LIVE_OPTIONS.get(exchange_id),
    )
    try:
        await exchange.load_markets()
    except BaseException:
        await exchange.close()
        raise
    return LiveBroker(exchange, backoff=backoff, submissions=submissions, reads=reads)
