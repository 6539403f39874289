"""The shipped alerting rules on made-up series, evaluated by `promtool test rules`: each alert
fires when its condition has held for its `for` period, and stays quiet on a healthy system.

The rules are the shipped expressions, `for` periods and labels; annotations are left out here
because promtool compares them verbatim (`promtool check rules` checks their templates).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import ALERT_RULES, alert_rules

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package `prometheus`; `make tools` installs it)",
)

INTERVAL = "15s"
COLLECTOR = {"job": "candlebus", "service": "collector", "instance": "collector:9101"}
INDICATORS = {"job": "candlebus", "service": "indicators", "instance": "indicators:9102"}
EXECUTOR = {"job": "candlebus", "service": "executor", "instance": "executor:9104"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    text = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def firing(**labels: str) -> list[dict[str, Any]]:
    return [{"exp_labels": labels}]


# alert -> (input series, [(evaluation time, the alerts firing then)])
SCENARIOS: dict[str, tuple[list[dict[str, str]], list[tuple[str, list[dict[str, Any]]]]]] = {
    "ServiceDown": (
        [
            series("up", INDICATORS, "1 1 0x12"),  # down from 30 s on
            series("up", COLLECTOR, "1x12"),
        ],
        [("1m", []), ("2m", firing(severity="critical", **INDICATORS))],
    ),
    "ServiceRestarting": (
        [
            series("process_start_time_seconds", EXECUTOR, "100 100 200 200 300 300 400x8"),
            series("process_start_time_seconds", INDICATORS, "100 100 200x10"),  # one restart
        ],
        [("15s", []), ("2m", firing(severity="warning", **EXECUTOR))],
    ),
    "NoCandles": (
        [
            # XMR/BTC: the newest candle ages a second per second from 0; ETH/BTC stays fresh.
            series(
                "candlebus_collector_staleness_seconds",
                {**COLLECTOR, "symbol": "XMR/BTC", "timeframe": "1m"},
                "0+15x24",
            ),
            series(
                "candlebus_collector_staleness_seconds",
                {**COLLECTOR, "symbol": "ETH/BTC", "timeframe": "1m"},
                "70x24",
            ),
            series(
                "candlebus_collector_timeframe_seconds", {**COLLECTOR, "timeframe": "1m"}, "60x24"
            ),
        ],
        [
            ("3m", []),  # over two periods since 135 s: pending, not yet for a minute
            ("4m", firing(severity="warning", symbol="XMR/BTC", timeframe="1m", **COLLECTOR)),
        ],
    ),
    "ConsumerLagGrowing": (
        [
            # The producer sees the lag grow; the stuck consumer's own figure stopped at 50.
            series(
                "candlebus_consumer_lag_entries",
                {**COLLECTOR, "stream": "candles", "group": "indicators"},
                "0+10x160",
            ),
            series(
                "candlebus_consumer_lag_entries",
                {**INDICATORS, "stream": "candles", "group": "indicators"},
                "50x160",
            ),
            # A large but steady lag is a backlog being worked off at the rate it comes in.
            series(
                "candlebus_consumer_lag_entries",
                {**INDICATORS, "stream": "indicators", "group": "signals"},
                "300x160",
            ),
        ],
        [
            ("10m", []),
            ("20m", firing(severity="warning", stream="candles", group="indicators")),
        ],
    ),
    "DeadLetters": (
        [
            series(
                "candlebus_dead_letters_total",
                {**INDICATORS, "stream": "candles", "reason": "undecodable"},
                "0 0 1x60",
            ),
            series(
                "candlebus_dead_letters_total",
                {**INDICATORS, "stream": "candles", "reason": "max_deliveries"},
                "0x60",
            ),
        ],
        [
            ("15s", []),
            ("1m", firing(severity="warning", stream="candles", reason="undecodable")),
            ("12m", []),  # nothing new for ten minutes
        ],
    ),
    "CircuitBreakerOpen": (
        [
            series(
                "candlebus_collector_breaker_state", {**COLLECTOR, "source": "binance"}, "0 0 2x12"
            ),
            series("candlebus_collector_breaker_state", {**COLLECTOR, "source": "kraken"}, "1x12"),
        ],
        [("1m", []), ("2m", firing(severity="warning", source="binance"))],
    ),
    "KillSwitchOn": (
        [series("candlebus_kill_switch", {**EXECUTOR, "account": "paper"}, "0 0 1x8")],
        [("15s", []), ("1m", firing(severity="warning", account="paper"))],
    ),
    "DailyLossLimitHit": (
        [
            series(
                "candlebus_orders_skipped_total", {**EXECUTOR, "reason": "daily_loss"}, "0 0 1x10"
            ),
            series("candlebus_orders_skipped_total", {**EXECUTOR, "reason": "cooldown"}, "0+1x12"),
        ],
        [("15s", []), ("1m", firing(severity="critical", service="executor"))],
    ),
}


def rules_without_annotations(path: Path) -> Path:
    loaded = yaml.safe_load(ALERT_RULES.read_text())
    for group in loaded["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path.write_text(yaml.safe_dump(loaded, sort_keys=False))
    return path


def test_every_shipped_alert_has_a_scenario() -> None:
    assert sorted(rule["alert"] for rule in alert_rules()) == sorted(SCENARIOS)


@pytest.mark.parametrize("alert", sorted(SCENARIOS))
def test_alert_fires_after_its_for_period_and_not_on_a_healthy_series(
    alert: str, tmp_path: Path
) -> None:
    inputs, expectations = SCENARIOS[alert]
    rules = rules_without_annotations(tmp_path / "alerts.yml")
    unit = {
        "rule_files": [str(rules)],
        "evaluation_interval": INTERVAL,
        "tests": [
            {
                "interval": INTERVAL,
                "input_series": inputs,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": alert, "exp_alerts": expected}
                    for at, expected in expectations
                ],
            }
        ],
    }
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(unit, sort_keys=False))

    result = subprocess.run(
        ["promtool", "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
