"""GET /api/v1/symbols: nothing (or a symbol, a timeframe) in -> each market's status out: its
newest candle, how stale it is, where it came from, and whether it is paused by hand."""

from __future__ import annotations

import time
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query

from services.gateway.auth import require_read
from services.gateway.dependencies import SettingsDep, StoreDep
from services.gateway.models import MarketStatus, SymbolQuery
from services.gateway.routes import API_PREFIX, PROTECTED_ERRORS
from shared.messages import TIMEFRAME_MS

router = APIRouter(
    prefix=f"{API_PREFIX}/symbols",
    tags=["market data"],
    dependencies=[Depends(require_read)],
    responses=PROTECTED_ERRORS,
)

# A market is stale once this many whole timeframes passed without a closed candle: one late
# candle is normal (the collector polls), two missing are not.
STALE_AFTER_TIMEFRAMES: Final = 2


@router.get("", summary="Markets with their newest candle, staleness and source")
async def list_symbols(
    query: Annotated[SymbolQuery, Query()], store: StoreDep, settings: SettingsDep
) -> list[MarketStatus]:
    """Return every stored market (or those of one symbol and/or timeframe), by symbol."""
    # Not cached: the query is a few index probes per market, and staleness is a clock reading.
    rows = await store.market_status()
    paused = {row.symbol for row in await store.paused_symbols(settings.account)}
    now_ms = time.time() * 1000
    markets = []
    for row in rows:
        if query.symbol is not None and row.symbol != query.symbol:
            continue
        if query.timeframe is not None and row.timeframe != query.timeframe:
            continue
        timeframe_ms = TIMEFRAME_MS.get(row.timeframe, 0)
        closed_ms = row.open_time_ms + timeframe_ms
        staleness_s = max(0.0, (now_ms - closed_ms) / 1000)
        status = MarketStatus(
            exchange=row.exchange, symbol=row.symbol, timeframe=row.timeframe,
            last_open_time_ms=row.open_time_ms, last_close_time_ms=closed_ms,
            last_close=row.close, source=row.source, staleness_s=round(staleness_s, 3),
            stale=staleness_s * 1000 > STALE_AFTER_TIMEFRAMES * timeframe_ms,
            paused=row.symbol in paused,
        )  # fmt: skip
        markets.append(status)
    return markets
