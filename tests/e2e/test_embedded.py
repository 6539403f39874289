"""`candlebus up`: the whole pipeline in one process, as a newcomer first runs it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, free_port, wait_until

pytestmark = pytest.mark.e2e


def get_json(url: str, token: str | None = None) -> object:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=2
    ) as response:
        return json.loads(response.read())


def printed_token(output: str, role: str) -> str:
    """Return the token `candlebus up` printed for a role at first start."""
    found = re.search(rf"^  {role} +(\S+)$", output, re.MULTILINE)
    assert found, f"no {role} token printed:\n{output[-3000:]}"
    return found.group(1)


def test_candlebus_up_serves_health_and_trades_the_synthetic_market_within_a_minute(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = (tmp_path / "up.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": str(ROOT / ".numba-cache")},
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
        try:
            return bool(get_json(f"{base}/health"))
        except OSError:
            return False

    try:
        wait_until(healthy, timeout_s=30, what="/health")
        health_s = time.monotonic() - started
        token = printed_token((tmp_path / "up.log").read_text(), "read")
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(f"{base}/api/v1/orders")
        assert refused.value.code == 401

        def has_orders() -> bool:
            assert process.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            orders = get_json(f"{base}/api/v1/orders?limit=10", token)
            return isinstance(orders, list) and len(orders) > 0

        wait_until(has_orders, timeout_s=60, what="orders from the synthetic market")
        orders_s = time.monotonic() - started

        def has_positions() -> bool:  # an order fills at the next candle's open
            positions = get_json(f"{base}/api/v1/positions", token)
            return isinstance(positions, list) and len(positions) > 0

        wait_until(has_positions, timeout_s=30, what="a filled order's position")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output[-3000:]
    assert f"http://127.0.0.1:{port}" in output, "the API URL was not printed"
    assert "candles/s" in output, "no live status line"
    stored = (tmp_path / "data" / "api-tokens.json").read_text()
    assert token not in stored and "sha256:" in stored, "the token file must hold hashes only"
    print(f"\n/health after {health_s:.1f} s, first order after {orders_s:.1f} s")
