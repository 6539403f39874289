"""The stand-in's HTTP app: Binance spot REST requests in -> answers, faults and log records out.

Serves GET /api/v3/ping, /api/v3/time, /api/v3/exchangeInfo and /api/v3/klines, the endpoints
ccxt's binance needs for `load_markets()` and `fetch_ohlcv()`, the signed order and account
endpoints of `trading.py` (`ORDER_ROUTES`), plus the control API of `control.py` under
/_standin/. Each Binance request is, in order: logged on arrival, weighed
(X-MBX-USED-WEIGHT-1M; 429 past the configured limit), met by the oldest matching response
fault if any, else answered from the market. Faults that come after processing
(`AFTER_PROCESSING`: an order placed, then its answer lost) let the market act first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response

from tests.standin.control import router as control_router
from tests.standin.exchange_info import DEFAULT_WEIGHT_LIMIT
from tests.standin.faults import (
    AFTER_PROCESSING,
    Banned,
    Hang,
    Malformed,
    OrderRejected,
    OrderServerError,
    OrderTimeout,
    RateLimited,
    ResponseFault,
    ServerError,
)
from tests.standin.market import Market, parse_klines_query
from tests.standin.request_log import NO_ANSWER, RequestRecord
from tests.standin.stream import kline_stream
from tests.standin.trading import ORDER_ROUTES, Producer
from tests.standin.weight import ENDPOINT_WEIGHT
from tests.standin.wire import BinanceError

API_PREFIX: Final = "/api/v3"
JSON_TYPE: Final = "application/json;charset=UTF-8"
HANG_POLL_S: Final = 0.05
MALFORMED_LENGTH: Final = 40  # characters kept: mid-way through the first kline row

RATE_LIMITED_MSG: Final = (
    "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
    "Please use WebSocket Streams for live updates to avoid polling the API."
)
BANNED_MSG: Final = (
    "Way too much request weight used; IP banned until {until}. "
    "Please use WebSocket Streams for live updates to avoid bans."
)
INTERNAL_ERROR_MSG: Final = "Internal error; unable to process your request. Please try again."


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = json.dumps(body, separators=(",", ":"))
    return Response(text, status_code=status, media_type=JSON_TYPE, headers=headers)


@dataclass
class _Answer:
    """What a request ends with, before it becomes a Response and a log record."""

    status: int
    body: Any = None
    text: str | None = None  # a raw body (fault pages, malformed JSON) instead of `body`
    media_type: str = JSON_TYPE
    rows: int = 0
    fault: str | None = None
    retry_after_s: float | None = None


def _fault_answer(fault: ResponseFault, market: Market) -> _Answer | None:
    """Return the answer a response fault gives, or None for faults handled elsewhere."""
    if isinstance(fault, RateLimited):
        limit = market.weight.limit or DEFAULT_WEIGHT_LIMIT
        body = {"code": -1003, "msg": RATE_LIMITED_MSG.format(limit=limit)}
        return _Answer(429, body, fault=fault.kind, retry_after_s=fault.retry_after_s)
    if isinstance(fault, Banned):
        until = int(time.time() * 1000) + fault.retry_after_s * 1000
        body = {"code": -1003, "msg": BANNED_MSG.format(until=until)}
        return _Answer(418, body, fault=fault.kind, retry_after_s=fault.retry_after_s)
    if isinstance(fault, OrderRejected):
        return _Answer(fault.status, {"code": fault.code, "msg": fault.msg}, fault=fault.kind)
    if isinstance(fault, ServerError | OrderServerError):
        if fault.binance_body:
            body = {"code": -1001, "msg": INTERNAL_ERROR_MSG}
            return _Answer(fault.status, body, fault=fault.kind)
        page = f"<html><body><h1>{fault.status} Server Error</h1></body></html>"
        return _Answer(fault.status, text=page, media_type="text/html", fault=fault.kind)
    return None


async def _hang(request: Request, fault: Hang | OrderTimeout) -> bool:
    """Answer nothing until the client leaves (True) or `hang_s` pass (False)."""
    deadline = time.monotonic() + fault.hang_s
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(HANG_POLL_S)
    return False


@dataclass(frozen=True)
class _Arrival:
    """When a request came, by every clock the log keeps."""

    index: int
    clock_ms: int
    monotonic_s: float
    wall_s: float


async def serve(
    request: Request,
    endpoint: str,
    produce: Callable[[], tuple[Any, int]],
    params: Mapping[str, str] | None = None,
) -> Response:
    """Answer one Binance request through weight, faults and `produce` (body, rows); log it.

    `params` are the request's parameters (default: its query string).
    """
    market: Market = request.app.state.market
    arrival = _Arrival(
        market.log.next_index(), market.clock.now_ms(), time.monotonic(), time.time()
    )
    params = request.query_params if params is None else params
    used, weight_retry_s = market.weight.add(ENDPOINT_WEIGHT[endpoint])
    answer = await _answer(request, endpoint, produce, weight_retry_s, params)
    market.log.append(_record(request, arrival, answer, used, params))
    headers = {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)}
    if answer.retry_after_s is not None:
        headers["Retry-After"] = str(int(answer.retry_after_s))
    if answer.status == NO_ANSWER:
        return Response(status_code=504)  # nobody is listening any more
    if answer.text is not None:
        return Response(answer.text, answer.status, headers, media_type=answer.media_type)
    return _json(answer.body, answer.status, headers)


async def _answer(
    request: Request,
    endpoint: str,
    produce: Callable[[], tuple[Any, int]],
    weight_retry_s: float | None,
    params: Mapping[str, str],
) -> _Answer:
    market: Market = request.app.state.market
    if weight_retry_s is not None:
        body = {"code": -1003, "msg": RATE_LIMITED_MSG.format(limit=market.weight.limit)}
        return _Answer(429, body, fault="weight", retry_after_s=weight_retry_s)
    fault = market.faults.take_response_fault(endpoint, params.get("symbol"))
    done = _produced(produce, fault) if isinstance(fault, AFTER_PROCESSING) else None
    if isinstance(fault, Hang | OrderTimeout) and await _hang(request, fault):
        return _Answer(NO_ANSWER, fault=fault.kind)
    if done is not None and isinstance(fault, OrderTimeout):
        return done  # the client outwaited the hang: the late answer of what was done
    if fault is not None and (refusal := _fault_answer(fault, market)) is not None:
        return refusal
    answer = _produced(produce, fault)
    if answer.status != 200:
        return answer
    if isinstance(fault, Malformed):
        text = json.dumps(answer.body, separators=(",", ":"))
        answer.text = text[: max(1, min(len(text) - 1, MALFORMED_LENGTH))]
    return answer


def _produced(produce: Callable[[], tuple[Any, int]], fault: ResponseFault | None) -> _Answer:
    """Return the market's answer to a request (its error, if Binance would refuse it)."""
    try:
        body, rows = produce()
    except BinanceError as error:
        return _Answer(error.status, error.body())
    return _Answer(200, body, rows=rows, fault=fault.kind if fault else None)


def _record(
    request: Request, arrival: _Arrival, answer: _Answer, used: int, params: Mapping[str, str]
) -> RequestRecord:
    return RequestRecord(
        index=arrival.index,
        clock_ms=arrival.clock_ms,
        monotonic_s=arrival.monotonic_s,
        wall_s=arrival.wall_s,
        answered_monotonic_s=time.monotonic(),
        path=request.url.path,
        symbol=params.get("symbol"),
        interval=params.get("interval"),
        start_time=_int_or_none(params.get("startTime")),
        end_time=_int_or_none(params.get("endTime")),
        limit=_int_or_none(params.get("limit")),
        status=answer.status,
        rows=answer.rows,
        fault=answer.fault,
        retry_after_s=answer.retry_after_s,
        used_weight=used,
        method=request.method,
        client_order_id=params.get("newClientOrderId") or params.get("origClientOrderId"),
    )


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


async def ping(request: Request) -> Response:
    """GET /api/v3/ping: an empty object."""
    return await serve(request, "ping", lambda: ({}, 0))


async def server_time(request: Request) -> Response:
    """GET /api/v3/time: the stand-in clock's now."""
    market: Market = request.app.state.market
    return await serve(request, "time", lambda: ({"serverTime": market.clock.now_ms()}, 0))


async def exchange_info(request: Request) -> Response:
    """GET /api/v3/exchangeInfo: every listing, or the one `symbol` names."""
    market: Market = request.app.state.market

    def produce() -> tuple[Any, int]:
        info = market.exchange_info()
        symbol = request.query_params.get("symbol")
        if symbol is not None:
            info["symbols"] = [s for s in info["symbols"] if s["symbol"] == symbol]
            if not info["symbols"]:
                raise BinanceError(400, -1121, "Invalid symbol.")
        return info, 0

    return await serve(request, "exchangeInfo", produce)


async def klines(request: Request) -> Response:
    """GET /api/v3/klines: candles of one symbol and interval, Binance semantics."""
    market: Market = request.app.state.market

    def produce() -> tuple[Any, int]:
        rows = market.klines(parse_klines_query(market.catalog, request.query_params))
        return rows, len(rows)

    return await serve(request, "klines", produce)


def signed_route(endpoint: str, produce: Producer) -> Callable[[Request], Any]:
    """Return the handler of a signed endpoint: query and form-body parameters to `produce`."""

    async def handle(request: Request) -> Response:
        # Binance reads parameters from both; the query string wins where both have one
        body = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        params = {**body, **request.query_params}
        market: Market = request.app.state.market
        return await serve(
            request, endpoint, lambda: produce(market, params, request.headers), params
        )

    handle.__name__ = endpoint
    return handle


def create_app(market: Market) -> FastAPI:
    """Build the stand-in app serving `market`."""
    app = FastAPI(title="candlebus exchange stand-in", openapi_url="/_standin/openapi.json")
    app.state.market = market
    app.add_api_route(f"{API_PREFIX}/ping", ping, methods=["GET"])
    app.add_api_route(f"{API_PREFIX}/time", server_time, methods=["GET"])
    app.add_api_route(f"{API_PREFIX}/exchangeInfo", exchange_info, methods=["GET"])
    app.add_api_route(f"{API_PREFIX}/klines", klines, methods=["GET"])
    for method, path, endpoint, produce in ORDER_ROUTES:
        app.add_api_route(f"{API_PREFIX}/{path}", signed_route(endpoint, produce), methods=[method])
    app.add_api_websocket_route("/ws", kline_stream)
    app.add_api_websocket_route("/ws/{stream}", kline_stream)
    app.include_router(control_router)
    return app
