"""The executor decides each signal exactly once, whatever is redelivered and when."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.executor.__main__ import execute, export_book
from services.executor.broker import PaperBroker
from services.executor.settings import ExecutorSettings
from shared import metrics
from shared.bus import MemoryBus
from shared.messages import SignalEmitted, Stream, signal_id
from shared.store import Store, create_engine, upgrade

SETTINGS = ExecutorSettings(order_quote_amount=1.0, slippage_bps=0.0, fee_bps=0.0)
BROKER = PaperBroker(slippage_bps=0.0, fee_bps=0.0)


def signal(minute: int, side: str, price: float) -> SignalEmitted:
    open_time = 1_516_423_920_000 + minute * 60_000
    return SignalEmitted(
        signal_id=signal_id("s", "x", "A/B", "1m", open_time),
        strategy="s",
        exchange="x",
        symbol="A/B",
        timeframe="1m",
        open_time_ms=open_time,
        side=side,  # type: ignore[arg-type]
        price=price,
        reason="",
        candle_closed_at_ms=0,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path / 'executor.sqlite'}"
    upgrade(url)
    store = Store(create_engine(url))
    yield store
    await store.close()


async def orders(store: Store) -> list[tuple[str, str]]:
    rows = await store.orders_between(limit=100)
    return [(row.signal_id, row.side) for row in rows]


async def test_a_redelivered_signal_creates_exactly_one_order(store: Store) -> None:
    bus = MemoryBus()
    buy = signal(0, "buy", 2.0)
    for _ in range(3):
        await execute(buy, BROKER, store, bus, SETTINGS)
    assert await orders(store) == [(buy.signal_id, "buy")]
    position = await store.position(exchange="x", symbol="A/B")
    assert position is not None and position.quantity == 0.5
    # every delivery (re)publishes the order's events: a crash may have cut them off
    published = await bus.read_after(Stream.ORDERS, "0-0", 10)
    assert {message.client_order_id for _, message in published} == {  # type: ignore[attr-defined]
        (await store.order_of_signal(buy.signal_id))[0].client_order_id  # type: ignore[index]
    }


async def test_a_skipped_signal_redelivered_after_the_position_changed_stays_skipped(
    store: Store,
) -> None:
    bus = MemoryBus()
    first_buy, second_buy, sell = (
        signal(0, "buy", 2.0),
        signal(1, "buy", 2.1),
        signal(2, "sell", 2.2),
    )
    for message in (first_buy, second_buy, sell):
        await execute(message, BROKER, store, bus, SETTINGS)
    assert await orders(store) == [(first_buy.signal_id, "buy"), (sell.signal_id, "sell")]
    # The book is flat now, so deciding the second buy again would open a position.
    await execute(second_buy, BROKER, store, bus, SETTINGS)
    assert await orders(store) == [(first_buy.signal_id, "buy"), (sell.signal_id, "sell")]
    decision = await store.decision_of(second_buy.signal_id)
    assert decision is not None and (decision.outcome, decision.reason) == (
        "skipped",
        "already_long",
    )
    flat = await store.position(exchange="x", symbol="A/B")
    assert flat is not None and flat.quantity == 0.0


async def test_book_gauges_follow_the_stored_positions(store: Store) -> None:
    bus = MemoryBus()
    assert await execute(signal(0, "buy", 2.0), BROKER, store, bus, SETTINGS) is True
    await export_book(store)
    assert metrics.OPEN_POSITIONS._value.get() == 1
    assert await execute(signal(1, "sell", 2.5), BROKER, store, bus, SETTINGS) is True
    await export_book(store)
    assert metrics.OPEN_POSITIONS._value.get() == 0
    assert metrics.REALIZED_PNL._value.get() == pytest.approx(0.5 * (2.5 - 2.0))
