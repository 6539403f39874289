"""The Docker stack as files: compose services, their settings, Prometheus targets, the image."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from typing import Any

import pytest
import yaml

from shared.settings import CommonSettings
from tests.conftest import ROOT

SERVICES = sorted(
    path.parent.name for path in (ROOT / "services").glob("*/__init__.py") if path.parent.is_dir()
)
DATABASE_URL = "postgresql+psycopg2://candlebus:candlebus@postgres:5432/candlebus"


def load_yaml(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / relative).read_text())
    return loaded


_DEFAULTED = re.compile(r"\$\{(?P<name>\w+):-(?P<default>[^}]*)\}")


def unset_interpolated(value: Any) -> Any:
    """Resolve `${NAME:-default}` as compose does with NAME unset, through nested values."""
    if isinstance(value, str):
        return _DEFAULTED.sub(lambda match: match["default"], value)
    if isinstance(value, dict):
        return {key: unset_interpolated(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unset_interpolated(item) for item in value]
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose services as `docker compose config` gives them with no variables set."""
    services: dict[str, Any] = unset_interpolated(load_yaml("docker-compose.yml")["services"])
    return services


def settings_class(service: str) -> type[CommonSettings]:
    """Return the one CommonSettings subclass that services.<service>.settings defines."""
    name = f"services.{service}.settings"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        pytest.skip(f"{name} is not written yet")
    found = [
        value
        for key, value in vars(module).items()
        if key.endswith("Settings")
        and isinstance(value, type)
        and issubclass(value, CommonSettings)
        and value.__module__ == name
    ]
    assert len(found) == 1, f"{name} must define exactly one *Settings class, found {found}"
    return found[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", (ROOT / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (keyword.upper(), arguments.strip())
        for keyword, _, arguments in (
            line.partition(" ") for line in lines if line and not line.startswith("#")
        )
    ]


def test_there_are_five_services_to_deploy() -> None:
    assert SERVICES == ["collector", "executor", "gateway", "indicators", "signals"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_package_runs_as_its_own_compose_service(
    compose: dict[str, Any], service: str
) -> None:
    from services.cli import SERVICES as RUNNABLE

    assert compose[service]["command"] == ["candlebus", "run", service]
    assert service in RUNNABLE


@pytest.mark.parametrize("service", SERVICES)
def test_service_environment_sets_only_fields_of_its_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = settings_class(service)
    environment: dict[str, str] = compose[service]["environment"]

    unknown = sorted(name for name in environment if name.lower() not in cls.model_fields)
    assert not unknown, f"{service} sets {unknown}, which {cls.__name__} does not read"
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    if service == "gateway":  # compose passes the operator's token through; none is shipped
        monkeypatch.setenv("API_TOKENS_ADMIN", "an-operator-token-0123456789abcdef")
    settings = cls()  # the values must validate too
    assert settings.database_url == DATABASE_URL
    assert settings.redis_url == "redis://redis:6379/0"


def test_migrate_environment_is_read_by_the_common_settings(compose: dict[str, Any]) -> None:
    environment: dict[str, str] = compose["migrate"]["environment"]

    assert {name.lower() for name in environment} <= set(CommonSettings.model_fields)
    assert environment["DATABASE_URL"] == DATABASE_URL


def test_metrics_ports_are_unique_health_checked_and_scraped(compose: dict[str, Any]) -> None:
    ports = {service: int(compose[service]["environment"]["METRICS_PORT"]) for service in SERVICES}
    scrape_configs = load_yaml("deploy/prometheus/prometheus.yml")["scrape_configs"]
    targets = {
        target
        for job in scrape_configs
        for static in job["static_configs"]
        for target in static["targets"]
    }

    assert len(set(ports.values())) == len(ports)
    assert targets == {f"{service}:{port}" for service, port in ports.items()}
    for service, port in ports.items():
        probe = " ".join(compose[service]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/metrics" in probe, service


def test_redis_persists_every_second_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["redis"]
    command = redis["command"]
    words = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
    options = dict(zip(words[1::2], words[2::2], strict=False))

    assert words[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_migrate_runs_once_and_every_service_waits_for_it(compose: dict[str, Any]) -> None:
    migrate = compose["migrate"]

    assert migrate["command"] == ["candlebus", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(compose["postgres"]["healthcheck"]["test"])
    for service in SERVICES:
        depends_on = compose[service]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", service
        assert depends_on["redis"]["condition"] == "service_healthy", service
        assert compose[service]["restart"] == "unless-stopped", service
        assert compose[service]["image"] == migrate["image"], service


def test_gateway_publishes_the_port_it_listens_on(compose: dict[str, Any]) -> None:
    gateway = compose["gateway"]

    assert gateway["environment"]["PORT"] == "8000"
    assert "8000:8000" in gateway["ports"]


def test_collector_uses_the_synthetic_market_by_default(compose: dict[str, Any]) -> None:
    assert compose["collector"]["environment"]["SOURCE"] == "synthetic"


def test_grafana_provisions_the_compose_prometheus_as_a_datasource(
    compose: dict[str, Any],
) -> None:
    datasources = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")

    (prometheus,) = (d for d in datasources["datasources"] if d["uid"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in compose
    mounts = compose["grafana"]["volumes"]
    assert any(m.startswith("./deploy/grafana/provisioning:") for m in mounts)


def test_image_installs_the_package_that_provides_the_candlebus_command() -> None:
    instructions = dockerfile_instructions()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_point = pyproject["project"]["scripts"]["candlebus"]
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        source.rstrip("/")
        for keyword, arguments in instructions
        if keyword == "COPY"
        for source in arguments.split()[:-1]
    }
    ignored = set((ROOT / ".dockerignore").read_text().split())

    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(k == "RUN" and re.search(r"pip install \.(\s|$)", a) for k, a in instructions)
    # pip builds from these: the packages, and any file pyproject.toml names.
    needed = packages | {"pyproject.toml", pyproject["project"]["readme"]}
    assert needed <= copied
    assert not needed & ignored
    module, _, function = entry_point.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert module.split(".")[0] in packages
    assert json.loads(next(a for k, a in reversed(instructions) if k == "CMD"))[0] == "candlebus"
    user = next(a for k, a in reversed(instructions) if k == "USER")
    assert user not in {"root", "0"}
    assert any(k == "ENV" and "NUMBA_CACHE_DIR=" in a for k, a in instructions)


def test_prometheus_evaluates_the_shipped_rules_and_labels_each_target_by_service(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["prometheus"]
    config = load_yaml("deploy/prometheus/prometheus.yml")
    (job,) = config["scrape_configs"]
    labelled = {
        target: static["labels"]["service"]
        for static in job["static_configs"]
        for target in static["targets"]
    }

    # The whole folder is mounted, so the rule files resolve next to the configuration.
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert config["rule_files"]
    for rule_file in config["rule_files"]:
        assert (ROOT / "deploy" / "prometheus" / rule_file).is_file(), rule_file
    # Dashboards and alerts select `job="candlebus"` and tell services apart by `service`.
    assert job["job_name"] == "candlebus"
    assert {target.partition(":")[0]: name for target, name in labelled.items()} == {
        service: service for service in SERVICES
    }
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])


def test_grafana_waits_for_prometheus_and_opens_on_the_overview(compose: dict[str, Any]) -> None:
    grafana = compose["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    mounts = dict(mount.split(":")[:2] for mount in grafana["volumes"])

    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert mounts["./deploy/grafana/dashboards"] == home.rsplit("/", 1)[0]
    assert (ROOT / "deploy" / "grafana" / "dashboards" / home.rsplit("/", 1)[1]).is_file()
