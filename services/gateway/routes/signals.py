"""GET /api/v1/signals: an optional symbol and a time range in -> signals, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from services.gateway.auth import require_read
from services.gateway.cache import ALL_SYMBOLS, Cached, Kind
from services.gateway.dependencies import CacheDep, StoreDep
from services.gateway.models import HistoryQuery, Signal
from services.gateway.paging import cached_json
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS

router = APIRouter(
    prefix=f"{API_PREFIX}/signals",
    tags=["trading"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)

_signals = TypeAdapter(list[Signal])


@router.get("", summary="Signals emitted by the strategies", response_model=list[Signal])
async def list_signals(
    query: Annotated[HistoryQuery, Query()], request: Request, store: StoreDep, cache: CacheDep
) -> Response:
    """Return signals oldest first: the first `limit` from `start_ms`, else the latest `limit`."""

    async def read() -> Cached:
        rows = await store.signals_between(
            symbol=query.symbol, start_ms=query.start_ms, end_ms=query.end_ms, limit=query.limit
        )
        return Cached(_signals.dump_json(_signals.validate_python(rows, from_attributes=True)))

    scope = query.symbol or ALL_SYMBOLS
    return await cached_json(request, cache, Kind.SIGNALS, scope, read)
