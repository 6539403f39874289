"""GET /api/v1/signals: an optional symbol and a time range in -> signals, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.dependencies import StoreDep
from services.gateway.models import HistoryQuery, Signal
from services.gateway.routes import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/signals", tags=["trading"])


@router.get("", summary="Signals emitted by the strategies")
async def list_signals(query: Annotated[HistoryQuery, Query()], store: StoreDep) -> list[Signal]:
    """Return signals oldest first: the first `limit` from `start_ms`, else the latest `limit`."""
    rows = await store.signals_between(
        symbol=query.symbol, start_ms=query.start_ms, end_ms=query.end_ms, limit=query.limit
    )
    return [Signal.model_validate(row) for row in rows]
