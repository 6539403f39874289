"""GET /api/v1/orders: an optional symbol and a time range in -> orders, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from services.gateway.auth import require_read
from services.gateway.cache import ALL_SYMBOLS, Cached, Kind
from services.gateway.dependencies import CacheDep, StoreDep
from services.gateway.models import HistoryQuery, Order
from services.gateway.paging import cached_json
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS

router = APIRouter(
    prefix=f"{API_PREFIX}/orders",
    tags=["trading"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)

_orders = TypeAdapter(list[Order])


@router.get("", summary="Orders placed for signals, with their status", response_model=list[Order])
async def list_orders(
    query: Annotated[HistoryQuery, Query()], request: Request, store: StoreDep, cache: CacheDep
) -> Response:
    """Return orders oldest first: the first `limit` from `start_ms`, else the latest `limit`."""

    async def read() -> Cached:
        rows = await store.orders_between(
            symbol=query.symbol, start_ms=query.start_ms, end_ms=query.end_ms, limit=query.limit
        )
        return Cached(_orders.dump_json(_orders.validate_python(rows, from_attributes=True)))

    scope = query.symbol or ALL_SYMBOLS
    return await cached_json(request, cache, Kind.ORDERS, scope, read)
