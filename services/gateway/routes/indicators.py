"""GET /api/v1/indicators: a market and a range in -> its stored indicator values, oldest first;
GET /api/v1/indicators/computed: the same with parameters of one's own, computed on demand."""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any

import msgspec
import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from services.gateway.auth import require_read
from services.gateway.cache import Cached, Kind
from services.gateway.dependencies import CacheDep, StoreDep
from services.gateway.models import ComputedIndicators, ComputedQuery, Indicators, MarketQuery
from services.gateway.paging import PAGE_HEADERS, cached_json, next_page_headers
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS
from services.indicators.engine import IndicatorParams
from services.indicators.on_demand import Frame, IndicatorCache, compute_stored

router = APIRouter(
    prefix=f"{API_PREFIX}/indicators",
    tags=["market data"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)

_PARAMS = tuple(field.name for field in dataclasses.fields(IndicatorParams))
_COLUMNS = tuple(ComputedIndicators.model_fields)
_json = msgspec.json.Encoder()


@router.get(
    "",
    summary="Stored indicator values of one market (null while warming up)",
    response_model=list[Indicators],
    responses=PAGE_HEADERS,
)
async def list_indicators(
    query: Annotated[MarketQuery, Query()], request: Request, store: StoreDep, cache: CacheDep
) -> Response:
    """Return rows oldest first: the first `limit` from `start_ms`, else the latest `limit`;
    `X-Next-Cursor` continues as for candles."""

    async def read() -> Cached:
        page = await store.json_page(
            "indicators", symbol=query.symbol, timeframe=query.timeframe,
            exchange=query.exchange, start_ms=query.start_ms, end_ms=query.end_ms,
            position=query.position, limit=query.limit,
        )  # fmt: skip
        return Cached(page.body, next_page_headers(request, query, page))

    return await cached_json(request, cache, Kind.INDICATORS, query.symbol, read)


@router.get(
    "/computed",
    summary="Indicators of stored candles computed with the parameters given",
    response_model=list[ComputedIndicators],
)
async def compute_indicators(
    query: Annotated[ComputedQuery, Query()], request: Request, store: StoreDep, cache: CacheDep
) -> Response:
    """Compute every indicator over the stored candles `candles` would return for the same
    market and range, warmed up on the candles before it, so the values equal a pass over the
    whole history. Any parameter left out takes the indicators service's default."""
    try:
        params = IndicatorParams(**{name: getattr(query, name) for name in _PARAMS})
    except ValueError as error:  # a rule between parameters the query model does not know
        detail = [{"loc": ("query",), "msg": str(error), "type": "value_error"}]
        raise RequestValidationError(detail) from None

    async def compute() -> Cached:
        frame = await compute_stored(
            store, _frames(request), exchange=query.exchange, symbol=query.symbol,
            timeframe=query.timeframe, params=params, start_ms=query.start_ms,
            end_ms=query.end_ms, limit=query.limit,
        )  # fmt: skip
        return Cached(_encode_frame(frame))

    return await cached_json(request, cache, Kind.COMPUTED, query.symbol, compute)


def _frames(request: Request) -> IndicatorCache:
    frames: IndicatorCache = request.app.state.indicator_frames
    return frames


def _encode_frame(frame: Frame) -> bytes:
    """Encode a computed frame as rows of the response model (non-finite numbers as null)."""
    if not frame:
        return b"[]"
    columns: list[list[Any]] = []
    for name in _COLUMNS:
        values = frame[name]
        if values.dtype.kind == "f":
            columns.append([None if not math.isfinite(v) else v for v in values.tolist()])
        else:
            columns.append(np.asarray(values).tolist())
    return _json.encode(
        [dict(zip(_COLUMNS, row, strict=True)) for row in zip(*columns, strict=True)]
    )
