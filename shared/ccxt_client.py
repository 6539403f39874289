"""ccxt client (I/O edge): exchange id and endpoint in -> async client, weights, error labels out.

The collector paces its own requests (a token bucket sized by `klines_weight`), so ccxt's rate
limiter is off; it reads `retry_after_s` after a refusal and reports failures by `classify`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro

logger = logging.getLogger(__name__)

Outcome: TypeAlias = Literal[
    "rate_limited", "banned", "unavailable", "timeout", "bad_response", "bad_request", "network"
]
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "rate_limited",
    "banned",
    "unavailable",
    "timeout",
    "bad_response",
    "bad_request",
    "network",
)
OHLCV_FIELDS: Final = 6
DEFAULT_KLINES_WEIGHT: Final = 1  # exchanges whose ccxt definition gives no weight for klines

# ccxt puts the HTTP status right after the exchange id ("binance 429 Too Many Requests {...}",
# binance's handle_errors) or after the method and URL ("binance GET http://... 503 ...").
_STATUS_IN_MESSAGE: Final = re.compile(r"^\S+ (?:[A-Z]+ \S+ )?(?P<status>[1-5]\d\d)\b")
_WS_SCHEMES: Final = {"http": "ws", "https": "wss"}


def build_exchange(
    exchange_id: str,
    *,
    api_url: str | None = None,
    api_key: str | None = None,
    secret: str | None = None,
    timeout_ms: int = 10_000,
    options: Mapping[str, Any] | None = None,
    streaming: bool = False,
) -> ccxt_async.Exchange:
    """Create ccxt's async client for `exchange_id`, its URLs moved to `api_url` if given.

    ccxt's own rate limiter is off. For binance, `load_markets()` asks for spot markets only
    (one GET /api/v3/exchangeInfo) and currencies are taken from the markets rather than from
    the signed capital endpoint. `options` are merged over those defaults. `streaming` gives
    the ccxt.pro client (the same REST methods plus watch_* over WebSocket, whose URLs move to
    `api_url` too, as ws:// or wss://).
    """
    module = ccxt.pro if streaming else ccxt_async
    exchange_class = getattr(module, exchange_id, None)
    if exchange_class is None or exchange_id not in module.exchanges:
        raise ValueError(f"unknown ccxt exchange {exchange_id!r}")
    merged: dict[str, Any] = {}
    if exchange_id == "binance":
        merged = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}
    merged.update(options or {})
    config: dict[str, Any] = {"enableRateLimit": False, "timeout": timeout_ms, "options": merged}
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    exchange: ccxt_async.Exchange = exchange_class(config)
    if api_url is not None:
        exchange.urls = {**exchange.urls, "api": rebase_urls(exchange.urls["api"], api_url)}
    logger.info(
        "built %s client: api_url=%s timeout_ms=%d authenticated=%s",
        exchange_id,
        api_url or "default",
        timeout_ms,
        api_key is not None,
    )
    return exchange


def rebase_url(url: str, base_url: str) -> str:
    """Move `url` onto `base_url`, keeping its path and query.

    `base_url`'s own path is put in front: rebase_url("https://api.binance.com/api/v3",
    "http://127.0.0.1:8123/proxy") -> "http://127.0.0.1:8123/proxy/api/v3". WebSocket URLs
    keep a WebSocket scheme (ws for an http base, wss for https).
    """
    original, base = urlsplit(url), urlsplit(base_url)
    scheme = base.scheme
    if original.scheme in ("ws", "wss"):
        scheme = _WS_SCHEMES.get(base.scheme, base.scheme)
    path = base.path.rstrip("/") + original.path
    return urlunsplit((scheme, base.netloc, path, original.query, original.fragment))


def rebase_urls(urls: Any, base_url: str) -> Any:
    """Return a copy of a ccxt `urls['api']` value (str, or dicts/lists of them) on `base_url`."""
    if isinstance(urls, str):
        return rebase_url(urls, base_url)
    if isinstance(urls, Mapping):
        return {key: rebase_urls(value, base_url) for key, value in urls.items()}
    if isinstance(urls, list):
        return [rebase_urls(value, base_url) for value in urls]
    return urls


def klines_weight(exchange: ccxt_async.Exchange, limit: int) -> int:
    """Return the request weight of one OHLCV request for `limit` rows.

    Read from ccxt's API cost table: binance gives spot GET klines a cost of 0.4 where one
    unit of Binance weight (GET ping) costs 0.2, i.e. weight 2, Binance's documented weight for
    GET /api/v3/klines; tables with a `byLimit` ladder give the step for `limit`. Exchanges
    without a klines entry and a ping to scale it by get `DEFAULT_KLINES_WEIGHT`.
    """
    public_get = _api_section(exchange.api, "public", "get")
    klines, ping = public_get.get("klines"), public_get.get("ping")
    if not isinstance(klines, Mapping) or not isinstance(ping, Mapping):
        return DEFAULT_KLINES_WEIGHT
    cost = exchange.calculate_rate_limiter_cost("public", "GET", "klines", {"limit": limit}, klines)
    unit = ping.get("cost", 1)
    if not cost or not unit:
        return DEFAULT_KLINES_WEIGHT
    return max(1, round(float(cost) / float(unit)))


def _api_section(api: Any, *keys: str) -> Mapping[str, Any]:
    for key in keys:
        api = api.get(key) if isinstance(api, Mapping) else None
    return api if isinstance(api, Mapping) else {}


def retry_after_s(exchange: ccxt_async.Exchange) -> float | None:
    """Return the last response's Retry-After in seconds, or None if it is absent or a date."""
    headers = getattr(exchange, "last_response_headers", None)
    if not isinstance(headers, Mapping):
        return None
    return parse_retry_after(headers)


def parse_retry_after(headers: Mapping[str, Any]) -> float | None:
    """Return the Retry-After header (any case) as seconds >= 0, or None if absent or unparsable."""
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "retry-after":
            try:
                seconds = float(str(value).strip())
            except ValueError:
                return None
            return seconds if seconds >= 0 and seconds != float("inf") else None
    return None


def checked_ohlcv(exchange_id: str, rows: Any) -> list[list[float]]:
    """Return `rows` if they are OHLCV rows [ms, o, h, l, c, v] of numbers; else raise BadResponse.

    ccxt does not raise on a malformed JSON body with status 200: its binance parser walks the
    body's characters and returns rows like [5, None, None, None, None, None]. Calling this on
    every fetch_ohlcv result turns such answers into ccxt.BadResponse ("bad_response").
    """
    if not isinstance(rows, list):
        raise ccxt.BadResponse(f"{exchange_id} OHLCV answer is a {type(rows).__name__}, not rows")
    for index, row in enumerate(rows):
        if (
            not isinstance(row, list)
            or len(row) < OHLCV_FIELDS
            or not isinstance(row[0], int)
            or row[0] <= 0
            or not all(_is_finite_number(value) for value in row[1:OHLCV_FIELDS])
        ):
            raise ccxt.BadResponse(f"{exchange_id} OHLCV row {index} is malformed: {row!r:.200}")
    return rows


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def http_status(error: BaseException) -> int | None:
    """Return the HTTP status ccxt wrote into an exception's message, or None."""
    match = _STATUS_IN_MESSAGE.match(str(error))
    return int(match["status"]) if match else None


def classify(error: BaseException) -> Outcome:
    """Return the low-cardinality outcome label of a failed exchange request.

    ccxt's binance raises DDoSProtection for both 429 and 418, so the status in the message
    tells them apart; a DDoSProtection without one (a CDN block) counts as banned.
    """
    if isinstance(error, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        status = http_status(error)
        if status == 429 or (status != 418 and isinstance(error, ccxt.RateLimitExceeded)):
            return "rate_limited"
        return "banned"
    if isinstance(error, ccxt.RequestTimeout | TimeoutError):
        return "timeout"
    if isinstance(error, ccxt.ExchangeNotAvailable):
        return "unavailable"
    if isinstance(error, ccxt.BadResponse | ValueError):
        return "bad_response"
    if isinstance(error, ccxt.ExchangeError):
        return "bad_request"
    if isinstance(error, ccxt.NetworkError | OSError):
        return "network"
    if isinstance(error, ccxt.OperationFailed):
        return "unavailable"  # e.g. Binance -1001 "Internal error": the exchange side failed
    return "network"
