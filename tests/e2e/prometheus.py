"""A real Prometheus server (Debian's `prometheus` package) as a process, and its HTTP API.

It scrapes the services on their local metrics ports with the shipped scrape configuration (the
compose host names replaced by 127.0.0.1 ports) and evaluates the shipped alerting rules, at
intervals short enough for a test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.harness import free_port, wait_until
from tests.monitoring import ALERT_RULES, PROMETHEUS_CONFIG


def prometheus_binaries() -> tuple[str, str] | None:
    """Return the paths of `prometheus` and `promtool`, or None if either is missing."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return None if prometheus is None or promtool is None else (prometheus, promtool)


def local_config(
    ports: Mapping[str, int], *, scrape_interval: str, evaluation_interval: str
) -> dict[str, Any]:
    """Return the shipped Prometheus configuration aimed at `ports` (service -> metrics port).

    Every target keeps its job and labels; only its address changes, from the compose host
    (`indicators:9102`) to `127.0.0.1:<port>`. The rules are the shipped file, by absolute path.
    """
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {
        **config.get("global", {}),
        "scrape_interval": scrape_interval,
        "evaluation_interval": evaluation_interval,
    }
    config["rule_files"] = [str(ALERT_RULES)]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [
                f"127.0.0.1:{ports[target.partition(':')[0]]}" for target in static["targets"]
            ]
    return config


class PrometheusError(AssertionError):
    """The API answered a query with an error."""


class PrometheusAPI:
    """The HTTP API of a Prometheus server at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant query; return its vector (a scalar as one unlabelled sample)."""
        data = self._get("query", query=expr, **({} if at is None else {"time": at}))
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(
        self, expr: str, *, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """Evaluate a range query; return its series, each with `values` [[t, "v"], ...]."""
        data = self._get("query_range", query=expr, start=start, end=end, step=step)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Return the alerts pending or firing now."""
        alerts: list[dict[str, Any]] = self._get("alerts")["alerts"]
        return alerts

    def targets_up(self) -> dict[str, bool]:
        """Return, by `service` label, whether the last scrape of each target succeeded."""
        active = self._get("targets")["activeTargets"]
        return {t["labels"].get("service", t["scrapeUrl"]): t["health"] == "up" for t in active}

    def wait_for_scrapes(self, services: list[str], timeout_s: float) -> None:
        """Wait until every named service has been scraped successfully."""
        wait_until(
            lambda: all(self.targets_up().get(name) for name in services),
            timeout_s=timeout_s,
            what=f"Prometheus to scrape {', '.join(services)}",
        )


class PrometheusServer(PrometheusAPI):
    """One Prometheus process with its configuration and data under `workdir`."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.workdir = workdir
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def start(self) -> None:
        """Write the configuration, start the server and wait until it is ready."""
        binaries = prometheus_binaries()
        assert binaries is not None, "prometheus is not installed"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                binaries[0],
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self.ready, timeout_s=30, what="Prometheus to be ready")

    def ready(self) -> bool:
        """True once the server answers /-/ready; fails with its log if it exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            tail = (self.workdir / "prometheus.log").read_text()[-3000:]
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{tail}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it hangs)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def numbers(series: list[dict[str, Any]]) -> list[float]:
    """Return every finite sample value of a range query's series."""
    values = (float(value) for s in series for _t, value in s.get("values", [s.get("value")]))
    return [v for v in values if v == v and v not in (float("inf"), float("-inf"))]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with `args`; return its result (output in stdout and stderr)."""
    binaries = prometheus_binaries()
    assert binaries is not None, "promtool is not installed"
    return subprocess.run(
        [binaries[1], *args], capture_output=True, text=True, timeout=60, check=False
    )
