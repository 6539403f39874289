"""The collector as a process polling the stand-in exchange (also a process) through ccxt,
SIGKILLed mid-run and started again: it resumes from the last stored candle, no gap, no double."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from shared.messages import CandleClosed, Stream, decode
from tests.conftest import DATA_DIR
from tests.e2e.harness import Pipeline, free_port, wait_until
from tests.standin.remote import StandInProcess, run_standin_process
from tests.standin.request_log import RequestRecord
from tests.standin.series import DAY_MS, load_catalog

pytestmark = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=f"real market data not found: expected the team folder at {DATA_DIR}",
)

MINUTE = 60_000
SPEED = 60.0  # market seconds per wall second
SYMBOLS = ["ETH/BTC", "XMR/BTC", "ADA/BTC", "DASH/BTC"]


@pytest.fixture
def exchange() -> Iterator[StandInProcess]:
    with run_standin_process(speed=0.0) as running:
        yield running


def stored(database_url: str) -> dict[str, list[tuple[float, ...]]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT symbol, open_time_ms, open, high, low, close, volume FROM candles "
                    "ORDER BY symbol, open_time_ms"
                )
            ).all()
    finally:
        engine.dispose()
    out: dict[str, list[tuple[float, ...]]] = {symbol: [] for symbol in SYMBOLS}
    for symbol, *values in rows:
        out[symbol].append(tuple(values))
    return out


def test_collector_sigkilled_mid_run_resumes_without_gap_or_duplicate(
    exchange: StandInProcess, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    catalog = load_catalog(DATA_DIR)
    start_ms = catalog.end_ms - DAY_MS
    exchange.control.set_clock(now_ms=start_ms, speed=SPEED)
    anchor_s = time.time()  # the stand-in anchored its clock just before answering

    def now_ms() -> int:
        return start_ms + int((time.time() - anchor_s) * SPEED * 1000)

    # The backfill reaches two hours before the collector's first look at the clock, which a
    # busy machine may delay by many market minutes: each market's first kline request says.
    backfill_from: dict[str, int] = {}

    def first_request(symbol: str) -> RequestRecord | None:
        market_id = symbol.replace("/", "")
        asked = exchange.control.requests(path="/api/v3/klines")
        return next((r for r in asked if r.symbol == market_id), None)

    def served(symbol: str, until_ms: int) -> list[tuple[float, ...]] | None:
        if symbol not in backfill_from:
            first = first_request(symbol)
            if first is None or first.start_time is None:
                return None
            backfill_from[symbol] = first.start_time
        rows = catalog.series(symbol.replace("/", ""), "1m").rows
        return [
            (row[0], *map(float, row[1:]))
            for row in rows
            if backfill_from[symbol] <= row[0] and row[0] + MINUTE <= until_ms
        ]

    pipe = Pipeline(
        redis_url=redis_url,
        database_url=database_url,
        log_dir=tmp_path,
        per_service_env={
            "collector": {
                "SOURCE": "exchange",
                "EXCHANGE": "binance",
                "API_URL": exchange.base_url,
                "SYMBOLS": ",".join(SYMBOLS),
                "TIMEFRAMES": "1m",
                "BACKFILL_HOURS": "2",
                "SETTLE_MS": "1000",
                "CLOCK_START_MS": str(start_ms),
                "CLOCK_ANCHOR_S": repr(anchor_s),
                "CLOCK_SPEED": str(SPEED),
            }
        },
    )

    def current() -> bool:
        pipe.assert_running()
        have = stored(database_url)
        closed_by = now_ms() - 5 * MINUTE  # a few market seconds of slack per candle
        due = {s: served(s, closed_by) for s in SYMBOLS}
        return all(rows is not None and len(have[s]) >= len(rows) for s, rows in due.items())

    try:
        pipe.start("collector")
        wait_until(current, timeout_s=30, what="the backfill and the first polls")
        time.sleep(2.5)  # a few market minutes of incremental polling
        assert pipe.kill("collector") == -9
        killed_at = now_ms()
        mark = exchange.control.requests()[-1].index
        before_restart = stored(database_url)
        time.sleep(3.0)  # three market minutes pass with no collector
        pipe.start("collector")

        def resumed_every_market() -> bool:
            asked = exchange.control.requests(since_index=mark + 1, path="/api/v3/klines")
            return {r.symbol for r in asked} >= {s.replace("/", "") for s in SYMBOLS}

        # `current` allows a few minutes of slack, which the downtime alone may not exceed:
        # wait for the restarted collector's own requests first
        wait_until(resumed_every_market, timeout_s=30, what="the restarted collector to poll")
        wait_until(current, timeout_s=30, what="the restarted collector to catch up")
        time.sleep(2.0)
        end_ms = now_ms()
        pipe.stop()
    finally:
        pipe.stop()

    after = stored(database_url)
    resumed = exchange.control.requests(since_index=mark + 1, path="/api/v3/klines")
    for symbol in SYMBOLS:
        have = after[symbol]
        # the backfill reaches two hours before the collector's first look at the clock, which
        # lies between the clock's start and the market's first kline request
        first_asked = first_request(symbol)
        assert first_asked is not None and first_asked.start_time == backfill_from[symbol]
        earliest = (start_ms - 2 * 3_600_000) // MINUTE * MINUTE
        latest = (first_asked.clock_ms - 2 * 3_600_000) // MINUTE * MINUTE + 2 * MINUTE
        assert earliest <= have[0][0] <= latest, (symbol, earliest, have[0][0], latest)
        all_served, due = served(symbol, end_ms), served(symbol, end_ms - 3 * MINUTE)
        assert all_served is not None and due is not None
        assert have == all_served[: len(have)], (
            f"{symbol}: stored candles differ from the exchange's"
        )
        assert len(have) >= len(due), f"{symbol} fell behind"
        assert len({row[0] for row in have}) == len(have)
        # the first request after the restart starts right after the last stored candle
        first = next(r for r in resumed if r.symbol == symbol.replace("/", ""))
        assert before_restart[symbol], symbol
        assert first.start_time == before_restart[symbol][-1][0] + MINUTE, symbol
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(Stream.CANDLES.value)
    finally:
        client.close()
    published = [decode(Stream.CANDLES, fields[b"m"]) for _, fields in entries]
    keys = [(m.symbol, m.open_time_ms) for m in published if isinstance(m, CandleClosed)]
    assert len(keys) == len(set(keys)), "a candle was published twice"
    assert set(keys) == {(s, row[0]) for s in SYMBOLS for row in after[s]}
    print(
        f"\nkilled at market {killed_at}; {sum(map(len, after.values()))} candles stored and "
        f"published once each across the restart"
    )


def test_secrets_never_reach_the_log_even_at_debug(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """API key and secret, and a password inside the exchange URL (which ccxt's errors quote),
    with the exchange unreachable and LOG_LEVEL=DEBUG: the log says *** instead."""
    secrets = {
        "API_KEY": "key-7f3a9c1e55",
        "API_SECRET": "secret-c0ffee-4242",
        "password": "proxy-pass-31337",
    }
    dead_port = free_port()
    pipe = Pipeline(
        redis_url=redis_url,
        database_url=database_url,
        log_dir=tmp_path,
        per_service_env={
            "collector": {
                "SOURCE": "exchange",
                "SYMBOLS": "ETH/BTC",
                "API_URL": f"http://trader:{secrets['password']}@127.0.0.1:{dead_port}",
                "API_KEY": secrets["API_KEY"],
                "API_SECRET": secrets["API_SECRET"],
                "LOG_LEVEL": "DEBUG",
                "MAX_ATTEMPTS": "2",
                "BACKOFF_BASE_S": "0.05",
                "REQUEST_TIMEOUT_MS": "500",
            }
        },
    )
    log_file = tmp_path / "collector.log"
    try:
        pipe.start("collector")
        wait_until(
            lambda: log_file.exists() and "failed" in log_file.read_text(),
            timeout_s=30,
            what="the collector to log a failed request",
        )
        time.sleep(1.0)
    finally:
        pipe.stop()
    text = log_file.read_text()
    assert f"127.0.0.1:{dead_port}" in text  # the URL was logged...
    assert "***" in text  # ...with its password hidden
    for name, secret in secrets.items():
        assert secret not in text, f"{name} reached the log"
