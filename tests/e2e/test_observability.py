"""The shipped dashboards and alerts against a real Prometheus scraping the running services.

Every PromQL expression of every dashboard panel and every alert is evaluated through
Prometheus's HTTP API over a run of the five services on a replayed market: each must give
numbers (a misspelt metric or label gives nothing, not an error). Then the indicators process
is stopped and its ServiceDown alert must fire once its `for` period has passed.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR
from tests.e2e.harness import SERVICES, wait_until
from tests.e2e.observed import GatewayTraffic, ObservedRun, observed_pipeline
from tests.e2e.prometheus import (
    PrometheusError,
    numbers,
    prometheus_binaries,
    run_promtool,
)
from tests.monitoring import (
    ALERT_RULES,
    PROMETHEUS_CONFIG,
    Query,
    alert_queries,
    alert_rules,
    condition_operands,
    dashboard_queries,
    with_rate_interval,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        prometheus_binaries() is None,
        reason="prometheus and promtool are not installed (Debian package `prometheus`; "
        "`make tools` installs it)",
    ),
]

SCRAPE_S = 1.0
RATE_INTERVAL = "5s"  # what Grafana's $__rate_interval is at this scrape interval (4 scrapes+)
# Prometheus notices a stopped target at its next scrape, and an alert's state changes at the
# evaluation after its `for` period ends: allow a few intervals of each, and some slack.
FIRE_SLACK_S = 4 * SCRAPE_S + 6.0


def duration_s(text: str) -> float:
    """Return a Prometheus duration (`1m`, `30s`, `1h30m`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def test_shipped_configuration_and_rules_pass_promtool() -> None:
    config = run_promtool("check", "config", str(PROMETHEUS_CONFIG))
    rules = run_promtool("check", "rules", str(ALERT_RULES))

    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"{len(alert_rules())} rules found" in rules.stdout + rules.stderr


def queries_to_check() -> list[Query]:
    """Every dashboard target, and every operand of every alert's condition."""
    found = [
        Query(q.where, with_rate_interval(q.expr, RATE_INTERVAL), q.legend)
        for q in dashboard_queries()
    ]
    for alert in alert_queries():
        found += [
            Query(f"{alert.where} operand", operand) for operand in condition_operands(alert.expr)
        ]
    return found


def evaluate_everything(run: ObservedRun) -> tuple[list[str], list[str], int]:
    """Evaluate every query over the run so far; return the failures, the queries that gave only
    zeros (rightly, on a healthy run: no dead letters, no open breaker), and how many gave
    numbers."""
    prometheus = run.prometheus
    end = time.time()
    failures: list[str] = []
    zeros: list[str] = []
    answered = 0
    for alert in alert_queries():
        try:
            prometheus.query(alert.expr)
        except PrometheusError as exc:
            failures.append(f"{alert.where}: {alert.expr}\n    error: {exc}")
    for query in queries_to_check():
        try:
            series = prometheus.query_range(
                query.expr, start=run.started_at, end=end, step=SCRAPE_S
            )
        except PrometheusError as exc:
            failures.append(f"{query.where}: {query.expr}\n    error: {exc}")
            continue
        values = numbers(series)
        if not values:
            failures.append(f"{query.where}: {query.expr}\n    no numbers over the run")
            continue
        answered += 1
        if not any(values):
            zeros.append(f"{query.where} ({query.legend})" if query.legend else query.where)
    return failures, zeros, answered


def orders_seen(run: ObservedRun) -> bool:
    run.pipeline.assert_running()
    result = run.prometheus.query(
        "sum(candlebus_fills_total) > 0 and sum(candlebus_signals_total) > 0"
    )
    return bool(result)


def service_down_state(run: ObservedRun, service: str) -> str | None:
    for alert in run.prometheus.alerts():
        labels = alert["labels"]
        if labels["alertname"] == "ServiceDown" and labels.get("service") == service:
            return str(alert["state"])
    return None


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real market data not found at {DATA_DIR}")
def test_every_dashboard_and_alert_query_gives_numbers_and_a_stopped_service_fires_its_alert(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    (service_down,) = (rule for rule in alert_rules() if rule["alert"] == "ServiceDown")
    for_s = duration_s(service_down["for"])

    with (
        observed_pipeline(redis_url, database_url, tmp_path, scrape_interval_s=SCRAPE_S) as run,
        GatewayTraffic(run.pipeline) as traffic,
    ):
        config = run_promtool("check", "config", str(run.prometheus.config_path))
        assert config.returncode == 0, config.stdout + config.stderr
        run.prometheus.wait_for_scrapes(list(SERVICES), timeout_s=30)
        wait_until(lambda: orders_seen(run), timeout_s=60, what="signals and fills")
        time.sleep(3 * SCRAPE_S + 5)  # rate windows after the first fills
        started = time.monotonic()
        failures, zeros, answered = evaluate_everything(run)
        evaluated_s = time.monotonic() - started
        assert not failures, f"{len(failures)} queries failed:\n" + "\n".join(failures)
        assert service_down_state(run, "indicators") is None
        assert traffic.events > 0

        run.pipeline.kill("indicators", signal.SIGTERM)
        stopped_at = time.monotonic()
        states: list[tuple[float, str | None]] = []

        def fired() -> bool:
            state = service_down_state(run, "indicators")
            if not states or states[-1][1] != state:
                states.append((time.monotonic() - stopped_at, state))
            return state == "firing"

        wait_until(fired, timeout_s=for_s + FIRE_SLACK_S, what="ServiceDown for indicators")
        fired_after_s = states[-1][0]
        pending_after_s = next(t for t, state in states if state == "pending")
        others = {s: run.prometheus.targets_up()[s] for s in SERVICES if s != "indicators"}

    assert pending_after_s <= FIRE_SLACK_S, states
    assert for_s <= fired_after_s <= for_s + FIRE_SLACK_S, states
    assert all(others.values()), others
    print(
        f"\n{answered} queries gave numbers ({answered - len(zeros)} not only zeros) in "
        f"{evaluated_s:.1f} s; ServiceDown pending after {pending_after_s:.1f} s, firing after "
        f"{fired_after_s:.1f} s (for: {service_down['for']}); {traffic.events} WebSocket events"
        f"\nonly zeros: {'; '.join(zeros)}"
    )
