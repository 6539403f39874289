"""The shipped monitoring files in -> the PromQL they run, ready for a Prometheus, out.

Dashboards (deploy/grafana/dashboards/*.json) and alerting rules (deploy/prometheus/alerts.yml)
are read here once for the tests that check them and for scripts/plot_overview.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"

# The one Grafana variable the dashboards use: a rate window of at least four scrapes.
RATE_INTERVAL = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it is used: `dashboard / panel` or `alert <name>`."""

    where: str
    expr: str
    legend: str = ""


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Return every shipped dashboard by file stem."""
    return {
        path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a dashboard's panels, those inside rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(dashboards: dict[str, dict[str, Any]] | None = None) -> list[Query]:
    """Return every target expression of every panel of the dashboards."""
    boards = load_dashboards() if dashboards is None else dashboards
    return [
        Query(f"{name} / {panel['title']}", target["expr"], target.get("legendFormat", ""))
        for name, board in boards.items()
        for panel in panels(board)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_rules() -> list[dict[str, Any]]:
    """Return every rule of the shipped rules file."""
    loaded = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alert_queries() -> list[Query]:
    """Return every alert's expression."""
    return [Query(f"alert {rule['alert']}", rule["expr"].strip()) for rule in alert_rules()]


def with_rate_interval(expr: str, rate_interval: str) -> str:
    """Return `expr` as Grafana sends it, with `$__rate_interval` replaced by `rate_interval`."""
    return expr.replace(RATE_INTERVAL, rate_interval)


# --- the operands of an alert's condition ------------------------------------------------------

_MATCHING = re.compile(r"^\s*(bool\b|(on|ignoring|group_left|group_right)\s*(\([^)]*\))?)\s*")
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
# Binary operators from the loosest binding to the tightest (PromQL's precedence).
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("or",),
    ("and", "unless"),
    ("==", "!=", ">=", "<=", ">", "<"),
)


def _operator_at(expr: str, i: int, operators: tuple[str, ...]) -> str | None:
    """Return the operator of `operators` that starts at `expr[i]`, if one does."""
    for op in operators:
        if not expr.startswith(op, i):
            continue
        if op.isalpha():  # a keyword, not part of a name like `candlebus_orders_total`
            before, after = expr[i - 1 : i] or " ", expr[i + len(op) : i + len(op) + 1] or " "
            if before.isalnum() or before == "_" or after.isalnum() or after == "_":
                continue
        return op
    return None


def _split_top_level(expr: str, operators: tuple[str, ...]) -> list[str]:
    """Split `expr` at `operators` where they stand outside brackets and strings."""
    parts: list[str] = []
    depth = start = i = 0
    quote = ""
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and (op := _operator_at(expr, i, operators)) is not None:
            parts.append(expr[start:i])
            i = start = i + len(op)
            continue
        i += 1
    parts.append(expr[start:])
    return parts


def condition_operands(expr: str) -> list[str]:
    """Return the vector operands of an alert's condition, each a query of its own.

    `a > 2 * b and c > 100` gives `a`, `2 * b` and `c`: each must return data on a running
    system even while the alert, rightly, does not fire (an alert's expression returns nothing
    then, which would also hide a misspelt metric name). Number literals are left out.
    """
    operands = [expr]
    for operators in _LEVELS:
        operands = [part for operand in operands for part in _split_top_level(operand, operators)]
    found: list[str] = []
    for operand in operands:
        text = operand.strip()
        while match := _MATCHING.match(text):
            text = text[match.end() :]
        if text and not _NUMBER.match(text):
            found.append(text)
    return found
