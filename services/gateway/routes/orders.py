"""GET /api/v1/orders: an optional symbol and a time range in -> orders, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.dependencies import StoreDep
from services.gateway.models import HistoryQuery, Order
from services.gateway.routes import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/orders", tags=["trading"])


@router.get("", summary="Orders placed for signals, with their status")
async def list_orders(query: Annotated[HistoryQuery, Query()], store: StoreDep) -> list[Order]:
    """Return orders oldest first: the first `limit` from `start_ms`, else the latest `limit`."""
    rows = await store.orders_between(
        symbol=query.symbol, start_ms=query.start_ms, end_ms=query.end_ms, limit=query.limit
    )
    return [Order.model_validate(row) for row in rows]
