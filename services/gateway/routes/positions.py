"""GET /api/v1/positions: an optional symbol in -> the current position of each market out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from services.gateway.auth import require_read
from services.gateway.cache import ALL_SYMBOLS, Cached, Kind
from services.gateway.dependencies import CacheDep, StoreDep
from services.gateway.models import Position, PositionQuery
from services.gateway.paging import cached_json
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS

router = APIRouter(
    prefix=f"{API_PREFIX}/positions",
    tags=["trading"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)

_positions = TypeAdapter(list[Position])


@router.get("", summary="Current positions", response_model=list[Position])
async def list_positions(
    query: Annotated[PositionQuery, Query()], request: Request, store: StoreDep, cache: CacheDep
) -> Response:
    """Return the position of every market, or of the markets of one symbol."""

    async def read() -> Cached:
        rows = await store.positions(symbol=query.symbol)
        return Cached(_positions.dump_json(_positions.validate_python(rows, from_attributes=True)))

    scope = query.symbol or ALL_SYMBOLS
    return await cached_json(request, cache, Kind.POSITIONS, scope, read)
