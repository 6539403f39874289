"""The series each service creates at start: there before their first event.

(Other tests in the same process may have counted events since, so only presence is checked.)
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from shared import metrics


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_executor_starts_with_the_alerted_refusal_reasons_and_both_sides() -> None:
    metrics.create_known_series("executor")

    assert value("candlebus_orders_skipped_total", reason="daily_loss") is not None
    assert value("candlebus_orders_skipped_total", reason="kill_switch") is not None
    for side in ("buy", "sell"):
        assert value("candlebus_orders_total", side=side) is not None
        assert value("candlebus_fills_total", side=side) is not None


def test_the_collector_starts_with_every_gap_outcome() -> None:
    metrics.create_known_series("collector")

    for outcome in ("found", "repaired", "empty", "retried"):
        assert value("candlebus_collector_gaps_total", outcome=outcome) is not None
