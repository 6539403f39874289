"""GET /api/v1/candles: a market and a time range in -> its candles, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.dependencies import StoreDep
from services.gateway.models import Candle, MarketQuery
from services.gateway.routes import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/candles", tags=["market data"])


@router.get("", summary="Closed candles of one market")
async def list_candles(query: Annotated[MarketQuery, Query()], store: StoreDep) -> list[Candle]:
    """Return candles oldest first: the first `limit` from `start_ms`, else the latest `limit`."""
    rows = await store.candles_between(
        exchange=query.exchange,
        symbol=query.symbol,
        timeframe=query.timeframe,
        start_ms=query.start_ms,
        end_ms=query.end_ms,
        limit=query.limit,
    )
    return [Candle.model_validate(row) for row in rows]
