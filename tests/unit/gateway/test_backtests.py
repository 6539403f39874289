"""Backtest jobs through the API: start one over stored candles, follow it, read its report and
chart; the report is the backtester's own for the same candles."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.collector.ingest import candles_from_rows
from services.executor.backtest import BacktestConfig, run_backtest
from services.executor.backtest_cli import result_json
from services.executor.candles import CandleArrays
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.bus import MemoryBus
from shared.store import Store, create_engine, upgrade
from tests.conftest import ohlcv_path

pytestmark = pytest.mark.timeout(60)

TOKEN = "token-of-the-backtest-tests-0123456789"


@pytest.fixture(scope="module")
def eth_rows() -> np.ndarray:
    return np.array(json.loads(ohlcv_path("ETH_BTC-1m.json").read_text()), dtype=float)


@pytest.fixture
def client(tmp_path: Path, eth_rows: np.ndarray) -> Iterator[TestClient]:
    url = "sqlite:///" + str(tmp_path / "gateway.db")
    upgrade(url)
    store = Store(create_engine(url))
    candles, _ = candles_from_rows(
        eth_rows.tolist(), exchange="binance", symbol="ETH/BTC", timeframe="1m", source="replay"
    )
    asyncio.run(store.save_candles(candles))
    settings = GatewaySettings(_env_file=None, block_ms=20, api_tokens_admin=TOKEN)
    app = create_app(settings, bus=MemoryBus(), store=store)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        yield test_client
    store.engine.dispose()


def finished(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 45
    while True:
        body = client.get(f"/api/v1/backtests/{job_id}").json()
        assert body["status"] in ("queued", "running", "done"), body
        if body["status"] == "done":
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_a_backtest_job_reports_what_the_backtester_finds_and_draws_its_chart(
    client: TestClient, eth_rows: np.ndarray
) -> None:
    config = {"exits": {"stop_loss_pct": 1.0, "trailing_pct": 1.5}, "fee_bps": 5}
    started = client.post("/api/v1/backtests", json={"symbols": ["ETH/BTC"], "config": config})
    assert started.status_code == 202, started.text
    body = finished(client, started.json()["id"])

    candles = CandleArrays(
        eth_rows[:, 0].astype(np.int64), eth_rows[:, 1], eth_rows[:, 2], eth_rows[:, 3],
        eth_rows[:, 4],
    )  # fmt: skip
    own = BacktestConfig(
        exits=BacktestConfig().exits.__class__(stop_loss_pct=1.0, trailing_pct=1.5), fee_bps=5
    )
    expected = result_json(run_backtest({"ETH/BTC": candles}, own), {"ETH/BTC": candles}, own)
    assert body["progress"] == 1.0
    assert body["result"]["report"] == json.loads(json.dumps(expected["report"]))
    assert len(body["result"]["trades"]) == len(expected["trades"]) > 10

    png = client.get(f"/api/v1/backtests/{body['id']}/chart")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG") and len(png.content) > 10_000
    html = client.get(f"/api/v1/backtests/{body['id']}/chart", params={"format": "html"})
    assert html.status_code == 200 and "<svg" in html.text
    assert "src=" not in html.text and "<link" not in html.text  # nothing fetched at run time


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ({"symbols": []}, 422, "symbols"),
        ({"symbols": ["ETH/BTC"], "timeframe": "7m"}, 422, "unknown timeframe"),
        ({"symbols": ["ETH/BTC"], "config": {"exits": {"stop_loss_pct": -1}}}, 422, "stop_loss"),
        ({"symbols": ["ETH/BTC"], "config": {"leverage": 10}}, 422, "unknown settings"),
    ],
)
def test_bad_backtest_requests_are_refused_with_the_reason(
    client: TestClient, request_body: dict[str, Any], status: int, message: str
) -> None:
    response = client.post("/api/v1/backtests", json=request_body)
    assert response.status_code == status
    assert message in response.text


def test_a_backtest_of_a_symbol_with_no_candles_fails_saying_so(client: TestClient) -> None:
    started = client.post("/api/v1/backtests", json={"symbols": ["XMR/BTC"]}).json()
    deadline = time.monotonic() + 10
    while (body := client.get(f"/api/v1/backtests/{started['id']}").json())["status"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "no stored 1m candles of XMR/BTC" in body["error"]
    assert client.get(f"/api/v1/backtests/{started['id']}/chart").status_code == 409
    assert client.get("/api/v1/backtests/unknown").status_code == 404
