"""GET /api/v1/fills: an optional symbol and a time range in -> fills, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.dependencies import StoreDep
from services.gateway.models import Fill, HistoryQuery
from services.gateway.routes import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/fills", tags=["trading"])


@router.get("", summary="Fills of orders")
async def list_fills(query: Annotated[HistoryQuery, Query()], store: StoreDep) -> list[Fill]:
    """Return fills oldest first: the first `limit` from `start_ms`, else the latest `limit`."""
    rows = await store.fills_between(
        symbol=query.symbol, start_ms=query.start_ms, end_ms=query.end_ms, limit=query.limit
    )
    return [Fill.model_validate(row) for row in rows]
