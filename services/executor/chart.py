"""Backtest charts (I/O edge): a result and its candles in, a PNG or a self-contained HTML file out.

Panels, sharing the time axis: each market's close with its entries (up triangles) and exits
(down triangles, coloured by kind), the equity curve, and the drawdown from the running peak.
Long series are drawn as a min/max envelope per pixel-sized bucket, so a year of minutes draws
as fast as a day and loses no spike. PNG needs matplotlib (an optional dependency, imported
only here); HTML is an inline SVG with no script and nothing fetched from elsewhere.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.executor.backtest import BacktestResult
from services.executor.candles import CandleArrays
from services.executor.report import drawdown_curve

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]

SUFFIXES = (".png", ".html")
BUCKETS = 1_500  # envelope buckets per series: about one per horizontal pixel
MAX_PRICE_PANELS = 4  # markets drawn; the equity covers all of them
EXIT_COLOURS = {
    "take_profit": "#1f77b4",
    "stop_loss": "#d62728",
    "trailing_stop": "#ff7f0e",
    "breakeven_stop": "#7f7f7f",
    "time_stop": "#9467bd",
    "signal": "#111111",
}
ENTRY_COLOUR = "#2ca02c"


class ChartError(ValueError):
    """A chart that cannot be written; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class Markers:
    """Points to mark on a price panel: times, prices, and a label per point."""

    times_ms: list[int]
    prices: list[float]
    labels: list[str]


@dataclass(frozen=True, slots=True)
class PricePanel:
    """One market's close (as an envelope) with its entries and its exits by kind."""

    symbol: str
    times_ms: I64Array
    close: F64Array
    entries: Markers
    exits: dict[str, Markers]


def check_path(path: Path) -> None:
    """Raise ChartError unless `path` names a chart this module can write here."""
    if path.suffix.lower() not in SUFFIXES:
        raise ChartError(f"{path}: a chart must end in .png or .html")
    if not path.parent.is_dir():
        raise ChartError(f"{path}: no such directory {path.parent}")
    if path.suffix.lower() == ".png":
        _figure_class()


def _figure_class() -> Any:
    """Return matplotlib's Figure class, or raise ChartError saying how to get it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ChartError(
            "a PNG chart needs matplotlib (pip install matplotlib); an .html chart needs nothing"
        ) from None
    return Figure


def envelope(
    times_ms: I64Array, values: F64Array, buckets: int = BUCKETS
) -> tuple[I64Array, F64Array]:
    """Return at most 2 x `buckets` points keeping each bucket's lowest and highest value."""
    if values.size <= 2 * buckets:
        return times_ms, values
    starts = np.linspace(0, values.size, buckets, endpoint=False).astype(np.int64)
    lows = np.minimum.reduceat(values, starts)
    highs = np.maximum.reduceat(values, starts)
    return np.repeat(times_ms[starts], 2), np.column_stack([lows, highs]).ravel()


def price_panels(result: BacktestResult, markets: Mapping[str, CandleArrays]) -> list[PricePanel]:
    """Return the price panels of the first `MAX_PRICE_PANELS` markets."""
    panels = []
    trades = result.trades + result.open_trades
    for symbol, candles in list(markets.items())[:MAX_PRICE_PANELS]:
        mine = [trade for trade in trades if trade.symbol == symbol]
        entries = Markers(
            [t.entry_time_ms for t in mine],
            [t.entry_price for t in mine],
            [
                f"entry {t.quantity:.6g} at {t.entry_price:.8g}, {_when(t.entry_time_ms)}"
                for t in mine
            ],
        )
        exits: dict[str, Markers] = {}
        for trade in mine:
            for leg in trade.exits:
                found = exits.setdefault(leg.kind, Markers([], [], []))
                found.times_ms.append(leg.time_ms)
                found.prices.append(leg.price)
                found.labels.append(
                    f"{leg.kind} {leg.quantity:.6g} at {leg.price:.8g}, {_when(leg.time_ms)}"
                )
        panels.append(PricePanel(symbol, candles.times_ms, candles.close, entries, exits))
    return panels


def _when(time_ms: int) -> str:
    return dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_chart(path: Path, result: BacktestResult, markets: Mapping[str, CandleArrays]) -> None:
    """Write the chart of a backtest as PNG or HTML, chosen by the file name's suffix."""
    check_path(path)
    panels = price_panels(result, markets)
    drawdown = drawdown_curve(result.equity, result.report.initial_equity)
    if path.suffix.lower() == ".png":
        _write_png(path, panels, result, drawdown)
    else:
        path.write_text(_html(panels, result, drawdown), encoding="utf-8")


def _dates(times_ms: I64Array | list[int]) -> npt.NDArray[np.datetime64]:
    return np.asarray(times_ms, dtype=np.int64).astype("datetime64[ms]")


def _write_png(
    path: Path, panels: list[PricePanel], result: BacktestResult, drawdown: F64Array
) -> None:
    """Draw the panels with matplotlib's object API (no pyplot: no GUI backend, no globals)."""
    figure_class = _figure_class()
    rows = len(panels) + 2
    figure = figure_class(figsize=(13, 2.6 * len(panels) + 4.2), layout="constrained")
    axes = figure.subplots(
        rows, 1, sharex=True, gridspec_kw={"height_ratios": [3] * len(panels) + [2, 1.2]}
    )
    for axis, panel in zip(axes, panels, strict=False):
        times, close = envelope(panel.times_ms, panel.close)
        axis.plot(_dates(times), close, color="#555555", linewidth=0.6)
        axis.scatter(_dates(panel.entries.times_ms), panel.entries.prices, marker="^", s=18,
                     color=ENTRY_COLOUR, label="entry", zorder=3)  # fmt: skip
        for kind, marks in panel.exits.items():
            axis.scatter(_dates(marks.times_ms), marks.prices, marker="v", s=18,
                         color=EXIT_COLOURS.get(kind, "#000000"), label=kind, zorder=3)  # fmt: skip
        axis.set_ylabel(panel.symbol)
        axis.legend(loc="upper left", fontsize=7, ncol=7)
    times, equity = envelope(result.times_ms, result.equity)
    axes[-2].plot(_dates(times), equity, color="#1f77b4", linewidth=0.8)
    axes[-2].set_ylabel("equity")
    times, falls = envelope(result.times_ms, -100.0 * drawdown)
    axes[-1].fill_between(_dates(times), falls, 0.0, color="#d62728", alpha=0.5, linewidth=0)
    axes[-1].set_ylabel("drawdown %")
    report = result.report
    figure.suptitle(
        f"return {report.total_return:+.2%}, {report.trades} trades, "
        f"max drawdown {report.max_drawdown:.2%}"
    )
    figure.savefig(path, dpi=110)


def _html(panels: list[PricePanel], result: BacktestResult, drawdown: F64Array) -> str:
    """Return a standalone HTML page: one inline SVG per panel, tooltips as SVG titles."""
    start, end = int(result.times_ms[0]), int(result.times_ms[-1])
    parts = [
        _svg_panel(panel.symbol, panel.times_ms, panel.close, start, end, 260, panel)
        for panel in panels
    ]
    parts.append(_svg_panel("equity", result.times_ms, result.equity, start, end, 200, None))
    parts.append(
        _svg_panel("drawdown %", result.times_ms, -100.0 * drawdown, start, end, 120, None)
    )
    report = result.report
    title = (
        f"Backtest: return {report.total_return:+.2%}, {report.trades} trades, "
        f"max drawdown {report.max_drawdown:.2%}"
    )
    legend = " ".join(
        f'<span style="color:{colour}">&#9660; {kind}</span>'
        for kind, colour in EXIT_COLOURS.items()
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:13px sans-serif;margin:16px}svg{display:block;margin-bottom:8px}"
        "text{font:11px sans-serif}</style></head><body>"
        f"<h3>{html.escape(title)}</h3>"
        f'<p><span style="color:{ENTRY_COLOUR}">&#9650; entry</span> {legend}</p>'
        f"<p>{html.escape(_when(start))} to {html.escape(_when(end))}</p>"
        + "".join(parts)
        + "</body></html>\n"
    )


def _svg_panel(
    name: str,
    times_ms: I64Array,
    values: F64Array,
    start: int,
    end: int,
    height: int,
    panel: PricePanel | None,
) -> str:
    """Return one panel as an SVG: the series' envelope, its range, and the panel's markers."""
    width, left, pad = 1_000, 70, 10
    times, ys = envelope(times_ms, values)
    marks = (
        []
        if panel is None
        else [(panel.entries, ENTRY_COLOUR, -1)]
        + [(m, EXIT_COLOURS.get(kind, "#000000"), 1) for kind, m in panel.exits.items()]
    )
    low = min([float(ys.min())] + [min(m.prices) for m, _, _ in marks if m.prices])
    high = max([float(ys.max())] + [max(m.prices) for m, _, _ in marks if m.prices])
    span_y = high - low or 1.0
    span_x = max(end - start, 1)

    def x_of(time_ms: float) -> float:
        return left + (time_ms - start) / span_x * (width - left - pad)

    def y_of(value: float) -> float:
        return pad + (high - value) / span_y * (height - 2 * pad)

    points = " ".join(
        f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in zip(times.tolist(), ys.tolist(), strict=True)
    )
    body = [f'<polyline fill="none" stroke="#555" stroke-width="0.8" points="{points}"/>']
    for markers, colour, direction in marks:
        for time_ms, price, label in zip(
            markers.times_ms, markers.prices, markers.labels, strict=True
        ):
            x, y = x_of(time_ms), y_of(price)
            body.append(
                f'<path d="M{x:.1f},{y:.1f} l-4,{-7 * direction} h8 z" fill="{colour}">'
                f"<title>{html.escape(label)}</title></path>"
            )
    axis = (
        f'<text x="4" y="{pad + 10}">{high:.6g}</text>'
        f'<text x="4" y="{height - pad}">{low:.6g}</text>'
        f'<text x="4" y="{height / 2:.0f}" font-weight="bold">{html.escape(name)}</text>'
        f'<rect x="{left}" y="{pad}" width="{width - left - pad}" height="{height - 2 * pad}" '
        'fill="none" stroke="#ccc"/>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        + axis
        + "".join(body)
        + "</svg>"
    )
