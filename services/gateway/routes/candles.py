"""GET /api/v1/candles: a market, a time range or a cursor in -> its candles, oldest first, out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from services.gateway.auth import require_read
from services.gateway.cache import Cached, Kind
from services.gateway.dependencies import CacheDep, StoreDep
from services.gateway.models import Candle, MarketQuery
from services.gateway.paging import PAGE_HEADERS, cached_json, next_page_headers
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS

router = APIRouter(
    prefix=f"{API_PREFIX}/candles",
    tags=["market data"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)


@router.get(
    "", summary="Closed candles of one market", response_model=list[Candle], responses=PAGE_HEADERS
)
async def list_candles(
    query: Annotated[MarketQuery, Query()], request: Request, store: StoreDep, cache: CacheDep
) -> Response:
    """Return candles oldest first: the first `limit` from `start_ms`, else the latest `limit`.

    When more rows match, `X-Next-Cursor` (and a `Link` to the next page) continue the walk:
    to older candles from the latest ones, to newer ones from a `start_ms`.
    """

    async def read() -> Cached:
        page = await store.json_page(
            "candles", symbol=query.symbol, timeframe=query.timeframe, exchange=query.exchange,
            start_ms=query.start_ms, end_ms=query.end_ms, position=query.position,
            limit=query.limit,
        )  # fmt: skip
        return Cached(page.body, next_page_headers(request, query, page))

    return await cached_json(request, cache, Kind.CANDLES, query.symbol, read)
