"""Real ETH/BTC 1m candles in -> docs/bands.png: price, and StochRSI K/D inside the dynamic bands.

    python scripts/plot_bands.py [--file ../shared/data/ohlcv/ETH_BTC-1m.json] [--start 13540]

Needs matplotlib (a dev-only dependency). The numbers are the batch path's with the default
parameters, computed over the whole file so the window starts fully warmed up.
"""

from __future__ import annotations

import argparse
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.collector.sources import parse_file_name, read_rows  # noqa: E402
from services.indicators.engine import IndicatorParams, compute_frame  # noqa: E402
from shared.messages import TIMEFRAME_MS  # noqa: E402

DEFAULT_FILE = ROOT.parent / "shared" / "data" / "ohlcv" / "ETH_BTC-1m.json"
# A stretch where a burst of volatility widens the bands and calm spells around it narrow them.
DEFAULT_START = 13_540
DEFAULT_CANDLES = 240

BUY, SELL = "#1a9850", "#d73027"
K_COLOR, D_COLOR, PRICE_COLOR, BASE_COLOR = "#2166ac", "#f4a582", "#333333", "#888888"


def crossings(
    frame: dict[str, npt.NDArray[np.float64]],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Return where the strategy buys (K up through lower band) and sells (down through upper)."""
    k, previous_k = frame["stoch_k"], frame["prev_stoch_k"]
    buy = (previous_k < frame["prev_band_lower"]) & (k >= frame["band_lower"])
    sell = (previous_k > frame["prev_band_upper"]) & (k <= frame["band_upper"])
    return buy, sell


def annotate_extremes(
    axis: Axes,
    times: list[datetime],
    series: dict[str, npt.NDArray[np.float64]],
    params: IndicatorParams,
) -> None:
    """Point at the widest bands and the longest narrowest spell, naming the clamp at work."""
    lower, upper, ratio = series["band_lower"], series["band_upper"], series["volatility_ratio"]
    width = upper - lower
    widest = int(np.nanargmax(width))
    narrow = np.flatnonzero(np.isclose(width, np.nanmin(width)))
    spell = max(np.split(narrow, np.flatnonzero(np.diff(narrow) > 1) + 1), key=len)
    narrowest = int(spell[spell.size // 2])
    notes = [
        (
            widest,
            upper[widest],
            f"volatility burst (ATR {ratio[widest]:.1f}x its mean): bands widen,\n"
            f"by at most max_width ({params.max_width:g}) each side",
            (-270, -4),
        ),
        (
            narrowest,
            upper[narrowest],
            f"calm (ATR {ratio[narrowest]:.2f}x its mean): bands narrow,\n"
            f"by at most min_width ({params.min_width:g}) each side",
            (-45, 52),
        ),
    ]
    for index, value, text, offset in notes:
        axis.annotate(
            text,
            xy=(times[index], value),  # the date axis converts datetimes
            xytext=offset,
            textcoords="offset points",
            fontsize=9,
            color="#444444",
            arrowprops={"arrowstyle": "->", "color": "#666666", "linewidth": 0.8},
            bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "#cccccc"},
        )


def plot(path: Path, start: int, candles: int, output: Path) -> None:
    """Draw the two panels for candles [start, start + candles) of the file into `output`."""
    symbol, timeframe = parse_file_name(path)
    rows = np.array(read_rows(path), dtype=np.float64)
    params = IndicatorParams()
    frame = compute_frame(
        rows[:, 0].astype(np.int64),
        rows[:, 2],
        rows[:, 3],
        rows[:, 4],
        timeframe_ms=TIMEFRAME_MS[timeframe],
        params=params,
    )
    buy, sell = crossings(frame)
    window = slice(start, start + candles)
    times = [datetime.fromtimestamp(ms / 1000, tz=UTC) for ms in frame["open_time_ms"][window]]
    series = {name: column[window] for name, column in frame.items()}
    buy, sell = buy[window], sell[window]

    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(11, 7), height_ratios=(2, 3), layout="constrained"
    )
    figure.suptitle(
        f"{symbol} {timeframe}: StochRSI K with volatility-adjusted bands (default parameters)",
        fontsize=13,
    )

    close = series["close"]
    top.plot(times, close, color=PRICE_COLOR, linewidth=1.1, label="close")
    top.scatter(
        np.array(times)[buy], close[buy], marker="^", s=60, color=BUY, zorder=3, label="buy"
    )
    top.scatter(
        np.array(times)[sell], close[sell], marker="v", s=60, color=SELL, zorder=3, label="sell"
    )
    top.set_ylabel("price (BTC)")
    top.legend(loc="upper right", frameon=False, ncols=3)

    lower, upper = series["band_lower"], series["band_upper"]
    floor = min(0.0, float(np.nanmin(lower))) - 5
    ceiling = max(100.0, float(np.nanmax(upper))) + 20  # room for the notes above the bands
    bottom.fill_between(times, floor, lower, color=BUY, alpha=0.08, linewidth=0)
    bottom.fill_between(times, upper, ceiling, color=SELL, alpha=0.08, linewidth=0)
    bottom.plot(times, lower, color=BUY, linewidth=1.6, label="lower band")
    bottom.plot(times, upper, color=SELL, linewidth=1.6, label="upper band")
    bottom.axhline(
        params.base_lower,
        color=BASE_COLOR,
        linestyle="--",
        linewidth=1,
        label=f"base levels {params.base_lower:g} / {params.base_upper:g}",
    )
    bottom.axhline(params.base_upper, color=BASE_COLOR, linestyle="--", linewidth=1)
    bottom.plot(times, series["stoch_d"], color=D_COLOR, linewidth=1.1, label="D")
    bottom.plot(times, series["stoch_k"], color=K_COLOR, linewidth=1.3, label="K")
    k = series["stoch_k"]
    bottom.scatter(np.array(times)[buy], k[buy], marker="^", s=60, color=BUY, zorder=3)
    bottom.scatter(np.array(times)[sell], k[sell], marker="v", s=60, color=SELL, zorder=3)
    bottom.set_ylim(floor, ceiling)
    bottom.set_ylabel("StochRSI (0-100)")
    bottom.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, ncols=5, fontsize=9)
    annotate_extremes(bottom, times, series, params)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
    bottom.set_xlabel(f"open time (UTC, {times[0]:%d %b %Y})")
    for axis in (top, bottom):
        axis.grid(True, color="#eeeeee", linewidth=0.8)
        axis.spines[["top", "right"]].set_visible(False)
        axis.margins(x=0)

    output.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the picture light in the repository at no visible cost.
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100)
    Image.open(buffer).convert("RGB").quantize(256).save(output, optimize=True)
    plt.close(figure)


def main() -> None:
    """Parse the command line and write the picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--file",
        type=Path,
        default=DEFAULT_FILE,
        help="ccxt JSON or CSV, named like ETH_BTC-1m.json",
    )
    parser.add_argument("--start", type=int, default=DEFAULT_START, help="first candle (index)")
    parser.add_argument("--candles", type=int, default=DEFAULT_CANDLES, help="how many to draw")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bands.png")
    args = parser.parse_args()
    matplotlib.use("Agg")  # files only: no display needed
    plot(args.file, args.start, args.candles, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
