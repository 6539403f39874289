"""The executor service: ticks in, records out; redeliveries and restarts change nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from services.executor import __main__ as executor_service
from services.executor.__main__ import main
from services.executor.live_broker import BrokerUnavailable
from services.executor.reconciliation import Reconciliation
from services.executor.records import Ledger
from services.executor.settings import ExecutorSettings
from services.executor.trader import Fill
from shared.bus import MemoryBus
from shared.messages import OrderFilled, OrderPlaced, Stream, Tick, TicksDecided
from shared.store import Store, create_engine, upgrade
from tests.fakes import ticks_of, trade_directly

SETTINGS = ExecutorSettings(metrics_port=0, batch_size=7, block_ms=10)


def direct(ticks: list[Tick]) -> list[Fill]:
    """The fills of one Trader fed the same ticks directly: candle, then its signal."""
    return trade_directly(ticks, SETTINGS)[0]


@pytest.fixture(scope="module")
def eth_ticks() -> list[Tick]:
    return ticks_of("ETH_BTC-1m.json", "ETH/BTC")


def test_the_ledger_trades_exactly_as_the_trader_fed_directly(eth_ticks: list[Tick]) -> None:
    expected = direct(eth_ticks)
    trader = SETTINGS.new_trader()
    ledgers = []
    positions: dict = {}
    for start in range(0, len(eth_ticks), 500):
        ledger = Ledger(positions)
        for tick in eth_ticks[start : start + 500]:
            ledger.apply(trader, tick)
        for tick in eth_ticks[max(0, start - 50) : start + 20]:  # a redelivered overlap
            ledger.apply(trader, tick)
        ledgers.append(ledger)

    fills = [f for ledger in ledgers for f in ledger.fills]
    assert len(expected) > 50
    assert [(f.client_order_id, f.price, f.quantity, f.filled_at_ms) for f in fills] == [
        (f.client_order_id, f.price, f.quantity, f.time_ms) for f in expected
    ]
    decided = [d.signal_id for ledger in ledgers for d in ledger.decisions]
    assert len(decided) == len(set(decided)) == sum(1 for t in eth_ticks if t.side)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path / 'executor.sqlite'}"
    upgrade(url)
    store = Store(create_engine(url))
    yield store
    await store.close()


async def run_until_consumed(
    bus: MemoryBus, store: Store, settings: ExecutorSettings = SETTINGS
) -> None:
    """Run the executor until the group has acked every entry, then stop it."""
    task = asyncio.create_task(main(settings, bus, store))
    try:
        while True:
            groups = {g["name"]: g for g in await bus.group_info(Stream.TICKS)}
            group = groups.get("executor")
            if group is not None and group["pending"] == 0 and group["lag"] == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def stored_fills(store: Store) -> list[tuple[str, float, float, int]]:
    rows = await store.fills_between(limit=1_000_000)
    return sorted((r.client_order_id, r.price, r.quantity, r.filled_at_ms) for r in rows)


async def publish_ticks(bus: MemoryBus, ticks: list[Tick], per_entry: int) -> None:
    for start in range(0, len(ticks), per_entry):
        await bus.publish(Stream.TICKS, TicksDecided(ticks=ticks[start : start + per_entry]))


async def test_the_service_stores_what_the_trader_does_and_publishes_it(
    store: Store, eth_ticks: list[Tick]
) -> None:
    bus = MemoryBus()
    await publish_ticks(bus, eth_ticks, per_entry=300)

    await run_until_consumed(bus, store)

    expected = direct(eth_ticks)
    assert await stored_fills(store) == sorted(
        (f.client_order_id, f.price, f.quantity, f.time_ms) for f in expected
    )
    published = await bus.read_after(Stream.FILLS, "0-0", 1_000_000)
    assert len(published) == len(expected)
    saved = await store.trader_state("paper")
    assert saved is not None and json.loads(saved.snapshot)["version"] == 1


async def test_stopped_at_random_points_and_restarted_it_trades_exactly_as_uninterrupted(
    store: Store, eth_ticks: list[Tick]
) -> None:
    """Stopped at 200 random points (between the write and the ack included), with the first
    3,000 ticks delivered twice: each restart takes the saved trader and the unacked ticks, and
    the end is the uninterrupted run's fills, one order per client id, one decision per signal."""
    bus = MemoryBus.from_settings(SETTINGS)  # the executor's delivery limit
    await publish_ticks(bus, eth_ticks, per_entry=300)
    await publish_ticks(bus, eth_ticks[:3000], per_entry=300)  # every signal in it twice
    rng = np.random.default_rng(11)
    for _ in range(200):  # stopped after a random number of steps of the event loop
        task = asyncio.create_task(main(SETTINGS, bus, store))
        for _ in range(int(rng.integers(1, 40))):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await run_until_consumed(bus, store)

    expected = direct(eth_ticks)
    assert await stored_fills(store) == sorted(
        (f.client_order_id, f.price, f.quantity, f.time_ms) for f in expected
    )
    assert await bus.read_dead_letters(Stream.TICKS) == []  # no good tick given up on
    orders = await store.orders_between(limit=1_000_000)
    assert len({o.client_order_id for o in orders}) == len(orders)
    signals = {t.signal_id for t in eth_ticks if t.side}
    assert [await store.decision_of(sid) is not None for sid in sorted(signals)[:50]] == [True] * 50
    assert {o.status for o in orders} <= {"filled", "pending", "cancelled"}


async def test_the_kill_switch_set_by_hand_halts_entries_and_exits_go_on(
    store: Store, eth_ticks: list[Tick]
) -> None:
    """Half way through, with a position open, the kill switch goes on (as `candlebus
    kill-switch on` sets it): every later buy is skipped for it, and the open position still
    exits by its rules."""
    from shared.store import ControlsRow

    bus = MemoryBus.from_settings(SETTINGS)
    uninterrupted = direct(eth_ticks)
    entries = [f for f in uninterrupted if f.kind == "entry"]
    switch_at = next(
        t.open_time_ms for t in eth_ticks if t.open_time_ms > entries[len(entries) // 2].time_ms
    )  # a candle right after an entry: a position is open
    first = [t for t in eth_ticks if t.open_time_ms < switch_at]
    await publish_ticks(bus, first, per_entry=300)
    await run_until_consumed(bus, store)
    held = await store.positions()
    assert any(p.quantity > 0 for p in held)

    await store.set_controls(ControlsRow("paper", True, "test", 0))
    await publish_ticks(bus, [t for t in eth_ticks if t.open_time_ms >= switch_at], 300)
    await run_until_consumed(bus, store)

    fills = await store.fills_between(limit=1_000_000)
    after = [f for f in fills if f.filled_at_ms > switch_at]
    assert after and all(f.side == "sell" for f in after)  # exits only
    assert not any(p.quantity > 0 for p in await store.positions())
    flat_from = max(f.filled_at_ms for f in after)  # the open position's last exit
    buy = next(t for t in eth_ticks if t.side == "buy" and t.open_time_ms > flat_from)
    skipped = await store.decision_of(buy.signal_id)
    assert skipped is not None and skipped.reason == "kill_switch"


async def test_a_paused_symbol_takes_no_entries_until_resumed_and_its_exits_go_on(
    store: Store, eth_ticks: list[Tick]
) -> None:
    """Paused by hand with a position open: its exits fill, every buy signal is skipped as
    `paused`; resumed, buy signals are ordered again."""
    from shared.store import SymbolControlRow

    bus = MemoryBus.from_settings(SETTINGS)
    entries = [f for f in direct(eth_ticks) if f.kind == "entry"]
    pause_at = next(
        t.open_time_ms for t in eth_ticks if t.open_time_ms > entries[len(entries) // 3].time_ms
    )
    resume_at = entries[2 * len(entries) // 3].time_ms
    await publish_ticks(bus, [t for t in eth_ticks if t.open_time_ms < pause_at], 300)
    await run_until_consumed(bus, store)
    assert any(p.quantity > 0 for p in await store.positions())

    await store.set_symbol_control(SymbolControlRow("paper", "ETH/BTC", True, "test", 1))
    paused = [t for t in eth_ticks if pause_at <= t.open_time_ms < resume_at]
    await publish_ticks(bus, paused, 300)
    await run_until_consumed(bus, store)
    fills = await store.fills_between(limit=1_000_000)
    during = [f for f in fills if pause_at < f.filled_at_ms <= resume_at]
    assert during and all(f.side == "sell" for f in during)
    buys = [t for t in paused if t.side == "buy"]
    reasons = {(await store.decision_of(t.signal_id)).reason for t in buys}  # type: ignore[union-attr]
    assert "paused" in reasons and reasons <= {"paused", "already_long"}

    await store.set_symbol_control(SymbolControlRow("paper", "ETH/BTC", False, "test", 2))
    later = [t for t in eth_ticks if t.open_time_ms >= resume_at]
    await publish_ticks(bus, later, 300)
    await run_until_consumed(bus, store)
    outcomes = [await store.decision_of(t.signal_id) for t in later if t.side == "buy"]
    assert any(d is not None and d.outcome == "ordered" for d in outcomes)


async def test_a_position_closed_by_hand_sells_at_the_next_candles_open_once(
    store: Store, eth_ticks: list[Tick]
) -> None:
    """A close request with a position open: the executor answers it on the symbol's next
    candle (a sell decided then), the sell fills at the open of the candle after, the
    position is flat, and the request is answered once (`ordered`), not again."""
    from shared.store import CloseRequestRow

    bus = MemoryBus.from_settings(SETTINGS)
    entries = [f for f in direct(eth_ticks) if f.kind == "entry"]
    at = next(t.open_time_ms for t in eth_ticks if t.open_time_ms > entries[5].time_ms)
    await publish_ticks(bus, [t for t in eth_ticks if t.open_time_ms < at], 300)
    await run_until_consumed(bus, store)
    held = [p for p in await store.positions() if p.quantity > 0]
    assert held, "a position is open when the close is asked for"

    await store.request_close(CloseRequestRow("paper", "ETH/BTC", 123, "by hand"))
    rest = [t for t in eth_ticks if t.open_time_ms >= at]
    await publish_ticks(bus, rest[:5], 300)
    await run_until_consumed(bus, store)

    (answered,) = await store.close_requests("paper", open_only=False)
    assert answered.outcome == "ordered"
    assert answered.done_at_ms == rest[0].candle_closed_at_ms
    decision = await store.decision_of("manual-close:ETH/BTC:123")
    assert decision is not None and decision.outcome == "ordered"
    fills = await store.fills_between(limit=1_000_000)
    (sold,) = [f for f in fills if f.client_order_id == decision.client_order_id]
    assert sold.side == "sell" and sold.filled_at_ms == rest[1].open_time_ms
    assert sold.quantity == pytest.approx(held[0].quantity, rel=1e-12)
    expected_price = rest[1].open * (1 - SETTINGS.slippage_bps / 10_000)
    assert sold.price == pytest.approx(expected_price, rel=1e-12)
    assert not any(p.quantity > 0 for p in await store.positions())
    assert await store.close_requests("paper") == []  # answered: not taken up again


def test_live_trading_needs_exchange_keys_and_never_shows_them() -> None:
    with pytest.raises(ValueError, match="BROKER=live needs API_KEY and API_SECRET"):
        ExecutorSettings(metrics_port=0, broker="live", api_key="k-only")
    settings = ExecutorSettings(
        metrics_port=0, broker="live", api_key="key-3f9e71", api_secret="secret-a0c4d2"
    )
    assert settings.new_trader().live
    assert "key-3f9e71" not in repr(settings) and "secret-a0c4d2" not in str(settings)


class UnreachableExchange:
    """A live broker whose exchange never answers within its retry budget."""

    exchange = SimpleNamespace(id="binance")

    def __init__(self) -> None:
        self.sends = 0

    def sellable(self, symbol: str, quantity: float) -> float:
        return quantity

    async def place_market(self, order: OrderPlaced) -> list[OrderFilled]:
        self.sends += 1
        raise BrokerUnavailable("the exchange did not answer")

    async def reconcile(self, known: object, positions: object = ()) -> Reconciliation:
        return Reconciliation((), (), ())

    async def close(self) -> None:
        pass


async def test_an_unreachable_exchange_is_tried_once_a_batch_not_once_a_tick(
    store: Store, eth_ticks: list[Tick], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first order stays pending while the exchange is down; the executor goes on through
    the ticks and sends it again once per batch, not after every tick."""
    broker = UnreachableExchange()

    async def connect(settings: ExecutorSettings) -> UnreachableExchange:
        return broker

    monkeypatch.setattr(executor_service, "connect", connect)
    settings = ExecutorSettings(
        metrics_port=0, batch_size=10, block_ms=10, broker="live", account="live",
        api_key="key-0d3e5b", api_secret="secret-9a7c1f",
    )  # fmt: skip
    bus = MemoryBus()
    await publish_ticks(bus, eth_ticks[:3000], per_entry=100)  # 30 entries: 3 batches
    await run_until_consumed(bus, store, settings)
    orders = await store.orders_between(limit=1000)
    assert [o.status for o in orders] == ["pending"]  # later buys wait for it: one order
    assert 1 <= broker.sends <= 4, broker.sends  # once per batch (3), and at most once at start
