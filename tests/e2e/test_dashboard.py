"""The dashboard in real headless Chromium against the five services replaying real candles:
the chart follows live candles, the kill switch turns on and off, the page survives a gateway
restart (resuming over the WebSocket), and a screenshot is saved (with
CANDLEBUS_UPDATE_DOCS_IMAGES=1 set, also as the README's docs/img/dashboard.png)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ohlcv_path
from tests.e2e import checks
from tests.e2e.harness import ROOT, Pipeline, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make tools` installs it
# This machine and CI have no internet: nothing may try to reach it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FILES = ("ETH_BTC-1m.json", "ADA_BTC-1m.json", "XMR_BTC-1m.json")
SYMBOL = "ETH/BTC"
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"
WAIT_MS = 30_000
EMPTY = ("", "\N{EN DASH}")  # what the page shows before it has a value


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a browser Playwright downloads)."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (make tools installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def pipeline(redis_url: str, database_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    replay = ",".join(str(ohlcv_path(name)) for name in FILES)
    pipe = Pipeline(
        redis_url=redis_url,
        database_url=database_url,
        log_dir=tmp_path,
        # 3,000 times real time: 50 one-minute candles a second per market, lively but
        # far from the end of the files while the test runs.
        per_service_env={
            "collector": {"SOURCE": "replay", "REPLAY_FILES": replay, "REPLAY_SPEED": "3000"},
            "gateway": {"WS_HEARTBEAT_S": "1"},
        },
    )
    yield pipe
    pipe.stop()


def controls(pipeline: Pipeline) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{pipeline.gateway_port}/api/v1/controls",
        headers=pipeline.auth_headers(),
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def chart_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(
        """() => ({
            drawn: Number(document.getElementById("price").dataset.drawn),
            stoch: Number(document.getElementById("stochrsi").dataset.drawn),
            last: Number(document.getElementById("price").dataset.lastOpenTime || 0),
            price: document.getElementById("last-price").textContent,
            link: document.getElementById("link").dataset.state,
        })"""
    )
    return state


def toggle_kill_switch(page: Any, *, expect_on: bool) -> None:
    button = page.locator("#kill-switch")
    button.click()  # the first click arms it ...
    assert "confirm" in button.inner_text()
    button.click()  # ... the second one sets it
    page.wait_for_selector(f'#kill-state[data-on="{str(expect_on).lower()}"]', timeout=WAIT_MS)


class FrameLog:
    """What the page's WebSocket connections sent and received, as Chromium saw them."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.sockets = 0

    def attach(self, websocket: Any) -> None:
        self.sockets += 1
        websocket.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        websocket.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def candle_times(self) -> set[int]:
        return {
            event["data"]["open_time_ms"]
            for frame in self.received
            if frame["type"] == "events"
            for event in frame["events"]
            if event["stream"] == "candles"
        }


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page the size of a laptop screen."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    yield page
    page.close()


@contextlib.contextmanager
def shown_on_failure(page: Any, path: Path) -> Iterator[None]:
    """Save what the page showed if the block fails (next to the services' logs)."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(path))
        raise


def test_dashboard_follows_the_live_pipeline_toggles_the_kill_switch_and_survives_a_restart(
    pipeline: Pipeline, page: Any, tmp_path: Path
) -> None:
    with shown_on_failure(page, tmp_path / "failed.png"):
        follow_the_pipeline(pipeline, page, tmp_path)


def follow_the_pipeline(pipeline: Pipeline, page: Any, tmp_path: Path) -> None:
    pipeline.start("gateway", "executor", "signals", "indicators")
    wait_until(pipeline.consuming, timeout_s=120, what="the consumers to start reading")
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def console(message: Any) -> None:
        # Requests refused while the gateway restarts are expected; anything else is not.
        if message.type == "error" and "ERR_CONNECTION_REFUSED" not in message.text:
            problems.append(f"console: {message.text}")

    page.on("console", console)
    frames = FrameLog()
    page.on("websocket", frames.attach)
    started = time.monotonic()

    page.goto(
        f"http://127.0.0.1:{pipeline.gateway_port}/#token={pipeline.admin_token}&symbol={SYMBOL}"
    )
    page.wait_for_selector('#link[data-state="live"]', timeout=WAIT_MS)
    assert chart_state(page)["drawn"] == 0  # nothing stored yet: every candle will come live
    assert "token=" not in page.url  # the token is kept in the session, not in the address

    # Live candles: the chart grows from nothing, candle by candle.
    pipeline.start("collector")
    page.wait_for_function(
        "() => Number(document.getElementById('price').dataset.drawn) >= 20", timeout=WAIT_MS
    )
    first = chart_state(page)
    page.wait_for_function(
        f"() => Number(document.getElementById('price').dataset.lastOpenTime) > {first['last']}",
        timeout=WAIT_MS,
    )
    second = chart_state(page)
    assert second["drawn"] >= first["drawn"] and second["last"] > first["last"]
    assert second["price"] not in EMPTY
    assert second["last"] in frames.candle_times()  # drawn from a candle the socket delivered
    stored = checks.query(
        pipeline.database_url,
        "SELECT max(open_time_ms) FROM candles WHERE symbol = :s AND timeframe = '1m'",
        s=SYMBOL,
    )[0][0]
    assert second["last"] <= stored

    # The kill switch, from the page, as the gateway records it.
    toggle_kill_switch(page, expect_on=True)
    on = controls(pipeline)
    assert on["kill_switch"] is True and on["reason"] == "halted from the dashboard"
    toggle_kill_switch(page, expect_on=False)
    assert controls(pipeline)["kill_switch"] is False

    # The gateway restarts: the page reconnects and resumes from the last ids it saw.
    pipeline.kill("gateway")
    page.wait_for_selector('#link[data-state="reconnecting"]', timeout=WAIT_MS)
    before_restart = chart_state(page)
    pipeline.start("gateway")
    page.wait_for_selector('#link[data-state="live"]', timeout=WAIT_MS)
    page.wait_for_function(
        "() => Number(document.getElementById('price').dataset.lastOpenTime) > "
        f"{before_restart['last'] + 60_000 * 20}",
        timeout=WAIT_MS,
    )
    resumes = [request for request in frames.sent if request.get("since")]
    assert frames.sockets >= 2 and resumes, "the page did not resume after the restart"
    assert {"candles", "signals"} <= set(resumes[-1]["since"])
    resumed = [frame for frame in frames.received if frame["type"] == "resumed"]
    assert resumed and not any(frame["gap"] for frame in resumed)

    # Enough history for a full chart, with trading in the tables.
    page.wait_for_function(
        "() => Number(document.getElementById('price').dataset.drawn) >= 100"
        " && document.querySelectorAll('#fills tr').length > 0",
        timeout=WAIT_MS,
    )
    page.wait_for_timeout(1500)  # a heartbeat and a poll: rates, readiness and levels shown
    page.wait_for_selector("#toast", state="hidden", timeout=WAIT_MS)
    final = chart_state(page)
    assert final["stoch"] > 100  # StochRSI drawn under the candles
    assert page.locator("#rate-candles").inner_text() not in EMPTY
    assert page.locator("#services").inner_text().count("\N{CHECK MARK}") == 3
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=str(screenshot))
    if os.environ.get("CANDLEBUS_UPDATE_DOCS_IMAGES"):  # the README's picture, when asked
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)

    # A smaller laptop screen: everything still on it, nothing wider than the window.
    page.set_viewport_size({"width": 1366, "height": 768})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for selector in ("#price", "#stochrsi", "#kill-switch", "#positions", "#fills"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1366, selector
        assert box["y"] < 768, selector
    assert page.locator("#price").bounding_box()["width"] > 700  # type: ignore[index]
    page.screenshot(path=str(tmp_path / "dashboard-1366x768.png"))
    pipeline.assert_running()
    assert problems == []
    print(
        f"\n{time.monotonic() - started:.1f} s in the browser: {final['drawn']} candles drawn, "
        f"last {final['price']}, {len(frames.received)} frames over {frames.sockets} "
        f"connections, {sum(frame['count'] for frame in resumed)} events resumed after the "
        f"restart; screenshot {screenshot}"
    )
