"""The shipped Grafana dashboards as files: provisionable, readable, and about real metrics."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (declares every candlebus metric in the default registry)
from tests.conftest import ROOT
from tests.monitoring import (
    DASHBOARDS_DIR,
    DATASOURCES,
    GRAFANA_DIR,
    RATE_INTERVAL,
    alert_queries,
    dashboard_queries,
    load_dashboards,
    panels,
)

DASHBOARDS = load_dashboards()
EXPECTED = {"overview", "collector", "trading", "gateway"}
# Series every Prometheus target has, besides the candlebus metrics: the scrape's own `up`, and
# what prometheus_client's process collector exports on Linux.
OTHER_SERIES = {"up", "process_resident_memory_bytes", "process_cpu_seconds_total",
                "process_start_time_seconds"}  # fmt: skip
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def exported_series() -> set[str]:
    """Return every series name the candlebus metrics export (a counter's `_total`, a
    histogram's `_bucket`/`_count`/`_sum`)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("candlebus_"):
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def provisioned_datasource_uid() -> str:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uid: str = source["uid"]
    return uid


def test_the_four_dashboards_ship_with_unique_uids() -> None:
    uids = [board["uid"] for board in DASHBOARDS.values()]

    assert set(DASHBOARDS) == EXPECTED
    assert len(set(uids)) == len(uids)
    for name, board in DASHBOARDS.items():
        assert board["title"] and board["panels"], name
        assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]), name
        assert "id" not in board or board["id"] is None, f"{name}: provisioning assigns the id"
        assert isinstance(board["schemaVersion"], int), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_has_a_unique_id_a_title_a_unit_and_the_datasource_by_uid(name: str) -> None:
    board = DASHBOARDS[name]
    expected = {"type": "prometheus", "uid": provisioned_datasource_uid()}
    ids = [panel["id"] for panel in panels(board)]

    assert len(set(ids)) == len(ids), f"{name}: repeated panel ids"
    for panel in panels(board):
        where = f"{name} / panel {panel['id']}"
        assert panel.get("title", "").strip(), f"{where}: no title"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel.get("description", "").strip(), f"{where}: no description"
        assert panel["datasource"] == expected, where
        assert panel["targets"], f"{where}: no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), where
        for target in panel["targets"]:
            assert target["datasource"] == expected, where
            assert target["expr"].strip(), where


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    boxes = [(panel["id"], panel["gridPos"]) for panel in panels(DASHBOARDS[name])]

    for panel_id, box in boxes:
        assert box["x"] >= 0 and box["w"] > 0 and box["x"] + box["w"] <= 24, panel_id
    for (a, one), (b, other) in combinations(boxes, 2):
        apart = (
            one["x"] + one["w"] <= other["x"]
            or other["x"] + other["w"] <= one["x"]
            or one["y"] + one["h"] <= other["y"]
            or other["y"] + other["h"] <= one["y"]
        )
        assert apart, f"{name}: panels {a} and {b} overlap"


def test_queries_use_only_the_rate_interval_variable() -> None:
    # Anything else would need a Grafana template variable that the dashboards do not define.
    for query in dashboard_queries():
        assert "$" not in query.expr.replace(RATE_INTERVAL, ""), query.where
    for name, board in DASHBOARDS.items():
        assert not board.get("templating", {}).get("list"), name


def test_every_queried_series_is_one_the_services_export() -> None:
    known = exported_series() | OTHER_SERIES
    queries = dashboard_queries() + alert_queries()

    for query in queries:
        names = set(re.findall(r"\b(?:candlebus|process)_[a-z_]+\b|\bup\b", query.expr))
        assert names, f"{query.where}: no metric in {query.expr}"
        unknown = names - known
        assert not unknown, f"{query.where}: {sorted(unknown)} are exported by nothing"


def test_quantiles_are_taken_over_bucket_rates_kept_by_le() -> None:
    # Summing buckets without keeping `le`, or taking a quantile of a plain counter, gives
    # numbers that look plausible and mean nothing.
    shape = re.compile(
        r"histogram_quantile\(0?\.\d+, sum by \([^)]*\ble\b[^)]*\) \(rate\(\w+_bucket\b"
    )
    for query in dashboard_queries():
        if "histogram_quantile" in query.expr:
            assert shape.match(query.expr), query.where


def test_grafana_provisions_the_dashboards_folder_that_compose_mounts() -> None:
    provider_file = GRAFANA_DIR / "provisioning" / "dashboards" / "candlebus.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    relative = DASHBOARDS_DIR.relative_to(ROOT)

    assert provider["type"] == "file"
    assert f"./{relative}:{provider['options']['path']}:ro" in mounts
