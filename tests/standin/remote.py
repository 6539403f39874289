"""A stand-in in another process: start it, then drive it through its /_standin/ control API."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from tests.standin.faults import FAULT_ADAPTER, Fault
from tests.standin.request_log import RequestRecord

ROOT: Final = Path(__file__).resolve().parents[2]
START_TIMEOUT_S: Final = 20.0


class StandInControl:
    """Client of a stand-in's control API."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        """Talk to the stand-in at `base_url` (http://host:port)."""
        self.base_url = base_url
        self._http = httpx.Client(base_url=f"{base_url}/_standin", timeout=timeout_s)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def clock(self) -> dict[str, Any]:
        """Return {"now_ms", "speed"}."""
        result: dict[str, Any] = self._call("GET", "/clock")
        return result

    def set_clock(
        self,
        *,
        now_ms: int | None = None,
        advance_ms: int | None = None,
        speed: float | None = None,
    ) -> dict[str, Any]:
        """Jump to `now_ms` or move by `advance_ms`, optionally at a new speed."""
        change = {"now_ms": now_ms, "advance_ms": advance_ms, "speed": speed}
        result: dict[str, Any] = self._call(
            "PUT", "/clock", json={k: v for k, v in change.items() if v is not None}
        )
        return result

    def add_fault(self, spec: Fault) -> int:
        """Put a fault in force; return its id."""
        body = FAULT_ADAPTER.dump_python(spec, mode="json")
        return int(self._call("POST", "/faults", json=body)["id"])

    def faults(self) -> list[dict[str, Any]]:
        """Return the faults in force."""
        result: list[dict[str, Any]] = self._call("GET", "/faults")
        return result

    def clear_faults(self) -> None:
        """Remove every fault."""
        self._call("DELETE", "/faults")

    def requests(self, *, since_index: int = 0, path: str | None = None) -> list[RequestRecord]:
        """Return the request log, oldest first."""
        params: dict[str, Any] = {"since_index": since_index}
        if path is not None:
            params["path"] = path
        return [RequestRecord(**r) for r in self._call("GET", "/requests", params=params)]

    def clear_requests(self) -> None:
        """Forget the request log."""
        self._call("DELETE", "/requests")

    def change_settings(self, **changes: Any) -> dict[str, Any]:
        """Change switches: open_candle=bool, weight_limit=int | None."""
        result: dict[str, Any] = self._call("PUT", "/settings", json=changes)
        return result

    def account(self) -> dict[str, Any]:
        """Return {"balances": {asset: [free, locked]}, "orders": [order with "fills"]}."""
        result: dict[str, Any] = self._call("GET", "/account")
        return result

    def fund(self, **free: float) -> dict[str, Any]:
        """Set free balances, e.g. fund(BTC=1.0); return the account."""
        result: dict[str, Any] = self._call("PUT", "/balances", json=free)
        return result

    def markets(self) -> dict[str, Any]:
        """Return {"end_ms", "symbols": {symbol: [interval, ...]}}."""
        result: dict[str, Any] = self._call("GET", "/markets")
        return result


@dataclass
class StandInProcess:
    """A stand-in running as a child process."""

    base_url: str
    control: StandInControl
    process: subprocess.Popen[bytes]


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def run_standin_process(
    *, speed: float = 1.0, start_ms: int | None = None, args: Sequence[str] = ()
) -> Iterator[StandInProcess]:
    """Start `python -m tests.standin` on a free port, wait until it answers, stop it after."""
    port = free_port()
    command = [sys.executable, "-m", "tests.standin", "--port", str(port), "--speed", str(speed)]
    if start_ms is not None:
        command += ["--start-ms", str(start_ms)]
    process = subprocess.Popen([*command, *args], cwd=ROOT, stdout=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    control = StandInControl(base_url)
    try:
        _wait_until_up(base_url, process)
        yield StandInProcess(base_url, control, process)
    finally:
        control.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stand-in exited with status {process.returncode}")
        try:
            if httpx.get(f"{base_url}/_standin/clock", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the stand-in did not answer at {base_url} within {START_TIMEOUT_S} s")
