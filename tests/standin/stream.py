"""Binance-style kline WebSocket stream: SUBSCRIBE requests in -> kline events as the clock moves.

Served at /ws and /ws/{stream} (ccxt.pro's binance opens /ws/0 on the spot WebSocket base).
The protocol subset is Binance's: {"method": "SUBSCRIBE", "params": ["ethbtc@kline_1m"],
"id": 1} is answered {"result": null, "id": 1}; UNSUBSCRIBE and LIST_SUBSCRIPTIONS likewise.
Each subscription gets, in order, the candles that closed since its last push (final, "x":
true) and the still-open one (partial values, "x": false), whenever the clock has moved, and at
least every `UPDATE_S` of wall time as Binance repeats the open candle. Candles come from the
same series and clock as the REST klines; response and data faults do not apply here.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import time
from dataclasses import dataclass, replace
from typing import Any, Final

from fastapi import WebSocket, WebSocketDisconnect

from tests.standin.market import Market, binance_row, partial_row

TICK_S: Final = 0.1
UPDATE_S: Final = 1.0  # Binance pushes spot klines every 1-2 s even when nothing traded
Subscription = tuple[str, str]  # (Binance id, interval)


def parse_stream_name(market: Market, name: str) -> Subscription | None:
    """Return (ETHBTC, 1m) for "ethbtc@kline_1m" if that symbol and interval exist, else None."""
    symbol, _, channel = name.partition("@")
    interval = channel.removeprefix("kline_")
    listing = market.catalog.listings.get(symbol.upper())
    if not channel.startswith("kline_") or listing is None or interval not in listing.intervals():
        return None
    return listing.market_id, interval


@dataclass(frozen=True)
class Cursor:
    """How far a subscription has been pushed: the last final candle, the clock at the last push."""

    closed_through_ms: int
    pushed_at_ms: int = -1
    pushed_wall_s: float = float("-inf")  # time.monotonic() of the last push


def start_cursor(market: Market, subscription: Subscription) -> Cursor:
    """Return the cursor of a new subscription: candles closed before now are not pushed."""
    series = market.catalog.series(*subscription)
    now = market.clock.now_ms()
    index = bisect.bisect_right(series.open_times, now - series.interval_ms) - 1
    return Cursor(series.open_times[index] if index >= 0 else -1)


def kline_events(
    market: Market, subscription: Subscription, cursor: Cursor
) -> tuple[list[dict[str, Any]], Cursor]:
    """Return the kline events due since `cursor` at the clock's now, and the moved cursor."""
    market_id, interval = subscription
    series = market.catalog.series(market_id, interval)
    now, step = market.clock.now_ms(), series.interval_ms
    first = bisect.bisect_right(series.open_times, cursor.closed_through_ms)
    last = bisect.bisect_right(series.open_times, now)
    events, closed_through_ms = [], cursor.closed_through_ms
    for row in series.rows[first:last]:
        closed = row[0] + step <= now
        served = row if closed else partial_row(row, (now - row[0]) / step)
        events.append(_event(market_id, interval, binance_row(served, step), closed, now))
        if closed:
            closed_through_ms = row[0]
    return events, Cursor(closed_through_ms, now, cursor.pushed_wall_s)


def _event(market_id: str, interval: str, row: list[Any], closed: bool, now: int) -> dict[str, Any]:
    t, o, h, lo, c, v, close_time, q, trades, taker_base, taker_quote, _ = row
    kline = {
        "t": t,
        "T": close_time,
        "s": market_id,
        "i": interval,
        "f": t,  # trade ids: the stand-in has none, the open time keeps them increasing
        "L": t + trades,
        "o": o,
        "c": c,
        "h": h,
        "l": lo,
        "v": v,
        "n": trades,
        "x": closed,
        "q": q,
        "V": taker_base,
        "Q": taker_quote,
        "B": "0",
    }
    return {"e": "kline", "E": now, "s": market_id, "k": kline}


async def kline_stream(websocket: WebSocket) -> None:
    """Serve one WebSocket client: answer its requests and push its subscriptions' klines."""
    market: Market = websocket.app.state.market
    await websocket.accept()
    cursors: dict[Subscription, Cursor] = {}
    pusher = asyncio.create_task(_push(websocket, market, cursors))
    try:
        while True:
            request = json.loads(await websocket.receive_text())
            await websocket.send_json(_reply(market, cursors, request))
    except (WebSocketDisconnect, json.JSONDecodeError):
        pass
    finally:
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pusher


def _reply(
    market: Market, cursors: dict[Subscription, Cursor], request: dict[str, Any]
) -> dict[str, Any]:
    method, names, request_id = (
        request.get("method"),
        request.get("params") or [],
        request.get("id"),
    )
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": [f"{m.lower()}@kline_{i}" for m, i in cursors], "id": request_id}
    parsed = [parse_stream_name(market, str(name)) for name in names]
    subscriptions = [s for s in parsed if s is not None]
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or len(subscriptions) < len(parsed):
        return {"error": {"code": 2, "msg": f"Invalid request: {request!r:.100}"}, "id": request_id}
    for subscription in subscriptions:
        if method == "SUBSCRIBE":
            cursors.setdefault(subscription, start_cursor(market, subscription))
        else:
            cursors.pop(subscription, None)
    return {"result": None, "id": request_id}


async def _push(websocket: WebSocket, market: Market, cursors: dict[Subscription, Cursor]) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        for subscription, cursor in list(cursors.items()):
            wall_s = time.monotonic()
            moved = market.clock.now_ms() != cursor.pushed_at_ms
            if not moved and wall_s - cursor.pushed_wall_s < UPDATE_S:
                continue
            events, moved_cursor = kline_events(market, subscription, cursor)
            cursors[subscription] = replace(moved_cursor, pushed_wall_s=wall_s)
            for event in events:
                await websocket.send_json(event)
