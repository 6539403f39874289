"""Binance's GET /api/v3/exchangeInfo for the stand-in: listings in -> spot symbol entries out.

Realistic enough for ccxt's binance `parse_market`: status TRADING, base and quote assets,
precisions, the filters Binance sends for spot symbols, permissions and permissionSets.
"""

from __future__ import annotations

from typing import Any, Final

from tests.standin.series import Catalog, Listing

TICK_SIZE: Final = "0.00000001"  # the files' prices all sit on this grid
LOT_STEP: Final = "0.00100000"  # LOT_SIZE minQty and stepSize: orders trade whole steps of it
DEFAULT_WEIGHT_LIMIT: Final = 6000  # Binance spot's REQUEST_WEIGHT per minute


def exchange_info(catalog: Catalog, now_ms: int, weight_limit: int | None) -> dict[str, Any]:
    """Return the exchangeInfo body: rate limits and every listing as a trading spot symbol."""
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit or DEFAULT_WEIGHT_LIMIT,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(listing) for listing in catalog.listings.values()],
    }


def symbol_info(listing: Listing) -> dict[str, Any]:
    """Return one exchangeInfo symbol entry in Binance's spot format."""
    return {
        "symbol": listing.market_id,
        "status": "TRADING",
        "baseAsset": listing.base,
        "baseAssetPrecision": 8,
        "quoteAsset": listing.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": TICK_SIZE,
                "maxPrice": "1000.00000000",
                "tickSize": TICK_SIZE,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": LOT_STEP,
                "maxQty": "100000.00000000",
                "stepSize": LOT_STEP,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "10000.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "0.00010000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }
