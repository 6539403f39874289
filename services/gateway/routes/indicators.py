"""GET /api/v1/indicators: a market and a time range in -> its indicator values, oldest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.dependencies import StoreDep
from services.gateway.models import Indicators, MarketQuery
from services.gateway.routes import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/indicators", tags=["market data"])


@router.get("", summary="Indicator values of one market (null while warming up)")
async def list_indicators(
    query: Annotated[MarketQuery, Query()], store: StoreDep
) -> list[Indicators]:
    """Return rows oldest first: the first `limit` from `start_ms`, else the latest `limit`."""
    rows = await store.indicators_between(
        exchange=query.exchange,
        symbol=query.symbol,
        timeframe=query.timeframe,
        start_ms=query.start_ms,
        end_ms=query.end_ms,
        limit=query.limit,
    )
    return [Indicators.model_validate(row) for row in rows]
