"""The stand-in's signed trading endpoints: request parameters in -> Binance answers out.

Serves what ccxt's binance sends for `create_order`, `fetch_order`, `fetch_open_orders`,
`cancel_order`, `fetch_order_trades` / `fetch_my_trades` and `fetch_balance`:
POST/GET/DELETE /api/v3/order, GET /api/v3/openOrders, /api/v3/myTrades and /api/v3/account
(`ORDER_ROUTES`; app.py serves them through the same log, weight and faults as the rest).
Parameters are validated and answers written as Binance does (market and limit orders;
`newOrderRespType` ACK, RESULT or FULL, FULL by default, with its fill list); the trading
itself is the account's (orders.py).

Signed: every request needs an X-MBX-APIKEY header (else 401, -2014) and `timestamp` and
`signature` parameters (else 400, -1102). Any values pass: the stand-in knows no secret, and
its clock is market time, so neither the signature nor recvWindow is checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from tests.standin.exchange_info import LOT_STEP
from tests.standin.orders import Account, Fill, NewOrder, Order
from tests.standin.series import Listing
from tests.standin.wire import BinanceError, decimal

if TYPE_CHECKING:
    from tests.standin.market import Market

CLIENT_ID_PATTERN: Final = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
DEFAULT_TRADES: Final = 500
MAX_TRADES: Final = 1000

ZERO: Final = decimal(0)
RESULT_FIELDS: Final = (  # an order's fields in a RESULT answer, after the ACK ones
    "price",
    "origQty",
    "executedQty",
    "origQuoteOrderQty",
    "cummulativeQuoteQty",
    "status",
    "timeInForce",
    "type",
    "side",
    "workingTime",
    "selfTradePreventionMode",
)

Params: TypeAlias = Mapping[str, str]
Producer: TypeAlias = Callable[["Market", Params, Mapping[str, str]], tuple[Any, int]]


def fill_entry(fill: Fill) -> dict[str, Any]:
    """Return the entry of a FULL order answer's `fills` list."""
    return {
        "price": decimal(fill.price),
        "qty": decimal(fill.qty),
        "commission": decimal(fill.commission),
        "commissionAsset": fill.commission_asset,
        "tradeId": fill.trade_id,
    }


def trade_body(fill: Fill) -> dict[str, Any]:
    """Return a trade as GET /api/v3/myTrades lists it."""
    return {
        "symbol": fill.market_id,
        "id": fill.trade_id,
        "orderId": fill.order_id,
        "orderListId": -1,
        "price": decimal(fill.price),
        "qty": decimal(fill.qty),
        "quoteQty": decimal(fill.quote_qty),
        "commission": decimal(fill.commission),
        "commissionAsset": fill.commission_asset,
        "time": fill.time_ms,
        "isBuyer": fill.is_buyer,
        "isMaker": False,
        "isBestMatch": True,
    }


def order_body(order: Order) -> dict[str, Any]:
    """Return an order as GET /api/v3/order and /api/v3/openOrders show it."""
    return {
        "symbol": order.market_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": decimal(order.price),
        "origQty": decimal(order.orig_qty),
        "executedQty": decimal(order.executed_qty),
        "cummulativeQuoteQty": decimal(order.cumulative_quote),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "stopPrice": ZERO,
        "icebergQty": ZERO,
        "time": order.time_ms,
        "updateTime": order.update_ms,
        "isWorking": True,
        "workingTime": order.time_ms,
        "origQuoteOrderQty": ZERO,
        "selfTradePreventionMode": "NONE",
    }


def placed_body(order: Order, response_type: str) -> dict[str, Any]:
    """Return the answer of POST /api/v3/order for `newOrderRespType` ACK, RESULT or FULL."""
    ack = {
        "symbol": order.market_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": order.update_ms,
    }
    if response_type == "ACK":
        return ack
    body = order_body(order)
    result = {**ack, **{name: body[name] for name in RESULT_FIELDS}}
    if response_type == "RESULT":
        return result
    return {**result, "fills": [fill_entry(f) for f in order.fills]}


def account_body(account: Account, now_ms: int) -> dict[str, Any]:
    """Return GET /api/v3/account: commission rates and every asset's balance."""
    rate = decimal(account.commission_bps / 10_000)
    balances = [
        {"asset": asset, "free": decimal(free), "locked": decimal(locked)}
        for asset, (free, locked) in account.balances().items()
    ]
    bps = round(account.commission_bps)
    return {
        "makerCommission": bps,
        "takerCommission": bps,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate, "taker": rate, "buyer": ZERO, "seller": ZERO},
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms,
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": 1,
    }


def _required(params: Params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise BinanceError(
            400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def _number(params: Params, name: str) -> float:
    text = _required(params, name)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BinanceError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is "
            "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    return value


def _whole(params: Params, name: str) -> int | None:
    text = params.get(name)
    if not text:
        return None
    if not text.isdigit():
        raise BinanceError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(text)


def check_signed(params: Params, headers: Mapping[str, str]) -> None:
    """Refuse a signed request without an API key header, a timestamp or a signature."""
    if not headers.get("x-mbx-apikey"):
        raise BinanceError(401, -2014, "API-key format invalid.")
    _required(params, "timestamp")
    _required(params, "signature")


def _listing(market: Market, params: Params) -> Listing:
    listing = market.catalog.listings.get(_required(params, "symbol"))
    if listing is None:
        raise BinanceError(400, -1121, "Invalid symbol.")
    return listing


def parse_new_order(market: Market, params: Params) -> NewOrder:
    """Validate POST /api/v3/order parameters as Binance does (market and limit orders)."""
    listing = _listing(market, params)
    side = _required(params, "side")
    if side not in ("BUY", "SELL"):
        raise BinanceError(400, -1117, "Invalid side.")
    order_type = _required(params, "type")
    if order_type not in ("MARKET", "LIMIT"):
        raise BinanceError(400, -1116, "Invalid orderType.")
    quantity = _number(params, "quantity")
    step = float(LOT_STEP)
    if quantity < step or abs(quantity / step - round(quantity / step)) > 1e-6:
        raise BinanceError(400, -1013, "Filter failure: LOT_SIZE")
    price, time_in_force = 0.0, "GTC"
    if order_type == "LIMIT":
        price = _number(params, "price")
        time_in_force = _required(params, "timeInForce")
    client_id = params.get("newClientOrderId")
    if client_id is not None and not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise BinanceError(
            400,
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; legal range is "
            "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
        )
    response_type = params.get("newOrderRespType", "FULL")
    if response_type not in ("ACK", "RESULT", "FULL"):
        raise BinanceError(400, -1115, "Invalid newOrderRespType.")
    return NewOrder(
        listing, side, order_type, quantity, price, time_in_force, client_id, response_type
    )


def new_order(market: Market, params: Params, headers: Mapping[str, str]) -> tuple[Any, int]:
    """POST /api/v3/order: place (and, if marketable, fill) one order."""
    check_signed(params, headers)
    request = parse_new_order(market, params)
    price = market.last_price(request.listing)
    order = market.account.place(request, price, market.clock.now_ms())
    return placed_body(order, request.response_type), 0


def _order_key(params: Params) -> tuple[int | None, str | None]:
    """Return the (orderId, origClientOrderId) naming one order; Binance wants one of them."""
    order_id, client_id = _whole(params, "orderId"), params.get("origClientOrderId")
    if order_id is None and not client_id:
        raise BinanceError(
            400,
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        )
    return order_id, client_id


def query_order(market: Market, params: Params, headers: Mapping[str, str]) -> tuple[Any, int]:
    """GET /api/v3/order: one order by orderId or origClientOrderId."""
    check_signed(params, headers)
    market_id = _listing(market, params).market_id
    return order_body(market.account.query(market_id, *_order_key(params))), 0


def cancel_order(market: Market, params: Params, headers: Mapping[str, str]) -> tuple[Any, int]:
    """DELETE /api/v3/order: cancel one open order."""
    check_signed(params, headers)
    market_id, now_ms = _listing(market, params).market_id, market.clock.now_ms()
    order = market.account.cancel(market_id, *_order_key(params), now_ms)
    return {
        **placed_body(order, "RESULT"),
        "origClientOrderId": order.client_order_id,
        "clientOrderId": params.get("newClientOrderId") or f"cancel-{order.order_id}",
    }, 0


def open_orders(market: Market, params: Params, headers: Mapping[str, str]) -> tuple[Any, int]:
    """GET /api/v3/openOrders: open orders of `symbol`, or of every symbol without one."""
    check_signed(params, headers)
    market_id = _listing(market, params).market_id if params.get("symbol") else None
    rows = [order_body(o) for o in market.account.open_orders(market_id)]
    return rows, len(rows)


def my_trades(market: Market, params: Params, headers: Mapping[str, str]) -> tuple[Any, int]:
    """GET /api/v3/myTrades: the account's trades in `symbol`, optionally of one `orderId`."""
    check_signed(params, headers)
    market_id = _listing(market, params).market_id
    order_id = _whole(params, "orderId")
    limit = min(_whole(params, "limit") or DEFAULT_TRADES, MAX_TRADES)
    rows = [trade_body(f) for f in market.account.trades(market_id, order_id, limit)]
    return rows, len(rows)


def account(market: Market, params: Params, headers: Mapping[str, str]) -> tuple[Any, int]:
    """GET /api/v3/account: balances and commission rates."""
    check_signed(params, headers)
    return account_body(market.account, market.clock.now_ms()), 0


# (HTTP method, path under /api/v3, endpoint name for weights and faults, producer)
ORDER_ROUTES: Final[tuple[tuple[str, str, str, Producer], ...]] = (
    ("POST", "order", "newOrder", new_order),
    ("GET", "order", "queryOrder", query_order),
    ("DELETE", "order", "cancelOrder", cancel_order),
    ("GET", "openOrders", "openOrders", open_orders),
    ("GET", "myTrades", "myTrades", my_trades),
    ("GET", "account", "account", account),
)
