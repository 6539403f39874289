// Canvas drawing for the dashboard: candles with volume, signal and fill markers and position
// levels; StochRSI with its dynamic bands; an equity curve. Pure drawing: data in, pixels out.

export const AXIS_WIDTH = 78; // right-hand price axis, shared by both charts so they line up
const TIME_AXIS = 18;
const COLORS = {
  grid: "#1f2833",
  axis: "#8591a3",
  up: "#26a69a",
  down: "#ef5350",
  volumeUp: "rgba(38, 166, 154, 0.35)",
  volumeDown: "rgba(239, 83, 80, 0.35)",
  k: "#4fc3f7",
  d: "#ffb74d",
  lower: "#26a69a",
  upper: "#ef5350",
  zone: "rgba(66, 165, 245, 0.07)",
  entry: "#42a5f5",
  stop: "#ef5350",
  target: "#66bb6a",
  last: "#d5dbe3",
  cross: "rgba(213, 219, 227, 0.35)",
};
const FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

/** Size the canvas's backing store to its box (sharp on high-density screens); return its
 * drawing context and size in CSS pixels. */
export function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const box = canvas.getBoundingClientRect();
  const width = Math.max(1, Math.floor(box.width));
  const height = Math.max(1, Math.floor(box.height));
  if (canvas.width !== width * ratio || canvas.height !== height * ratio) {
    canvas.width = width * ratio;
    canvas.height = height * ratio;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  return { ctx, width, height };
}

/** Return how many decimals show a price of this size with about five significant digits. */
export function decimalsFor(value) {
  if (!Number.isFinite(value) || value === 0) return 2;
  return Math.min(10, Math.max(2, 4 - Math.floor(Math.log10(Math.abs(value)))));
}

export function formatPrice(value, decimals) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return value.toFixed(decimals ?? decimalsFor(value));
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const unit = raw / power;
  const nice = unit < 1.5 ? 1 : unit < 3 ? 2 : unit < 7 ? 5 : 10;
  return nice * power;
}

/** The x of each of `count` candles `spacing` apart, right-aligned on the plot area. */
export function xOf(index, count, plotWidth, spacing) {
  return plotWidth - (count - index - 0.5) * spacing;
}

function timeLabel(ms, previousMs) {
  const date = new Date(ms);
  const sameDay = previousMs !== null && new Date(previousMs).getUTCDate() === date.getUTCDate();
  if (!sameDay) {
    return date.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
  }
  return date.toISOString().slice(11, 16);
}

function drawTimeAxis(ctx, candles, plotWidth, height, spacing) {
  ctx.fillStyle = COLORS.axis;
  ctx.textAlign = "center";
  const every = Math.max(1, Math.ceil(90 / spacing));
  let previous = null;
  for (let i = candles.length - 1; i >= 0; i -= every) {
    const x = xOf(i, candles.length, plotWidth, spacing);
    if (x < 20) break;
    const before = i - every >= 0 ? candles[i - every].open_time_ms : null;
    ctx.fillText(timeLabel(candles[i].open_time_ms, before), x, height - TIME_AXIS / 2);
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath();
    ctx.moveTo(Math.round(x) + 0.5, 0);
    ctx.lineTo(Math.round(x) + 0.5, height - TIME_AXIS);
    ctx.stroke();
    previous = candles[i].open_time_ms;
  }
  return previous;
}

function axisLabel(ctx, text, y, plotWidth, background, color) {
  const width = ctx.measureText(text).width + 10;
  ctx.fillStyle = background;
  ctx.fillRect(plotWidth + 2, y - 8, width, 16);
  ctx.fillStyle = color;
  ctx.textAlign = "left";
  ctx.fillText(text, plotWidth + 7, y);
}

function tag(ctx, text, x, y, color, align) {
  // A label on a dark plate, readable over candles.
  const width = ctx.measureText(text).width;
  const left = align === "right" ? x - width - 4 : x - 4;
  ctx.fillStyle = "rgba(22, 28, 36, 0.85)";
  ctx.fillRect(left, y - 7, width + 8, 14);
  ctx.fillStyle = color;
  ctx.textAlign = align;
  ctx.fillText(text, x, y);
}

function dashedLine(ctx, y, plotWidth, color, dash) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.setLineDash(dash);
  ctx.beginPath();
  ctx.moveTo(0, Math.round(y) + 0.5);
  ctx.lineTo(plotWidth, Math.round(y) + 0.5);
  ctx.stroke();
  ctx.restore();
}

/** Draw candles (volume beneath), signal and fill markers, position levels and the last price.
 *
 * view: {candles (oldest first, the visible ones), spacing, signals: Map open_time_ms -> side,
 * fills: [{time_ms, price, side}], levels: [{label, price, kind}], hoverIndex}
 * Returns the number of candles drawn. */
export function drawPrice(canvas, view) {
  const { ctx, width, height } = prepare(canvas);
  const plotWidth = width - AXIS_WIDTH;
  const plotHeight = height - TIME_AXIS;
  const candles = view.candles;
  if (candles.length === 0) {
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "center";
    ctx.fillText("waiting for candles…", plotWidth / 2, plotHeight / 2);
    return 0;
  }
  const volumeTop = plotHeight * 0.8;
  let low = Infinity;
  let high = -Infinity;
  let maxVolume = 0;
  for (const c of candles) {
    low = Math.min(low, c.low);
    high = Math.max(high, c.high);
    maxVolume = Math.max(maxVolume, c.volume);
  }
  // Levels near the candles widen the scale to show them; far ones are pinned to an edge, so
  // a distant stop or target never squashes the candles.
  const span = high - low || high * 0.01 || 1;
  for (const level of view.levels) {
    if (level.price >= low - span * 0.35 && level.price <= high + span * 0.35) {
      low = Math.min(low, level.price);
      high = Math.max(high, level.price);
    }
  }
  const pad = (high - low) * 0.1 || high * 0.001 || 1; // room for the signal markers
  low -= pad;
  high += pad;
  const priceBottom = volumeTop - 4;
  const y = (price) => 4 + ((high - price) / (high - low)) * (priceBottom - 4);
  const decimals = decimalsFor(high);

  // grid and price axis
  const step = niceStep(high - low, 6);
  ctx.textAlign = "left";
  for (let value = Math.ceil(low / step) * step; value <= high; value += step) {
    const py = Math.round(y(value)) + 0.5;
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath();
    ctx.moveTo(0, py);
    ctx.lineTo(plotWidth, py);
    ctx.stroke();
    ctx.fillStyle = COLORS.axis;
    ctx.fillText(formatPrice(value, decimals), plotWidth + 7, py);
  }
  drawTimeAxis(ctx, candles, plotWidth, height, view.spacing);

  // volume and candles
  const body = Math.max(1, Math.floor(view.spacing * 0.7));
  for (let i = 0; i < candles.length; i++) {
    const c = candles[i];
    const x = xOf(i, candles.length, plotWidth, view.spacing);
    const up = c.close >= c.open;
    if (maxVolume > 0) {
      const vh = (c.volume / maxVolume) * (plotHeight - volumeTop);
      ctx.fillStyle = up ? COLORS.volumeUp : COLORS.volumeDown;
      ctx.fillRect(Math.round(x - body / 2), plotHeight - vh, body, vh);
    }
    ctx.strokeStyle = ctx.fillStyle = up ? COLORS.up : COLORS.down;
    ctx.beginPath();
    ctx.moveTo(Math.round(x) + 0.5, y(c.high));
    ctx.lineTo(Math.round(x) + 0.5, y(c.low));
    ctx.stroke();
    const top = y(Math.max(c.open, c.close));
    const bottom = y(Math.min(c.open, c.close));
    ctx.fillRect(Math.round(x - body / 2), top, body, Math.max(1, bottom - top));
  }

  // signals: a triangle below the candle for a buy, above it for a sell
  const size = Math.max(4, Math.min(7, view.spacing));
  for (let i = 0; i < candles.length; i++) {
    const side = view.signals.get(candles[i].open_time_ms);
    if (!side) continue;
    const x = xOf(i, candles.length, plotWidth, view.spacing);
    ctx.fillStyle = side === "buy" ? COLORS.up : COLORS.down;
    ctx.beginPath();
    if (side === "buy") {
      const tip = y(candles[i].low) + 4;
      ctx.moveTo(x, tip);
      ctx.lineTo(x - size, tip + size * 1.6);
      ctx.lineTo(x + size, tip + size * 1.6);
    } else {
      const tip = y(candles[i].high) - 4;
      ctx.moveTo(x, tip);
      ctx.lineTo(x - size, tip - size * 1.6);
      ctx.lineTo(x + size, tip - size * 1.6);
    }
    ctx.fill();
  }

  // fills: a ring at the price, on the candle that contains the fill time
  const first = candles[0].open_time_ms;
  const frame = candles.length > 1 ? candles[1].open_time_ms - candles[0].open_time_ms : 60000;
  for (const fill of view.fills) {
    const index = Math.floor((fill.time_ms - first) / frame);
    if (index < 0 || index >= candles.length) continue;
    const x = xOf(index, candles.length, plotWidth, view.spacing);
    ctx.strokeStyle = fill.side === "buy" ? COLORS.entry : COLORS.d;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x, y(fill.price), Math.max(3, size - 1), 0, Math.PI * 2);
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  // open position: entry, stop and targets (those off the scale listed at its edge)
  let above = 0;
  let below = 0;
  for (const level of view.levels) {
    const color = COLORS[level.kind] || COLORS.entry;
    const text = `${level.label} ${formatPrice(level.price, decimals)}`;
    if (level.price > high) {
      tag(ctx, `▲ ${text}`, 6, 12 + 16 * above++, color, "left");
    } else if (level.price < low) {
      tag(ctx, `▼ ${text}`, 6, priceBottom - 8 - 16 * below++, color, "left");
    } else {
      dashedLine(ctx, y(level.price), plotWidth, color, [6, 4]);
      tag(ctx, text, plotWidth - 6, y(level.price) - 9, color, "right");
    }
  }

  // last price
  const last = candles[candles.length - 1];
  dashedLine(ctx, y(last.close), plotWidth, COLORS.last, [2, 3]);
  axisLabel(
    ctx,
    formatPrice(last.close, decimals),
    y(last.close),
    plotWidth,
    last.close >= last.open ? COLORS.up : COLORS.down,
    "#fff",
  );

  // crosshair
  if (view.hoverIndex !== null && view.hoverIndex >= 0 && view.hoverIndex < candles.length) {
    const x = Math.round(xOf(view.hoverIndex, candles.length, plotWidth, view.spacing)) + 0.5;
    ctx.strokeStyle = COLORS.cross;
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, plotHeight);
    ctx.stroke();
  }
  return candles.length;
}

/** Draw StochRSI K and D with the dynamic lower and upper bands (the zone between them
 * shaded), aligned with the price chart's candles. Returns the number of K points drawn. */
export function drawStoch(canvas, view) {
  const { ctx, width, height } = prepare(canvas);
  const plotWidth = width - AXIS_WIDTH;
  const plotHeight = height - 4;
  const y = (value) => 4 + ((100 - value) / 100) * (plotHeight - 6);
  ctx.textAlign = "left";
  for (const value of [0, 20, 50, 80, 100]) {
    const py = Math.round(y(value)) + 0.5;
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath();
    ctx.moveTo(0, py);
    ctx.lineTo(plotWidth, py);
    ctx.stroke();
    ctx.fillStyle = COLORS.axis;
    ctx.fillText(String(value), plotWidth + 7, py);
  }
  const candles = view.candles;
  const rows = candles.map((c) => view.indicators.get(c.open_time_ms) || null);
  const x = (i) => xOf(i, candles.length, plotWidth, view.spacing);

  // the zone between the bands
  ctx.fillStyle = COLORS.zone;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    if (!row || row.band_lower === null || row.band_upper === null) continue;
    const top = y(row.band_upper);
    ctx.fillRect(x(i) - view.spacing / 2, top, view.spacing, y(row.band_lower) - top);
  }
  const line = (field, color, width) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.beginPath();
    let drawing = false;
    let points = 0;
    for (let i = 0; i < rows.length; i++) {
      const value = rows[i] ? rows[i][field] : null;
      if (value === null || value === undefined || !Number.isFinite(value)) {
        drawing = false;
        continue;
      }
      if (drawing) ctx.lineTo(x(i), y(value));
      else ctx.moveTo(x(i), y(value));
      drawing = true;
      points += 1;
    }
    ctx.stroke();
    ctx.lineWidth = 1;
    return points;
  };
  line("band_lower", COLORS.lower, 1.2);
  line("band_upper", COLORS.upper, 1.2);
  line("stoch_d", COLORS.d, 1.2);
  const drawn = line("stoch_k", COLORS.k, 1.6);
  if (view.hoverIndex !== null && view.hoverIndex >= 0 && view.hoverIndex < candles.length) {
    const hx = Math.round(x(view.hoverIndex)) + 0.5;
    ctx.strokeStyle = COLORS.cross;
    ctx.beginPath();
    ctx.moveTo(hx, 0);
    ctx.lineTo(hx, plotHeight);
    ctx.stroke();
  }
  if (drawn === 0) {
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "center";
    ctx.fillText(candles.length ? "indicators warming up…" : "", plotWidth / 2, plotHeight / 2);
  }
  return drawn;
}

/** Draw an equity curve: points [{time_ms, equity}], oldest first. */
export function drawEquity(canvas, points) {
  const { ctx, width, height } = prepare(canvas);
  if (points.length < 2) {
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "center";
    ctx.fillText("no closed trades yet", width / 2, height / 2);
    return 0;
  }
  let low = Infinity;
  let high = -Infinity;
  for (const p of points) {
    low = Math.min(low, p.equity);
    high = Math.max(high, p.equity);
  }
  const pad = (high - low) * 0.1 || Math.abs(high) * 0.0005 || 1;
  low -= pad;
  high += pad;
  const t0 = points[0].time_ms;
  const span = Math.max(1, points[points.length - 1].time_ms - t0);
  const labelWidth = 64;
  const px = (p) => ((p.time_ms - t0) / span) * (width - labelWidth - 4) + 2;
  const py = (p) => 3 + ((high - p.equity) / (high - low)) * (height - 6);
  const start = points[0].equity;
  const end = points[points.length - 1].equity;
  ctx.strokeStyle = end >= start ? COLORS.up : COLORS.down;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(px(p), py(p)) : ctx.moveTo(px(p), py(p))));
  ctx.stroke();
  ctx.lineWidth = 1;
  ctx.fillStyle = COLORS.axis;
  ctx.textAlign = "left";
  ctx.fillText(high.toFixed(2), width - labelWidth + 4, 8);
  ctx.fillText(low.toFixed(2), width - labelWidth + 4, height - 8);
  return points.length;
}
