"""The executor trading live (BROKER=live): its orders go through the real ccxt binance client
to the stand-in's order endpoints, and the exchange's fills come back into the store.

Killed between any two of its steps (order written / order sent / fill written / ack) and
started again, it leaves exactly one order on the exchange per client id, the store's fills
are exactly the exchange's trades, and the position is the account's balance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from services.executor.__main__ import main
from services.executor.live_broker import LiveBroker
from services.executor.settings import ExecutorSettings
from shared.bus import MemoryBus
from shared.messages import Stream, Tick, TicksDecided
from shared.store import Store, TradingStep, create_engine, upgrade
from tests.fakes import ticks_of
from tests.standin.faults import OrderRejected, OrderServerError, OrderTimeout
from tests.standin.remote import StandInProcess, run_standin_process

TICKS = 1_200  # the last ETH/BTC minutes: a few dozen orders, entries and exits
FUNDS_BTC = 1.0


class Killed(BaseException):
    """The process dying at a chosen point (not an Exception: nothing in it may catch it)."""


@pytest.fixture(scope="module")
def ticks() -> list[Tick]:
    return ticks_of("ETH_BTC-1m.json", "ETH/BTC")[-TICKS:]  # near the stand-in's clock


@pytest.fixture
def standin(ticks: list[Tick]) -> Iterator[StandInProcess]:
    """The stand-in exchange as a process, its clock still at the end of the ticks' file,
    the account holding 1 BTC."""
    with run_standin_process(speed=0.0) as running:
        running.control.fund(BTC=FUNDS_BTC)
        yield running


@pytest.fixture
def settings(standin: StandInProcess) -> ExecutorSettings:
    return ExecutorSettings(
        metrics_port=0, batch_size=7, block_ms=10, account="live", broker="live",
        exchange="binance", api_url=standin.base_url, api_key=SecretStr("key-live-test"),
        api_secret=SecretStr("secret-live-test"), order_timeout_ms=2_000,
        equity=0.5, order_quote_amount=0.01,
        stop_loss_pct=0.5, take_profits=((0.3, 0.5), (0.6, 0.5)),  # so that exits are hit
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path / 'executor.sqlite'}"
    upgrade(url)
    store = Store(create_engine(url))
    yield store
    await store.close()


async def publish_ticks(bus: MemoryBus, ticks: list[Tick], per_entry: int = 1) -> None:
    for start in range(0, len(ticks), per_entry):
        await bus.publish(Stream.TICKS, TicksDecided(ticks=ticks[start : start + per_entry]))


async def consumed(bus: MemoryBus) -> bool:
    groups = {g["name"]: g for g in await bus.group_info(Stream.TICKS)}
    group = groups.get("executor")
    return group is not None and group["pending"] == 0 and group["lag"] == 0


async def run_until_consumed(settings: ExecutorSettings, bus: MemoryBus, store: Store) -> None:
    """Run the executor until every tick is acked and no order is pending, then stop it."""
    task = asyncio.create_task(main(settings, bus, store))
    try:
        for _ in range(6_000):
            if task.done():
                task.result()  # raises what stopped it
            if await consumed(bus) and not await pending_orders(store, settings.account):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the executor did not work through every tick in 60 s")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def pending_orders(store: Store, account: str) -> list[dict[str, Any]]:
    saved = await store.trader_state(account)
    pending: list[dict[str, Any]] = [] if saved is None else json.loads(saved.snapshot)["pending"]
    return pending


async def assert_exactly_once(standin: StandInProcess, store: Store, account: str) -> int:
    """One exchange order per client id, each a filled order in the store; the store's fills
    are the exchange's trades; the position is the account's ETH. Returns the order count."""
    exchange = standin.control.account()
    on_exchange = exchange["orders"]
    ids = [order["clientOrderId"] for order in on_exchange]
    assert len(ids) == len(set(ids)), "an order was placed twice"
    stored = {row.client_order_id: row for row in await store.orders_between(limit=100_000)}
    assert set(ids) <= set(stored), "an order on the exchange is unknown to the store"
    assert {cid for cid, row in stored.items() if row.status == "filled"} == set(ids)
    assert {row.status for row in stored.values()} <= {"filled", "rejected", "cancelled"}
    fills = await store.fills_between(limit=100_000)
    assert sorted((f.fill_id, f.side, f.price) for f in fills) == sorted(
        (
            f"{order['clientOrderId']}-{trade['tradeId']}",
            order["side"].lower(),
            float(trade["price"]),
        )
        for order in on_exchange
        for trade in order["fills"]
    )
    free, locked = exchange["balances"]["ETH"]
    [position] = await store.positions(symbol="ETH/BTC")
    assert position.quantity == pytest.approx(free + locked, abs=1e-12)
    assert await pending_orders(store, account) == []
    return len(ids)


async def test_live_trading_sends_each_order_once_and_stores_the_exchanges_fills(
    standin: StandInProcess, settings: ExecutorSettings, store: Store, ticks: list[Tick]
) -> None:
    bus = MemoryBus()
    await publish_ticks(bus, ticks)
    await run_until_consumed(settings, bus, store)

    placed = await assert_exactly_once(standin, store, settings.account)
    sides = {order["side"] for order in standin.control.account()["orders"]}
    assert placed >= 10 and sides == {"BUY", "SELL"}
    why = {row.signal_id.split(":")[0] for row in await store.orders_between(limit=100_000)}
    assert {"stochrsi_bands", "take_profit", "stop_loss"} <= why  # signals and exit rules
    published = await bus.read_after(Stream.FILLS, "0-0", 100_000)
    assert len(published) == len(await store.fills_between(limit=100_000))


def kill_after(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, nth: int,
    counts: Callable[[tuple[Any, ...]], bool] = lambda args: True,
) -> None:  # fmt: skip
    """Make `owner.name` (a coroutine method) raise Killed right after its `nth` counted call
    has returned: its effect done, nothing after it."""
    original = getattr(owner, name)
    calls = 0

    async def dying(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = await original(self, *args, **kwargs)
        if counts(args):
            calls += 1
            if calls == nth:
                raise Killed(f"after {name} #{nth}")
        return result

    monkeypatch.setattr(owner, name, dying)


def _orders_written(args: tuple[Any, ...]) -> bool:
    step: TradingStep = args[0]
    return any(status == "pending" for _, status in step.orders)


def _fills_written(args: tuple[Any, ...]) -> bool:
    step: TradingStep = args[0]
    return bool(step.fills)


KILL_POINTS = {
    "order written": (Store, "save_trading_step", _orders_written),
    "order sent": (LiveBroker, "place_market", lambda args: True),
    "fill written": (Store, "save_trading_step", _fills_written),
    "acked": (MemoryBus, "ack", lambda args: True),
}


@pytest.mark.parametrize("nth", [1, 5])
@pytest.mark.parametrize("point", list(KILL_POINTS))
async def test_killed_right_after_a_step_and_restarted_every_order_exists_once(
    standin: StandInProcess, settings: ExecutorSettings, store: Store, ticks: list[Tick],
    monkeypatch: pytest.MonkeyPatch, point: str, nth: int,
) -> None:  # fmt: skip
    bus = MemoryBus()
    await publish_ticks(bus, ticks)
    await publish_ticks(bus, ticks[:400])  # a stretch delivered twice
    owner, name, counts = KILL_POINTS[point]
    with monkeypatch.context() as patch:
        kill_after(patch, owner, name, nth, counts)
        with pytest.raises(Killed):
            await run_until_consumed(settings, bus, store)
    await run_until_consumed(settings, bus, store)
    assert await assert_exactly_once(standin, store, settings.account) >= 10


async def test_stopped_at_random_moments_every_order_exists_once(
    standin: StandInProcess, settings: ExecutorSettings, store: Store, ticks: list[Tick]
) -> None:
    """Cancelled at 60 random moments (mid-request to the exchange included), with the
    first 400 ticks delivered twice."""
    bus = MemoryBus()
    await publish_ticks(bus, ticks)
    await publish_ticks(bus, ticks[:400])
    rng = np.random.default_rng(5)
    for _ in range(60):
        task = asyncio.create_task(main(settings, bus, store))
        await asyncio.sleep(float(rng.uniform(0.0, 0.15)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await run_until_consumed(settings, bus, store)
    assert await assert_exactly_once(standin, store, settings.account) >= 10


async def test_orders_the_exchange_refuses_or_answers_badly_still_exist_once(
    standin: StandInProcess, settings: ExecutorSettings, store: Store, ticks: list[Tick]
) -> None:
    """The exchange refuses the first order, answers 500 after accepting the next two, then
    hangs after accepting two more: the refused one is recorded as such and never retried;
    the others are looked up by client id and their fills collected, none placed twice."""
    for fault in (OrderRejected(), OrderServerError(count=2), OrderTimeout(count=2, hang_s=5.0)):
        standin.control.add_fault(fault)
    bus = MemoryBus()
    await publish_ticks(bus, ticks)
    await run_until_consumed(settings, bus, store)
    assert await assert_exactly_once(standin, store, settings.account) >= 10
    orders = await store.orders_between(limit=100_000)
    assert [o.status for o in orders].count("rejected") == 1
    assert orders[0].status == "rejected"
