"""Hand controls through the API: kill switch, paused symbols, close requests, strategy
parameters. Reads need a token, changes the admin one; what they write is what the executor
and the signals service read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.signals.config import StoredParams
from services.signals.strategy import BandsParams, StochRsiBands
from shared.bus import MemoryBus
from shared.store import Store, TradingStep, create_engine, upgrade
from tests.fakes import position

READ = {"Authorization": "Bearer read-token-for-the-controls-tests-01"}
ADMIN = {"Authorization": "Bearer admin-token-for-the-controls-tests-2"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = "sqlite:///" + str(tmp_path / "controls.db")
    upgrade(url)
    store = Store(create_engine(url))
    yield store
    store.engine.dispose()


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    settings = GatewaySettings(
        _env_file=None,
        block_ms=20,
        api_tokens_read=READ["Authorization"].removeprefix("Bearer "),
        api_tokens_admin=ADMIN["Authorization"].removeprefix("Bearer "),
    )
    with TestClient(create_app(settings, bus=MemoryBus(), store=store)) as client:
        yield client


def test_the_kill_switch_is_read_with_a_token_and_set_only_with_the_admin_one(
    client: TestClient, store: Store
) -> None:
    assert client.get("/api/v1/controls").status_code == 401
    before = client.get("/api/v1/controls", headers=READ).json()
    assert before["kill_switch"] is False and before["updated_at_ms"] is None

    change = {"on": True, "reason": "exchange incident"}
    assert client.put("/api/v1/controls/kill-switch", json=change).status_code == 401
    assert client.put("/api/v1/controls/kill-switch", json=change, headers=READ).status_code == 403
    answer = client.put("/api/v1/controls/kill-switch", json=change, headers=ADMIN)
    assert answer.status_code == 200
    assert answer.json()["kill_switch"] is True and answer.json()["reason"] == "exchange incident"
    stored = asyncio.run(store.controls("paper"))
    assert stored is not None and stored.kill_switch  # what the executor reads

    off = client.put("/api/v1/controls/kill-switch", json={"on": False}, headers=ADMIN)
    assert off.json()["kill_switch"] is False
    bad = client.put("/api/v1/controls/kill-switch", json={"on": "maybe"}, headers=ADMIN)
    assert bad.status_code == 422


def test_symbols_are_paused_and_resumed(client: TestClient, store: Store) -> None:
    pause = {"symbol": "ETH/BTC", "paused": True, "reason": "listing review"}
    answer = client.put("/api/v1/controls/symbols", json=pause, headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["paused_symbols"] == ["ETH/BTC"]
    assert [r.symbol for r in asyncio.run(store.paused_symbols("paper"))] == ["ETH/BTC"]

    resume = {"symbol": "ETH/BTC", "paused": False}
    assert (
        client.put("/api/v1/controls/symbols", json=resume, headers=ADMIN).json()["paused_symbols"]
        == []
    )
    wrong = {"symbol": "eth-btc", "paused": True}
    assert client.put("/api/v1/controls/symbols", json=wrong, headers=ADMIN).status_code == 422


def test_a_close_request_needs_an_open_position_and_is_recorded_for_the_executor(
    client: TestClient, store: Store
) -> None:
    ask = {"symbol": "ETH/BTC", "reason": "by hand"}
    assert client.post("/api/v1/positions/close", json=ask, headers=READ).status_code == 403
    none_open = client.post("/api/v1/positions/close", json=ask, headers=ADMIN)
    assert none_open.status_code == 409 and "no open position" in none_open.json()["detail"]

    held = position()
    asyncio.run(store.save_trading_step(TradingStep([], [], [held], [], None)))
    accepted = client.post("/api/v1/positions/close", json=ask, headers=ADMIN)
    assert accepted.status_code == 202
    assert accepted.json()["outcome"] is None
    (request,) = asyncio.run(store.close_requests("paper"))
    assert (request.symbol, request.reason) == ("ETH/BTC", "by hand")
    listed = client.get("/api/v1/positions/close-requests", headers=READ).json()
    assert [r["requested_at_ms"] for r in listed] == [request.requested_at_ms]


def test_strategy_parameters_are_validated_stored_and_seen_by_the_signals_service(
    client: TestClient, store: Store
) -> None:
    default = client.get("/api/v1/strategy", headers=READ).json()
    assert default["source"] == "default" and default["line"] == BandsParams().line

    bad = client.put("/api/v1/strategy", json={"line": "macd"}, headers=ADMIN)
    assert bad.status_code == 422 and "line must be one of" in bad.json()["detail"][0]["msg"]
    unknown = client.put("/api/v1/strategy", json={"lookback": 3}, headers=ADMIN)
    assert unknown.status_code == 422
    assert client.put("/api/v1/strategy", json={"buy": False}, headers=READ).status_code == 403

    changed = client.put("/api/v1/strategy", json={"buy": False, "reason": "t"}, headers=ADMIN)
    assert changed.status_code == 200
    assert changed.json() | {"updated_at_ms": 0} == {
        "strategy": "stochrsi_bands", "line": BandsParams().line, "buy": False, "sell": True,
        "source": "api", "updated_at_ms": 0,
    }  # fmt: skip
    row = asyncio.run(store.strategy_params(StochRsiBands.name))
    assert row is not None and json.loads(row.params)["buy"] is False

    async def seen_by_signals() -> BandsParams | None:
        return await StoredParams(store, StochRsiBands.name).changed(BandsParams())

    assert asyncio.run(seen_by_signals()) == BandsParams(buy=False)


def test_position_levels_are_those_of_the_executors_saved_trader(
    client: TestClient, store: Store
) -> None:
    from services.executor.records import Ledger
    from services.executor.settings import ExecutorSettings
    from shared.store import TraderStateRow
    from tests.fakes import ticks_of

    empty = client.get("/api/v1/positions/levels", headers=READ).json()
    assert empty == {"account": "paper", "saved_at_ms": None, "holdings": []}

    settings = ExecutorSettings(_env_file=None, take_profits="1:0.5,2:0.5", stop_loss_pct=2.0)
    trader, ledger = settings.new_trader(), Ledger({})
    for tick in ticks_of("ETH_BTC-1m.json", "ETH/BTC"):
        ledger.apply(trader, tick)
        if trader.holdings and trader.levels()[0]["candles_held"] > 3:
            break
    (expected,) = trader.levels()
    row = TraderStateRow("paper", json.dumps(trader.snapshot()), "1-0", 42)
    asyncio.run(store.save_trading_step(TradingStep([], [], [], [], row)))

    assert client.get("/api/v1/positions/levels").status_code == 401
    levels = client.get("/api/v1/positions/levels", headers=READ).json()
    assert levels["saved_at_ms"] == 42
    (holding,) = levels["holdings"]
    assert holding["symbol"] == "ETH/BTC" and holding["stop"] == expected["stop"]
    assert holding["stop"] < holding["entry_price"] < holding["targets"][0]["price"]
    assert [[t["price"], t["quantity"]] for t in holding["targets"]] == expected["targets"]
