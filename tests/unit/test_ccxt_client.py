"""ccxt client: URL rebasing, request weight, Retry-After parsing, error labels (no sockets)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro
import pytest

from shared.ccxt_client import (
    DEFAULT_KLINES_WEIGHT,
    OUTCOMES,
    build_exchange,
    checked_ohlcv,
    classify,
    http_status,
    klines_weight,
    parse_retry_after,
    rebase_url,
    rebase_urls,
    retry_after_s,
)

BASE = "http://127.0.0.1:8123"


def strings_in(value: Any) -> Iterator[str]:
    """Yield every string inside nested dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def test_rebased_url_keeps_path_and_query() -> None:
    assert rebase_url("https://api.binance.com/api/v3", BASE) == f"{BASE}/api/v3"
    assert rebase_url("https://x.com/a/b?c=1", BASE) == f"{BASE}/a/b?c=1"


def test_rebased_url_puts_the_base_path_in_front() -> None:
    assert rebase_url("https://api.binance.com/api/v3", f"{BASE}/proxy/") == f"{BASE}/proxy/api/v3"


def test_websocket_urls_keep_a_websocket_scheme() -> None:
    assert rebase_url("wss://stream.binance.com:9443/ws", BASE) == "ws://127.0.0.1:8123/ws"
    assert rebase_url("wss://stream.binance.com/ws", "https://h.example") == "wss://h.example/ws"


def test_nested_urls_are_all_rebased() -> None:
    urls = {"public": "https://a.com/v1", "ws": {"spot": "wss://b.com/ws"}, "list": ["https://c/x"]}
    assert rebase_urls(urls, BASE) == {
        "public": f"{BASE}/v1",
        "ws": {"spot": "ws://127.0.0.1:8123/ws"},
        "list": [f"{BASE}/x"],
    }


def test_binance_client_points_every_rest_url_at_the_base() -> None:
    original = ccxt_async.binance().urls["api"]
    exchange = build_exchange("binance", api_url=BASE)
    rebased = exchange.urls["api"]
    assert set(rebased) == set(original)
    for key, url in original.items():
        path = url.split("binance.com", 1)[1].split("/", 1)[1]
        assert rebased[key] == f"{BASE}/{path}", key
    assert ccxt_async.binance().urls["api"] == original  # the class definition is untouched


def test_streaming_client_websocket_urls_follow_the_base() -> None:
    exchange = build_exchange("binance", api_url=BASE, streaming=True)
    assert isinstance(exchange, ccxt.pro.binance)
    assert exchange.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:8123/ws"
    assert exchange.urls["api"]["public"] == f"{BASE}/api/v3"
    assert all(
        s.startswith(("http://127.0.0.1", "ws://127.0.0.1"))
        for s in strings_in(exchange.urls["api"])
    )


def test_binance_client_has_ccxt_rate_limiter_off_and_loads_spot_markets_only() -> None:
    exchange = build_exchange("binance", timeout_ms=2_500)
    assert exchange.enableRateLimit is False
    assert exchange.timeout == 2_500
    assert exchange.options["fetchMarkets"]["types"] == ["spot"]
    assert exchange.options["fetchCurrencies"] is False
    assert exchange.urls["api"]["public"] == "https://api.binance.com/api/v3"


def test_given_options_override_the_defaults() -> None:
    exchange = build_exchange("binance", options={"fetchMarkets": {"types": ["spot", "linear"]}})
    assert exchange.options["fetchMarkets"]["types"] == ["spot", "linear"]


def test_unknown_exchange_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ccxt exchange"):
        build_exchange("no_such_exchange")


def test_secret_is_never_logged_or_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exchange = build_exchange("binance", api_key="key-123", secret="s3cr3t-value")
    assert exchange.secret == "s3cr3t-value"
    assert "s3cr3t-value" not in caplog.text
    assert "s3cr3t-value" not in repr(exchange) + str(exchange)


@pytest.mark.parametrize("limit", [1, 100, 500, 1000])
def test_binance_spot_klines_weigh_two_at_any_limit(limit: int) -> None:
    assert klines_weight(build_exchange("binance"), limit) == 2


def test_exchange_without_a_klines_cost_gets_the_default_weight() -> None:
    assert klines_weight(build_exchange("kraken"), 500) == DEFAULT_KLINES_WEIGHT == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": " 0 "}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Content-Type": "application/json"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_is_read_in_any_case(
    headers: dict[str, str], expected: float | None
) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_comes_from_the_last_response() -> None:
    exchange = build_exchange("binance")
    assert retry_after_s(exchange) is None
    exchange.last_response_headers = {"Retry-After": "7", "x-mbx-used-weight-1m": "10"}
    assert retry_after_s(exchange) == 7.0


BODY_429 = '{"code":-1003,"msg":"Too much request weight used; current limit is 6000."}'
BODY_418 = '{"code":-1003,"msg":"Way too much request weight used; IP banned until 1."}'
URL = "http://127.0.0.1:8123/api/v3/klines?interval=1m&limit=500&symbol=ETHBTC"


@pytest.mark.parametrize(
    ("error", "label"),
    [
        # as ccxt's binance raises them (handle_errors): both refusals are DDoSProtection
        (ccxt.DDoSProtection(f"binance 429 Too Many Requests {BODY_429}"), "rate_limited"),
        (ccxt.DDoSProtection(f"binance 418 I'm a Teapot {BODY_418}"), "banned"),
        # as ccxt's base class raises them (httpExceptions), the URL first
        (ccxt.RateLimitExceeded(f"okx GET {URL} 429 Too Many Requests"), "rate_limited"),
        (ccxt.DDoSProtection(f"okx GET {URL} 418 I'm a Teapot"), "banned"),
        (ccxt.DDoSProtection("kucoin blocked by the CDN"), "banned"),
        (
            ccxt.RateLimitExceeded('binance {"code":-1003,"msg":"Too many requests"}'),
            "rate_limited",
        ),
        (ccxt.ExchangeNotAvailable(f"binance GET {URL} 500 Internal Server Error"), "unavailable"),
        (ccxt.OnMaintenance("binance system maintenance"), "unavailable"),
        (ccxt.OperationFailed('binance {"code":-1001,"msg":"Internal error"}'), "unavailable"),
        (ccxt.RequestTimeout(f"binance GET {URL}"), "timeout"),
        (TimeoutError(), "timeout"),
        (ccxt.BadResponse("binance OHLCV row 0 is malformed"), "bad_response"),
        (ccxt.NullResponse("binance empty body"), "bad_response"),
        (ValueError("Expecting value: line 1 column 1"), "bad_response"),
        (ccxt.BadSymbol('binance {"code":-1121,"msg":"Invalid symbol."}'), "bad_request"),
        (ccxt.BadRequest('binance {"code":-1120,"msg":"Invalid interval."}'), "bad_request"),
        (ccxt.AuthenticationError("binance invalid key"), "bad_request"),
        (ccxt.NetworkError("binance connection reset"), "network"),
        (ConnectionResetError(), "network"),
    ],
)
def test_errors_get_their_outcome_label(error: BaseException, label: str) -> None:
    assert classify(error) == label
    assert label in OUTCOMES


def test_status_is_read_where_ccxt_writes_it_not_from_the_url() -> None:
    assert http_status(ccxt.DDoSProtection(f"binance GET {URL} 429 Too Many Requests")) == 429
    assert http_status(ccxt.DDoSProtection("binance 418 I'm a Teapot")) == 418
    assert http_status(ccxt.BadResponse("binance malformed")) is None


def test_well_formed_ohlcv_rows_pass_unchanged() -> None:
    rows = [
        [1_516_423_980_000, 0.0894, 0.0894, 0.0891, 0.0891, 81.45],
        [1_516_424_040_000, 1, 2, 1, 2, 0],
    ]
    assert checked_ohlcv("binance", rows) is rows
    assert checked_ohlcv("binance", []) == []


@pytest.mark.parametrize(
    "rows",
    [
        [[5, None, None, None, None, None]],  # what ccxt's binance makes of a cut-off JSON body
        [[1_516_423_980_000, 0.1, 0.1, 0.1]],
        [[1_516_423_980_000, 0.1, 0.1, float("nan"), 0.1, 1.0]],
        [[1_516_423_980_000.0, 0.1, 0.1, 0.1, 0.1, 1.0]],
        '[[1516423980000,"0.0894',
        {"code": -1003},
    ],
)
def test_malformed_ohlcv_answers_are_bad_responses(rows: Any) -> None:
    with pytest.raises(ccxt.BadResponse) as raised:
        checked_ohlcv("binance", rows)
    assert classify(raised.value) == "bad_response"
