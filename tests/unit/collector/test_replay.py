"""ReplaySource: ccxt JSON and CSV files in -> markets merged in time order, resumed, paced."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from services.collector.sources import Market, ReplayFileError, ReplaySource, parse_file_name
from shared.messages import CandleClosed
from tests.conftest import ohlcv_path

ETH: Market = ("binance", "ETH/BTC", "1m")
XMR: Market = ("binance", "XMR/BTC", "1m")


async def collect(
    source: ReplaySource, resume_after: Mapping[Market, int] | None = None
) -> list[list[CandleClosed]]:
    return [batch async for batch in source.batches(resume_after or {})]


def rows_of(name: str) -> list[list[float]]:
    rows: list[list[float]] = json.loads(ohlcv_path(name).read_bytes())
    return rows


def test_file_name_gives_symbol_and_timeframe() -> None:
    assert parse_file_name(Path("data/ETH_BTC-1m.json")) == ("ETH/BTC", "1m")
    assert parse_file_name(Path("XRP_ETH-5m.csv")) == ("XRP/ETH", "5m")


@pytest.mark.parametrize(
    "name", ["ETHBTC-1m.json", "ETH_BTC-7m.json", "ETH_BTC-1m.txt", "ETH_BTC.json"]
)
def test_bad_file_name_is_refused_before_reading(name: str) -> None:
    with pytest.raises(ReplayFileError, match=re.escape(name)):
        ReplaySource([Path(name)])


async def test_replay_merges_two_markets_in_time_order() -> None:
    eth, xmr = ohlcv_path("ETH_BTC-1m.json"), ohlcv_path("XMR_BTC-1m.json")
    source = ReplaySource([xmr, eth], batch_size=1_000)

    batches = await collect(source)

    candles = [candle for batch in batches for candle in batch]
    assert source.markets() == [XMR, ETH]
    assert max(len(batch) for batch in batches) == 1_000
    assert len(candles) == len(rows_of("ETH_BTC-1m.json")) + len(rows_of("XMR_BTC-1m.json"))
    order = [(c.open_time_ms, c.symbol) for c in candles]
    assert order == sorted(order)
    # Both markets interleave rather than one file following the other.
    assert {c.symbol for c in candles[:100]} == {"ETH/BTC", "XMR/BTC"}
    first = rows_of("ETH_BTC-1m.json")[0]
    eth_first = next(c for c in candles if c.symbol == "ETH/BTC")
    assert [eth_first.open_time_ms, eth_first.open, eth_first.high, eth_first.low] == first[:4]
    assert [eth_first.close, eth_first.volume] == first[4:]
    assert (eth_first.exchange, eth_first.timeframe, eth_first.source) == (
        "binance",
        "1m",
        "replay",
    )
    assert eth_first.closed_at_ms == 0


async def test_replay_skips_each_market_up_to_its_resume_time() -> None:
    eth, xmr = ohlcv_path("ETH_BTC-1m.json"), ohlcv_path("XMR_BTC-1m.json")
    eth_times = [int(row[0]) for row in rows_of("ETH_BTC-1m.json")]
    resume_at = eth_times[5_000]

    batches = await collect(ReplaySource([eth, xmr]), {ETH: resume_at})

    candles = [candle for batch in batches for candle in batch]
    eth_seen = [c.open_time_ms for c in candles if c.symbol == "ETH/BTC"]
    assert eth_seen == eth_times[5_001:]
    assert sum(c.symbol == "XMR/BTC" for c in candles) == len(rows_of("XMR_BTC-1m.json"))


async def test_replay_paces_candles_at_the_given_speed() -> None:
    # 600x market time: one 1m candle every 0.1 s of wall clock.
    source = ReplaySource([ohlcv_path("ETH_BTC-1m.json")], speed=600)
    times: list[tuple[float, int]] = []

    async for batch in source.batches({}):
        times.append((time.monotonic(), batch[0].open_time_ms))
        if len(times) == 6:
            break

    wall_s = times[-1][0] - times[0][0]
    expected_s = (times[-1][1] - times[0][1]) / 1000 / 600
    assert expected_s >= 0.4
    assert expected_s - 0.01 <= wall_s <= expected_s + 0.15


async def test_paced_replay_groups_markets_of_the_same_minute_in_one_batch() -> None:
    eth, xmr = ohlcv_path("ETH_BTC-1m.json"), ohlcv_path("XMR_BTC-1m.json")
    source = ReplaySource([eth, xmr], speed=6_000)
    batches: list[list[CandleClosed]] = []

    async for batch in source.batches({}):
        batches.append(batch)
        if len(batches) == 10:
            break

    # A minute is 10 ms here: a loop running late yields every due minute in one batch, but a
    # minute's markets are never split across two batches.
    minutes = [{c.open_time_ms for c in batch} for batch in batches]
    assert all(minutes), "an empty batch"
    for earlier, later in itertools.pairwise(minutes):
        assert max(earlier) < min(later)
    assert any(
        len(batch) == 2 and len(times) == 1 for batch, times in zip(batches, minutes, strict=True)
    )


async def test_csv_file_reads_like_the_same_json_file(tmp_path: Path) -> None:
    rows = rows_of("ETH_BTC-1m.json")[:50]
    json_file = tmp_path / "ETH_BTC-1m.json"
    json_file.write_text(json.dumps(rows))
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    csv_file = csv_dir / "ETH_BTC-1m.csv"
    lines = ["open_time,open,high,low,close,volume", *(",".join(map(str, row)) for row in rows)]
    csv_file.write_text("\n".join(lines) + "\n")

    from_json = await collect(ReplaySource([json_file]))
    from_csv = await collect(ReplaySource([csv_file]))

    assert from_csv == from_json
    assert len(from_csv[0]) == 50


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("ETH_BTC-1m.json", '{"rows": []}', "not a ccxt OHLCV array"),
        ("ETH_BTC-1m.json", "[[1516423920000, 1, 2, 0.5]]", "not a ccxt OHLCV array"),
        ("ETH_BTC-1m.json", "[[1516423920000.5, 1, 2, 0.5, 1, 3]]", "not a whole ms"),
        ("ETH_BTC-1m.csv", "time,o,h,l,c,v\n1,2,3,4,5,6\n", "header lacks columns"),
        ("ETH_BTC-1m.csv", "open_time,open,high,low,close,volume\n1,2,x,4,5,6\n", "line 2"),
    ],
)
async def test_bad_file_content_names_the_file_and_the_problem(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(ReplayFileError, match=message) as raised:
        await collect(ReplaySource([path]))
    assert str(path) in str(raised.value)
