"""GET /api/v1/fills: an optional symbol and a time range in -> fills, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from services.gateway.auth import require_read
from services.gateway.cache import ALL_SYMBOLS, Cached, Kind
from services.gateway.dependencies import CacheDep, StoreDep
from services.gateway.models import Fill, HistoryQuery
from services.gateway.paging import cached_json
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS

router = APIRouter(
    prefix=f"{API_PREFIX}/fills",
    tags=["trading"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)

_fills = TypeAdapter(list[Fill])


@router.get("", summary="Fills of orders", response_model=list[Fill])
async def list_fills(
    query: Annotated[HistoryQuery, Query()], request: Request, store: StoreDep, cache: CacheDep
) -> Response:
    """Return fills oldest first: the first `limit` from `start_ms`, else the latest `limit`."""

    async def read() -> Cached:
        rows = await store.fills_between(
            symbol=query.symbol, start_ms=query.start_ms, end_ms=query.end_ms, limit=query.limit
        )
        return Cached(_fills.dump_json(_fills.validate_python(rows, from_attributes=True)))

    scope = query.symbol or ALL_SYMBOLS
    return await cached_json(request, cache, Kind.FILLS, scope, read)
