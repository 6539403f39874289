"""GET /api/v1/positions: an optional symbol in -> the current position of each market out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.dependencies import StoreDep
from services.gateway.models import Position, PositionQuery
from services.gateway.routes import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/positions", tags=["trading"])


@router.get("", summary="Current positions")
async def list_positions(
    query: Annotated[PositionQuery, Query()], store: StoreDep
) -> list[Position]:
    """Return the position of every market, or of the markets of one symbol."""
    rows = await store.positions(symbol=query.symbol)
    return [Position.model_validate(row) for row in rows]
