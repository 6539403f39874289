"""Run the five services as separate processes on the real Redis and Postgres, and watch them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from services.gateway.auth import generate_token

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("collector", "indicators", "signals", "executor", "gateway")
GROUPS = {"indicators": "candles", "signals": "indicators", "executor": "ticks"}


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll `predicate` until it holds, or fail saying what did not happen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Pipeline:
    """The services as processes, each with its own log file under `log_dir`."""

    redis_url: str
    database_url: str
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    per_service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    gateway_port: int = field(default_factory=free_port)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    # The gateway's API tokens (it refuses to start without an admin one).
    read_token: str = field(default_factory=generate_token)
    admin_token: str = field(default_factory=generate_token)

    def environment(self, name: str) -> dict[str, str]:
        """Return the environment one service process runs with."""
        port = self.metrics_ports.setdefault(name, free_port())
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "METRICS_PORT": str(port),
            "CONSUMER_NAME": f"{name}-1",
            "BLOCK_MS": "100",
            "CLAIM_IDLE_MS": "5000",
            "LOG_LEVEL": "INFO",
            "PORT": str(self.gateway_port),
            "API_TOKENS_READ": self.read_token,
            "API_TOKENS_ADMIN": self.admin_token,
            "NUMBA_CACHE_DIR": str(ROOT / ".numba-cache"),
            # the checks read the executor's whole input back from the ticks stream
            "STREAM_RETAIN_TICKS": "1000000",
            **self.env,
            **self.per_service_env.get(name, {}),
        }
        env.pop("PYTEST_CURRENT_TEST", None)
        return env

    def start(self, *names: str) -> None:
        """Start the named services (all five by default) as `python -m services.<name>`."""
        for name in names or SERVICES:
            log = (self.log_dir / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env=self.environment(name),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
        if "gateway" in (names or SERVICES):
            wait_until(self.gateway_healthy, timeout_s=30, what="the gateway's /health")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to one service and wait for it to exit; return its exit code."""
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(timeout=30)

    def stop(self) -> None:
        """Stop every service with SIGTERM (SIGKILL if it hangs)."""
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def assert_running(self) -> None:
        """Fail with the service's log tail if any process died."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")

    def gateway_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.gateway_port}/health", timeout=1):
                return True
        except OSError:
            return False

    def auth_headers(self, *, admin: bool = False) -> dict[str, str]:
        """Return the Authorization header of the read (or admin) token."""
        return {"Authorization": f"Bearer {self.admin_token if admin else self.read_token}"}

    def metrics_text(self, name: str) -> str:
        url = f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text: str = response.read().decode()
            return text

    def groups(self) -> dict[str, dict[str, object] | None]:
        """Return each service's consumer group as XINFO GROUPS reports it (None if absent)."""
        self.assert_running()
        client = redis.Redis.from_url(self.redis_url)
        try:
            found: dict[str, dict[str, object] | None] = {}
            for group, stream in GROUPS.items():
                info = client.xinfo_groups(stream) if client.exists(stream) else []
                found[group] = next((g for g in info if g["name"].decode() == group), None)
            return found
        finally:
            client.close()

    def consuming(self) -> bool:
        """True when the running consumers' groups exist: each is warmed up and reading."""
        groups = self.groups()
        return all(groups[name] is not None for name in GROUPS if name in self.processes)

    def drained(self) -> bool:
        """True when every consumer group has read and acked everything on its stream."""
        return all(
            info is not None and not info["pending"] and not info["lag"]
            for info in self.groups().values()
        )
