"""The overview dashboard's own PromQL, fetched from a real Prometheus -> docs/img/overview.png.

    python scripts/plot_overview.py                      # a fresh run, then the picture
    python scripts/plot_overview.py --seconds 300 --out overview.png
    python scripts/plot_overview.py --prometheus http://localhost:9090 --minutes 30

By default it runs the five services on a replayed market (the stand-in exchange serving real
recorded candles, as in tests/e2e/test_observability.py) with a Prometheus scraping them every
second, on the local Redis and Postgres (a scratch Redis database, emptied before and after, and
a new Postgres database, dropped after). With --prometheus it plots the last minutes of a
Prometheus that already watches candlebus, such as the compose one. Needs matplotlib (a
dev-only dependency), and for a fresh run Debian's `prometheus` package and ../shared/data.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import redis
import sqlalchemy as sa
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.store import upgrade  # noqa: E402
from tests.e2e.observed import (  # noqa: E402
    BACKFILL_HOURS,
    SYMBOLS,
    GatewayTraffic,
    observed_pipeline,
)
from tests.e2e.prometheus import PrometheusAPI  # noqa: E402
from tests.monitoring import load_dashboards, panels, with_rate_interval  # noqa: E402

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"  # the benchmarks' scratch database
MAX_LEGEND = 8
UP, DOWN = "#1a9850", "#d73027"


# --- fetching ------------------------------------------------------------------------------------

Series = tuple[str, list[datetime], list[float]]


def legend(template: str, labels: dict[str, str]) -> str:
    """Render a Grafana legend format (`{{service}} p99`) with a series' labels."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template).strip()


def fetch_panel(
    prometheus: PrometheusAPI,
    panel: dict[str, Any],
    window: tuple[float, float, float],
    rate_interval: str,
) -> list[Series]:
    """Evaluate every query of a panel over the window (start, end, step), as Grafana would."""
    start, end, step = window
    found: list[Series] = []
    for target in panel["targets"]:
        expr = with_rate_interval(target["expr"], rate_interval)
        for series in prometheus.query_range(expr, start=start, end=end, step=step):
            times = [datetime.fromtimestamp(float(t), UTC) for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            found.append((legend(target.get("legendFormat", ""), series["metric"]), times, values))
    return sorted(found, key=lambda s: s[0])


# --- drawing -------------------------------------------------------------------------------------


def unit_formatter(unit: str) -> FuncFormatter:
    """Return a y-axis tick formatter for a Grafana unit."""

    def seconds(value: float, _pos: object) -> str:
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.1f} s"

    def size(value: float, _pos: object) -> str:
        return f"{value / 2**20:.0f} MiB"

    formats = {
        "s": seconds,
        "bytes": size,
        "percentunit": lambda v, _p: f"{v * 100:.0f}%",
        "ops": lambda v, _p: f"{v:g}/s",
        "reqps": lambda v, _p: f"{v:g}/s",
    }
    return FuncFormatter(formats.get(unit, lambda v, _p: f"{v:g}"))


def draw_series(axis: Axes, panel: dict[str, Any], series: list[Series]) -> None:
    """Draw a time series panel; the legend names the busiest series, never the all-zero ones."""
    peaks = {name: max((v for v in values if v == v), default=0.0) for name, _t, values in series}
    for name, times, values in series:
        quiet = peaks[name] == 0
        axis.plot(times, values, linewidth=0.8 if quiet else 1.1, alpha=0.5 if quiet else 1.0,
                  label=None if quiet else name)  # fmt: skip
    axis.yaxis.set_major_formatter(unit_formatter(panel["fieldConfig"]["defaults"]["unit"]))
    shown = sorted((name for name, peak in peaks.items() if peak > 0), key=lambda n: -peaks[n])
    if not shown:
        axis.set_ylim(0, 1)
        axis.text(0.5, 0.5, "0 all along", transform=axis.transAxes, ha="center", fontsize=9,
                  color="#666666")  # fmt: skip
        return
    handles, labels = axis.get_legend_handles_labels()
    by_label = dict(zip(labels, handles, strict=True))
    kept = shown[:MAX_LEGEND]
    axis.set_ylim(0, peaks[shown[0]] * 1.45)  # room for the legend above the lines
    axis.legend([by_label[name] for name in kept], kept, fontsize=6.5, loc="upper left",
                ncol=2 if len(kept) > 3 else 1, frameon=False)  # fmt: skip


def draw_up(axis: Axes, series: list[Series]) -> None:
    """Draw `up` as one strip per service: green while scraped, red while not."""
    for row, (_name, times, values) in enumerate(series):
        for state, color in ((1.0, UP), (0.0, DOWN)):
            strip = [row if value == state else float("nan") for value in values]
            axis.plot(times, strip, color=color, linewidth=7, solid_capstyle="butt")
    axis.set_yticks(range(len(series)), [name for name, _t, _v in series], fontsize=7)
    axis.set_ylim(-0.7, len(series) - 0.3)


def draw(board: dict[str, Any], fetched: list[list[Series]], output: Path, subtitle: str) -> None:
    matplotlib.use("Agg")
    shown = panels(board)
    columns = 3
    rows = -(-len(shown) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(15, 3.1 * rows), sharex=True)
    figure.suptitle(f"{board['title']}  ({subtitle})", fontsize=12, x=0.01, ha="left")
    flat = list(axes.flat)
    for axis, panel, series in zip(flat, shown, fetched, strict=False):
        axis.set_title(panel["title"], fontsize=9, loc="left")
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=7)
        if panel["type"] == "stat":
            draw_up(axis, series)
        else:
            draw_series(axis, panel, series)
    for axis in flat[len(shown) :]:
        axis.set_visible(False)
    for axis in flat:
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=90)
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.open(buffer).convert("RGB").quantize(256).save(output, optimize=True)
    print(f"wrote {output}")


def plot(
    prometheus: PrometheusAPI,
    window: tuple[float, float, float],
    rate_interval: str,
    output: Path,
    subtitle: str,
) -> None:
    board = load_dashboards()["overview"]
    fetched = [fetch_panel(prometheus, panel, window, rate_interval) for panel in panels(board)]
    empty = [
        panel["title"] for panel, series in zip(panels(board), fetched, strict=True) if not series
    ]
    if empty:
        print(f"no data for: {', '.join(empty)}")
    draw(board, fetched, output, subtitle)


# --- a fresh run ---------------------------------------------------------------------------------


@contextmanager
def scratch_databases(redis_url: str) -> Iterator[str]:
    """Yield a new migrated Postgres database's URL with `redis_url` emptied; clean up after."""
    name = f"cbplot_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    redis.Redis.from_url(redis_url).flushdb()
    try:
        upgrade(url)
        yield url
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fresh_run(seconds: float, settle_s: float, redis_url: str, output: Path) -> None:
    """Run the services, let them work off the collector's backfill, then plot `seconds`."""
    with (
        scratch_databases(redis_url) as database_url,
        tempfile.TemporaryDirectory() as workdir,
        observed_pipeline(redis_url, database_url, Path(workdir)) as run,
        GatewayTraffic(run.pipeline),
    ):
        time.sleep(settle_s)
        start = time.time()
        time.sleep(seconds)
        run.pipeline.assert_running()
        subtitle = (
            f"{len(SYMBOLS)} replayed markets, a candle each per second, {seconds:.0f} s after "
            f"the {BACKFILL_HOURS}-hour backfill; scraped every second"
        )
        plot(run.prometheus, (start, time.time(), 2.0), "10s", output, subtitle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "overview.png")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of a fresh run")
    parser.add_argument(
        "--settle", type=float, default=45.0, help="seconds of a fresh run left out at its start"
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="a scratch database, emptied")
    parser.add_argument("--prometheus", help="plot this Prometheus instead of a fresh run")
    parser.add_argument(
        "--minutes", type=float, default=30.0, help="with --prometheus: how far back"
    )
    args = parser.parse_args()
    if args.prometheus is None:
        fresh_run(args.seconds, args.settle, args.redis_url, args.out)
        return
    end = time.time()
    window = (end - args.minutes * 60, end, max(args.minutes * 60 / 400, 5.0))
    plot(
        PrometheusAPI(args.prometheus),
        window,
        "1m",
        args.out,
        f"the last {args.minutes:g} minutes of {args.prometheus}",
    )


if __name__ == "__main__":
    main()
