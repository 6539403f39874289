"""GET /api/v1/pnl: nothing in -> realized and unrealized PnL, per market and in total, and the
equity; GET /api/v1/pnl/equity: a time range in -> the equity curve, one point per fill."""

from __future__ import annotations

import json
import time
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from services.gateway.auth import require_read
from services.gateway.cache import ALL_SYMBOLS, Cached, Kind
from services.gateway.dependencies import CacheDep, SettingsDep, StoreDep
from services.gateway.models import EquityPoint, EquityQuery, PnlSummary
from services.gateway.paging import cached_json
from services.gateway.pnl import equity_curve, market_pnl
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS
from shared.store import Store

router = APIRouter(
    prefix=f"{API_PREFIX}/pnl",
    tags=["trading"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)

# Fills replayed for the equity curve: years of a busy paper account.
MAX_FILLS: Final = 200_000

_points = TypeAdapter(list[EquityPoint])


@router.get("", summary="PnL per market and in total, and the equity", response_model=PnlSummary)
async def read_pnl(
    request: Request, store: StoreDep, settings: SettingsDep, cache: CacheDep
) -> Response:
    """Return realized PnL (net of fees), open positions marked at their newest stored close,
    and the equity: the executor's initial equity plus both."""

    async def read() -> Cached:
        positions = await store.positions()
        newest: dict[tuple[str, str], tuple[int, float]] = {}
        for row in await store.market_status():  # the newest close of any timeframe
            key = (row.exchange, row.symbol)
            if key not in newest or row.open_time_ms > newest[key][0]:
                newest[key] = (row.open_time_ms, row.close)
        markets = market_pnl(positions, {key: close for key, (_, close) in newest.items()})
        count, fees = await store.fill_totals()
        initial = await _initial_equity(store, settings.account)
        realized = sum(market.realized_pnl for market in markets)
        unrealized = sum(market.unrealized_pnl for market in markets)
        summary = PnlSummary(
            account=settings.account, as_of_ms=int(time.time() * 1000), initial_equity=initial,
            equity=None if initial is None else initial + realized + unrealized,
            realized_pnl=realized, unrealized_pnl=unrealized, fees=fees, fills=count,
            open_positions=sum(1 for market in markets if market.quantity > 0), markets=markets,
        )  # fmt: skip
        return Cached(summary.model_dump_json().encode())

    return await cached_json(request, cache, Kind.PNL, ALL_SYMBOLS, read)


@router.get(
    "/equity", summary="The equity curve, one point per fill", response_model=list[EquityPoint]
)
async def read_equity_curve(
    query: Annotated[EquityQuery, Query()],
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    cache: CacheDep,
) -> Response:
    """Return the account after each fill, oldest first: the first `limit` points from
    `start_ms`, else the latest `limit` (up to `end_ms`). Open quantities are marked at their
    market's last fill price; the `pnl` summary marks them at the newest close instead."""

    async def read() -> Cached:
        fills = await store.fills_between(start_ms=0, end_ms=query.end_ms, limit=MAX_FILLS)
        points = equity_curve(fills, await _initial_equity(store, settings.account))
        if query.start_ms is not None:
            points = [p for p in points if p.time_ms >= query.start_ms][: query.limit]
        else:
            points = points[-query.limit :]
        return Cached(_points.dump_json(points))

    return await cached_json(request, cache, Kind.PNL, ALL_SYMBOLS, read)


async def _initial_equity(store: Store, account: str) -> float | None:
    saved = await store.trader_state(account)
    if saved is None:
        return None
    value = json.loads(saved.snapshot).get("initial_equity")
    return float(value) if isinstance(value, int | float) else None
