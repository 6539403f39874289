// The dashboard: loads history over REST, then follows the pipeline over the WebSocket /ws
// (resuming from the last ids it saw after any disconnect), and draws it.

import {
  AXIS_WIDTH,
  decimalsFor,
  drawEquity,
  drawPrice,
  drawStoch,
  formatPrice,
} from "./charts.js";

const STREAMS = ["candles", "indicators", "signals", "orders", "fills", "positions"];
const TOKEN_KEY = "candlebus.token";
const ROWS = 60; // rows kept per table
const HISTORY = 600; // candles loaded per market
const KEEP = 2000; // candles kept per market
const POLL_MS = 5000; // controls, readiness, levels, PnL
const RESUME_WITHIN_MS = 10 * 60 * 1000; // after a longer break, reload rather than replay
const ARM_MS = 4000; // the kill switch asks for a second click within this time

const $ = (id) => document.getElementById(id);
const ui = {
  symbol: $("symbol"),
  timeframe: $("timeframe"),
  price: $("price"),
  stoch: $("stochrsi"),
  equityCurve: $("equity-curve"),
  link: $("link"),
  kill: $("kill-switch"),
};

const state = {
  token: null,
  symbol: null,
  timeframe: "1m",
  markets: [],
  candles: new Map(), // open_time_ms -> candle of the market shown
  sorted: [],
  indicators: new Map(), // open_time_ms -> indicators of the market shown
  chartSignals: new Map(), // open_time_ms -> side, market shown
  chartFills: new Map(), // fill_id -> fill, market shown
  signals: new Map(),
  orders: new Map(),
  fills: new Map(),
  positions: new Map(), // exchange:symbol -> position
  levels: new Map(), // symbol -> open holding's levels
  levelsSavedAt: null,
  levelsAskedAt: 0,
  controls: null,
  ready: null,
  pnl: null,
  equity: [],
  lastIds: {},
  subscribedSymbol: null,
  rates: {},
  socket: null,
  retryMs: 500,
  reconnects: 0,
  opened: false,
  lastFrameAt: 0,
  heartbeatMs: 5000,
  lastHeartbeatAt: 0,
  spacing: 7,
  hover: null,
  dirty: new Set(),
  seen: new Map(), // table -> keys already shown (new rows flash)
};

// --- small helpers -----------------------------------------------------------------------------

function compareIds(a, b) {
  const [am, as] = a.split("-").map(Number);
  const [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

function mergeIds(ids) {
  for (const [stream, id] of Object.entries(ids || {})) {
    const known = state.lastIds[stream];
    if (!known || compareIds(id, known) > 0) state.lastIds[stream] = id;
  }
}

function time(ms) {
  return new Date(ms).toISOString().slice(5, 19).replace("T", " ");
}

function number(value, digits) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: Math.min(digits, 2),
  });
}

function quantity(value) {
  // Quantities of cheap coins run to millions: three significant digits say enough here.
  if (Math.abs(value) >= 100000) {
    return value.toLocaleString("en-US", { notation: "compact", maximumSignificantDigits: 3 });
  }
  return number(value, 4);
}

function signed(value, digits = 2) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return (value > 0 ? "+" : "") + number(value, digits);
}

function setText(id, text, className) {
  const element = $(id);
  element.textContent = text;
  if (className !== undefined) element.className = className;
}

let toastTimer = null;
function toast(text, isError = false) {
  const box = $("toast");
  box.textContent = text;
  box.className = isError ? "toast error" : "toast";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 4000);
}

let scheduled = false;
function invalidate(...parts) {
  for (const part of parts) state.dirty.add(part);
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(render); // many events between two frames cost one drawing
  }
}

// --- the token ---------------------------------------------------------------------------------

function readLocation() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token"); // not left in the address bar or the history
  }
  if (params.get("symbol")) state.symbol = params.get("symbol");
  if (params.get("timeframe")) state.timeframe = params.get("timeframe");
  history.replaceState(
    null,
    "",
    location.pathname + location.search + (params.toString() ? "#" + params : ""),
  );
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
}

function askToken(why) {
  $("token-why").textContent = why;
  $("token-dialog").hidden = false;
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  if ($("token-remember").checked) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  $("token-input").value = "";
  $("token-dialog").hidden = true;
  state.token = token;
  start();
});
$("token-button").addEventListener("click", () => askToken("Enter another API token."));

// --- REST --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    askToken("The gateway did not accept this token.");
    throw new ApiError(401, "unauthorized");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const detail = typeof body.detail === "string" ? body.detail : response.statusText;
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

async function optional(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error.status === 401) throw error;
    return null; // an endpoint this gateway does not have (yet): the panel shows what it can
  }
}

function marketQuery() {
  return `symbol=${encodeURIComponent(state.symbol)}&timeframe=${encodeURIComponent(state.timeframe)}`;
}

async function loadMarkets() {
  const markets = (await optional("/api/v1/symbols")) || [];
  state.markets = markets;
  const symbols = [...new Set(markets.map((m) => m.symbol))].sort();
  if (!state.symbol && symbols.length) state.symbol = symbols[0];
  if (state.symbol && !symbols.includes(state.symbol)) symbols.unshift(state.symbol);
  fillSelect(ui.symbol, symbols, state.symbol);
  const timeframes = markets.filter((m) => m.symbol === state.symbol).map((m) => m.timeframe);
  if (timeframes.length && !timeframes.includes(state.timeframe)) state.timeframe = timeframes[0];
  fillSelect(ui.timeframe, timeframes.length ? timeframes : [state.timeframe], state.timeframe);
}

function fillSelect(select, values, chosen) {
  const current = [...select.options].map((o) => o.value);
  if (current.join() !== values.join()) {
    select.replaceChildren(...values.map((v) => new Option(v, v)));
  }
  if (chosen) select.value = chosen;
}

async function loadMarket() {
  if (!state.symbol) return;
  const symbol = state.symbol;
  const timeframe = state.timeframe;
  const query = `${marketQuery()}&limit=${HISTORY}`;
  const [candles, indicators] = await Promise.all([
    api(`/api/v1/candles?${query}`),
    api(`/api/v1/indicators?${query}`),
  ]);
  if (symbol !== state.symbol || timeframe !== state.timeframe) return; // changed meanwhile
  for (const candle of candles) upsertCandle(candle);
  for (const row of indicators) state.indicators.set(row.open_time_ms, row);
  if (candles.length) {
    const since = `symbol=${encodeURIComponent(symbol)}&start_ms=${candles[0].open_time_ms}&limit=1000`;
    const [signals, fills] = await Promise.all([
      api(`/api/v1/signals?${since}`),
      api(`/api/v1/fills?${since}`),
    ]);
    for (const signal of signals) chartSignal(signal);
    for (const fill of fills) state.chartFills.set(fill.fill_id, fill);
  }
  invalidate("chart");
}

async function loadTrading() {
  const [signals, orders, fills, positions] = await Promise.all([
    api(`/api/v1/signals?limit=${ROWS}`),
    api(`/api/v1/orders?limit=${ROWS}`),
    api(`/api/v1/fills?limit=${ROWS}`),
    api("/api/v1/positions"),
  ]);
  for (const s of signals) state.signals.set(s.signal_id, s);
  for (const o of orders) state.orders.set(o.client_order_id, o);
  for (const f of fills) state.fills.set(f.fill_id, f);
  for (const p of positions) state.positions.set(`${p.exchange}:${p.symbol}`, p);
  invalidate("signals", "orders", "fills", "positions", "pnl");
}

async function poll() {
  if (!state.token) return;
  const [controls, ready, levels, pnl, equity] = await Promise.all([
    optional("/api/v1/controls"),
    fetch("/ready")
      .then((r) => r.json())
      .catch(() => null),
    optional("/api/v1/positions/levels"),
    optional("/api/v1/pnl"),
    optional("/api/v1/pnl/equity?limit=1000"),
  ]);
  // a poll that left before a change made here answers with the older state: keep the newer
  const current = state.controls;
  if (!controls || !current || (controls.updated_at_ms ?? 0) >= (current.updated_at_ms ?? 0)) {
    state.controls = controls;
  }
  state.ready = ready;
  if (levels) applyLevels(levels);
  state.pnl = pnl;
  if (equity) state.equity = equityPoints(equity);
  if (!state.markets.length || !state.symbol) {
    await loadMarkets(); // a pipeline just started: markets appear with their first candles
    if (state.symbol && !state.candles.size) await loadMarket();
    followMarket();
  }
  invalidate("controls", "system", "positions", "pnl", "chart");
}

function equityPoints(points) {
  // Without a known initial equity the curve is the realized PnL alone.
  return points
    .map((p) => ({ time_ms: p.time_ms, equity: p.equity ?? p.realized_pnl + p.unrealized_pnl }))
    .filter((p) => Number.isFinite(p.time_ms) && Number.isFinite(p.equity));
}

// --- live data ---------------------------------------------------------------------------------

function upsertCandle(candle) {
  const known = state.candles.has(candle.open_time_ms);
  state.candles.set(candle.open_time_ms, candle);
  const last = state.sorted[state.sorted.length - 1];
  if (!known && (!last || candle.open_time_ms > last.open_time_ms)) {
    state.sorted.push(candle);
  } else {
    state.sorted = [...state.candles.values()].sort((a, b) => a.open_time_ms - b.open_time_ms);
  }
  if (state.sorted.length > KEEP * 1.2) {
    const drop = state.sorted.splice(0, state.sorted.length - KEEP);
    for (const old of drop) {
      state.candles.delete(old.open_time_ms);
      state.indicators.delete(old.open_time_ms);
      state.chartSignals.delete(old.open_time_ms);
    }
  }
}

function chartSignal(signal) {
  if (signal.symbol === state.symbol && signal.timeframe === state.timeframe) {
    state.chartSignals.set(signal.open_time_ms, signal.side);
  }
}

const apply = {
  candles(d) {
    if (d.symbol !== state.symbol || d.timeframe !== state.timeframe) return;
    upsertCandle(d);
    invalidate("chart");
  },
  indicators(d) {
    if (d.symbol !== state.symbol || d.timeframe !== state.timeframe) return;
    state.indicators.set(d.open_time_ms, d);
    invalidate("chart");
  },
  signals(d) {
    state.signals.set(d.signal_id, d);
    chartSignal(d);
    invalidate("signals", "chart");
  },
  orders(d) {
    state.orders.set(d.client_order_id, { status: "placed", ...d });
    invalidate("orders");
  },
  fills(d) {
    state.fills.set(d.fill_id, d);
    const order = state.orders.get(d.client_order_id);
    if (order) state.orders.set(d.client_order_id, { ...order, status: "filled" });
    if (d.symbol === state.symbol) state.chartFills.set(d.fill_id, d);
    invalidate("fills", "orders", "chart");
  },
  positions(d) {
    state.positions.set(`${d.exchange}:${d.symbol}`, d);
    invalidate("positions", "pnl");
    refreshLevelsSoon();
  },
};

let levelsTimer = null;
function refreshLevelsSoon() {
  // The executor saves stops and targets with the same step that publishes the position:
  // read them again shortly after, at most a few times a second however busy the stream.
  if (levelsTimer !== null) return;
  levelsTimer = setTimeout(async () => {
    levelsTimer = null;
    const levels = await optional("/api/v1/positions/levels").catch(() => null);
    if (levels) applyLevels(levels);
  }, 300);
}

function applyLevels(levels) {
  // Answers can cross on the way back: keep the newest saved state, never an older one.
  if (state.levelsSavedAt !== null && (levels.saved_at_ms ?? 0) < state.levelsSavedAt) return;
  state.levelsSavedAt = levels.saved_at_ms ?? 0;
  state.levels = new Map(levels.holdings.map((h) => [h.symbol, h]));
  invalidate("positions", "chart", "pnl");
}

function holdingOf(symbol) {
  // The stop and targets of the position the live stream shows, and only of that one: the
  // levels are read over REST and may still describe an earlier holding for a moment.
  const holding = state.levels.get(symbol);
  const position = [...state.positions.values()].find((p) => p.symbol === symbol && p.quantity > 0);
  if (!holding || !position) return null;
  const same = Math.abs(holding.entry_price - position.avg_price) <= 1e-9 * position.avg_price;
  if (!same && Date.now() - state.levelsAskedAt > 1000) {
    state.levelsAskedAt = Date.now();
    refreshLevelsSoon();
  }
  return same ? holding : null;
}

function handle(frame) {
  switch (frame.type) {
    case "events":
      for (const event of frame.events) {
        apply[event.stream]?.(event.data);
        state.lastIds[event.stream] = event.id;
      }
      break;
    case "subscribed":
      mergeIds(frame.ids);
      break;
    case "heartbeat":
      if (state.lastHeartbeatAt) {
        state.heartbeatMs = Math.max(1000, Date.now() - state.lastHeartbeatAt);
      }
      state.lastHeartbeatAt = Date.now();
      state.rates = frame.rates;
      mergeIds(frame.ids);
      invalidate("system");
      break;
    case "resumed":
      if (frame.gap) {
        toast(`some ${frame.stream} events were no longer kept; reloaded`);
        loadMarket()
          .then(loadTrading)
          .catch(() => {});
      }
      break;
    case "error":
      toast(frame.reason, true);
      break;
    case "dropped":
      toast(`disconnected by the gateway: ${frame.reason}`, true);
      break;
  }
}

function channels(symbol) {
  const trading = ["signals", "orders", "fills", "positions"];
  return symbol ? [`candles:${symbol}`, `indicators:${symbol}`, ...trading] : trading;
}

function send(request) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(request));
  }
}

function setLink(status, detail) {
  ui.link.dataset.state = status;
  ui.link.textContent = detail || status;
  invalidate("system");
}

function connect() {
  if (!state.token) return;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(
    `${scheme}${location.host}/ws?token=${encodeURIComponent(state.token)}`,
  );
  state.socket = socket;
  socket.onopen = () => {
    const away = state.lastFrameAt ? Date.now() - state.lastFrameAt : Infinity;
    const resume = Object.keys(state.lastIds).length > 0 && away < RESUME_WITHIN_MS;
    const wanted = channels(state.symbol);
    state.subscribedSymbol = state.symbol;
    const request = { op: "subscribe", channels: wanted };
    if (resume) {
      // What this page missed while it was away comes first, then live events: nothing twice.
      const streams = STREAMS.filter(
        (s) => state.lastIds[s] && wanted.some((c) => c.split(":")[0] === s),
      );
      request.since = Object.fromEntries(streams.map((s) => [s, state.lastIds[s]]));
    } else if (state.lastFrameAt) {
      state.lastIds = {};
      reloadAll();
    }
    send(request);
    if (state.opened) {
      state.reconnects += 1;
      poll().catch(() => {}); // what the panels show is as fresh as the link
    }
    state.opened = true;
    state.lastFrameAt = Date.now();
    state.retryMs = 500;
    setLink("live");
  };
  socket.onmessage = (message) => {
    state.lastFrameAt = Date.now();
    handle(JSON.parse(message.data));
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (event.code === 1008 && event.reason.includes("token")) {
      setLink("refused", "token refused");
      askToken("The gateway refused this token.");
      return;
    }
    setLink("reconnecting");
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 10000); // a restarting gateway is not hammered
  };
}

function watchdog() {
  // No frame for three heartbeats: the link is dead even if the socket does not know it yet.
  const socket = state.socket;
  if (
    socket &&
    socket.readyState === WebSocket.OPEN &&
    Date.now() - state.lastFrameAt > 3 * state.heartbeatMs
  ) {
    socket.close();
  }
  invalidate("system");
}

async function changeMarket() {
  const old = state.symbol;
  state.symbol = ui.symbol.value;
  state.timeframe = ui.timeframe.value || state.timeframe;
  state.candles.clear();
  state.indicators.clear();
  state.chartSignals.clear();
  state.chartFills.clear();
  state.sorted = [];
  const params = new URLSearchParams({ symbol: state.symbol, timeframe: state.timeframe });
  history.replaceState(null, "", "#" + params);
  if (old !== state.symbol) followMarket();
  await loadMarkets();
  invalidate("chart");
  await loadMarket();
}

function followMarket() {
  // Move the live subscription to the market shown (no `since`: its history comes over REST).
  const old = state.subscribedSymbol;
  if (old === state.symbol || !state.socket || state.socket.readyState !== WebSocket.OPEN) return;
  if (old) send({ op: "unsubscribe", channels: [`candles:${old}`, `indicators:${old}`] });
  send({ op: "subscribe", channels: [`candles:${state.symbol}`, `indicators:${state.symbol}`] });
  state.subscribedSymbol = state.symbol;
}

function reloadAll() {
  loadMarket()
    .then(loadTrading)
    .catch((error) => toast(error.message, true));
}

// --- the kill switch ---------------------------------------------------------------------------

let armTimer = null;
let armedTurnOn = false; // what the armed button offered: the confirming click does just that
ui.kill.addEventListener("click", async () => {
  if (!state.controls) return;
  if (!ui.kill.classList.contains("arming")) {
    const turnOn = !state.controls.kill_switch;
    armedTurnOn = turnOn;
    ui.kill.classList.add("arming");
    ui.kill.textContent = turnOn ? "confirm: halt entries" : "confirm: resume trading";
    armTimer = setTimeout(() => renderControls({ disarm: true }), ARM_MS);
    return;
  }
  clearTimeout(armTimer);
  const turnOn = armedTurnOn;
  ui.kill.disabled = true;
  try {
    state.controls = await api("/api/v1/controls/kill-switch", {
      method: "PUT",
      body: JSON.stringify({
        on: turnOn,
        reason: turnOn ? "halted from the dashboard" : "resumed from the dashboard",
      }),
    });
    toast(turnOn ? "kill switch on: no new entries" : "kill switch off: trading resumes");
  } catch (error) {
    toast(
      error.status === 403
        ? "the kill switch needs an admin token"
        : `kill switch: ${error.message}`,
      true,
    );
  }
  renderControls({ disarm: true });
});

// Polls re-render the controls every few seconds; an armed button stays armed (its own timer
// or its confirming click disarms it), so a render between the two clicks changes nothing.
function renderControls({ disarm = false } = {}) {
  const controls = state.controls;
  if (disarm) ui.kill.classList.remove("arming");
  const armed = ui.kill.classList.contains("arming");
  const badge = $("kill-state");
  if (!controls) {
    badge.dataset.on = "unknown";
    badge.textContent = "–";
    ui.kill.disabled = true;
    ui.kill.textContent = "…";
    return;
  }
  badge.dataset.on = String(controls.kill_switch);
  badge.textContent = controls.kill_switch ? "ON" : "off";
  const when = controls.updated_at_ms ? ` (${time(controls.updated_at_ms)})` : "";
  $("kill-reason").textContent = controls.reason ? controls.reason + when : "";
  if (armed) return;
  ui.kill.disabled = false;
  ui.kill.textContent = controls.kill_switch ? "turn off" : "turn on (halt entries)";
}

// --- rendering ---------------------------------------------------------------------------------

function visibleCandles() {
  const plotWidth = ui.price.clientWidth - AXIS_WIDTH;
  const count = Math.max(10, Math.floor(plotWidth / state.spacing));
  return state.sorted.slice(-count);
}

function chartLevels() {
  const holding = holdingOf(state.symbol);
  if (!holding) return [];
  const levels = [{ label: "entry", price: holding.entry_price, kind: "entry" }];
  if (holding.stop !== null) {
    levels.push({
      label: (holding.stop_kind || "stop").replace("_", " "),
      price: holding.stop,
      kind: "stop",
    });
  }
  holding.targets.forEach((t, i) =>
    levels.push({ label: `target ${i + 1}`, price: t.price, kind: "target" }),
  );
  return levels;
}

function renderChart() {
  const candles = visibleCandles();
  const hover = state.hover !== null && state.hover < candles.length ? state.hover : null;
  const drawn = drawPrice(ui.price, {
    candles,
    spacing: state.spacing,
    signals: state.chartSignals,
    fills: [...state.chartFills.values()].map((f) => ({
      time_ms: f.filled_at_ms,
      price: f.price,
      side: f.side,
    })),
    levels: chartLevels(),
    hoverIndex: hover,
  });
  const points = drawStoch(ui.stoch, {
    candles,
    spacing: state.spacing,
    indicators: state.indicators,
    hoverIndex: hover,
  });
  ui.price.dataset.drawn = String(drawn);
  ui.stoch.dataset.drawn = String(points);
  const last = candles[candles.length - 1];
  if (!last) return;
  ui.price.dataset.lastOpenTime = String(last.open_time_ms);
  const decimals = decimalsFor(last.close);
  setText("last-price", formatPrice(last.close, decimals));
  const dayAgo =
    state.sorted.find((c) => c.open_time_ms >= last.open_time_ms - 86400000) || state.sorted[0];
  const change = ((last.close - dayAgo.open) / dayAgo.open) * 100;
  setText(
    "last-change",
    `${change >= 0 ? "+" : ""}${change.toFixed(2)}% 24h`,
    change >= 0 ? "change up" : "change down",
  );
  const shown = hover !== null ? candles[hover] : last;
  // Indicators trail their candle by a moment: show the newest row there is.
  let row = null;
  for (let i = candles.indexOf(shown); i >= 0 && row === null; i--) {
    row = state.indicators.get(candles[i].open_time_ms) || null;
  }
  setText(
    "legend",
    `${time(shown.open_time_ms)}  O ${formatPrice(shown.open, decimals)}  H ${formatPrice(shown.high, decimals)}  ` +
      `L ${formatPrice(shown.low, decimals)}  C ${formatPrice(shown.close, decimals)}  V ${number(shown.volume, 2)}`,
  );
  setText(
    "stoch-legend",
    row
      ? `K ${number(row.stoch_k, 1)}  D ${number(row.stoch_d, 1)}  bands ${number(row.band_lower, 1)} / ${number(row.band_upper, 1)}`
      : "",
  );
}

function fillTable(id, rows, key, cells) {
  const body = $(id);
  const seen = state.seen.get(id) || new Set();
  const first = !state.seen.has(id);
  body.replaceChildren(
    ...rows.slice(0, ROWS).map((row) => {
      const tr = document.createElement("tr");
      if (row.side) tr.className = row.side;
      if (!first && !seen.has(row[key])) tr.classList.add("fresh");
      for (const [text, className, title] of cells(row)) {
        const td = document.createElement("td");
        if (Array.isArray(text)) {
          td.replaceChildren(...text.map(([part, partClass]) => span(part, partClass)));
        } else {
          td.textContent = text; // textContent: event data is never parsed as HTML
        }
        if (className) td.className = className;
        if (title) td.title = title;
        tr.appendChild(td);
      }
      return tr;
    }),
  );
  state.seen.set(id, new Set(rows.map((row) => row[key])));
}

function span(text, className) {
  const element = document.createElement("span");
  element.textContent = text;
  element.className = className;
  return element;
}

function newest(map, field) {
  return [...map.values()].sort((a, b) => b[field] - a[field]);
}

function renderTables(dirty) {
  if (dirty.has("signals")) {
    fillTable("signals", newest(state.signals, "open_time_ms"), "signal_id", (s) => [
      [time(s.open_time_ms), "text"],
      [s.symbol, "text"],
      [s.side, "side"],
      [formatPrice(s.price)],
      [s.reason, "reason"],
    ]);
  }
  if (dirty.has("orders")) {
    fillTable("orders", newest(state.orders, "created_at_ms"), "client_order_id", (o) => [
      [time(o.created_at_ms), "text"],
      [o.symbol, "text"],
      [o.side, "side"],
      [quantity(o.quantity)],
      [o.status || "", "text"],
    ]);
  }
  if (dirty.has("fills")) {
    fillTable("fills", newest(state.fills, "filled_at_ms"), "fill_id", (f) => [
      [time(f.filled_at_ms), "text"],
      [f.symbol, "text"],
      [f.side, "side"],
      [formatPrice(f.price)],
      [quantity(f.quantity)],
      [number(f.fee, 6)],
    ]);
  }
}

function markOf(symbol) {
  if (symbol === state.symbol && state.sorted.length)
    return state.sorted[state.sorted.length - 1].close;
  const market = state.pnl ? state.pnl.markets.find((m) => m.symbol === symbol) : null;
  if (market && market.last_price !== null) return market.last_price;
  const holding = state.levels.get(symbol);
  return holding && holding.mark !== null ? holding.mark : null;
}

function openPositions() {
  return [...state.positions.values()]
    .filter((p) => p.quantity > 0)
    .sort((a, b) => a.symbol.localeCompare(b.symbol));
}

function renderPositions() {
  const open = openPositions();
  setText("positions-count", open.length ? `(${open.length})` : "");
  fillTable("positions", open, "symbol", (p) => {
    const mark = markOf(p.symbol);
    const pnl = mark === null ? null : (mark - p.avg_price) * p.quantity;
    const holding = holdingOf(p.symbol);
    const stop = holding && holding.stop !== null ? formatPrice(holding.stop) : "–";
    const targets = holding ? holding.targets.map((t) => formatPrice(t.price)) : [];
    const target = targets.length
      ? targets[0] + (targets.length > 1 ? ` +${targets.length - 1}` : "")
      : "–";
    const kind = holding && holding.stop_kind ? holding.stop_kind.replace("_", " ") : "stop";
    return [
      [p.symbol, "text"],
      [quantity(p.quantity)],
      [formatPrice(p.avg_price)],
      [
        signed(pnl, 4),
        pnl === null ? "" : pnl >= 0 ? "up" : "down",
        `marked at ${formatPrice(mark)}`,
      ],
      [
        [
          [stop, "down"],
          [target, "up"],
        ],
        "levels",
        `${kind} ${stop}; targets ${targets.join(", ") || "none"}`,
      ],
    ];
  });
}

function renderPnl() {
  // Realized PnL follows the positions stream live; the summary (polled) adds equity and fees.
  const realized = [...state.positions.values()].reduce((sum, p) => sum + p.realized_pnl, 0);
  let unrealized = 0;
  for (const p of openPositions()) {
    const mark = markOf(p.symbol);
    if (mark !== null) unrealized += (mark - p.avg_price) * p.quantity;
  }
  const initial = state.pnl ? state.pnl.initial_equity : null;
  const equity = initial === null ? null : initial + realized + unrealized;
  setText("equity", equity === null ? "–" : number(equity, 2));
  setText("realized", signed(realized, 4), realized >= 0 ? "up" : "down");
  setText("unrealized", signed(unrealized, 4), unrealized >= 0 ? "up" : "down");
  drawEquity(ui.equityCurve, state.equity);
}

function renderSystem() {
  const since = state.lastFrameAt ? ((Date.now() - state.lastFrameAt) / 1000).toFixed(1) : "–";
  const reconnects = state.reconnects ? `, resumed ${state.reconnects}×` : "";
  setText("link-detail", `${ui.link.textContent}, frame ${since} s ago${reconnects}`);
  const rates = state.rates;
  setText("rate-candles", rates.candles === undefined ? "–" : number(rates.candles, 1));
  setText(
    "rate-trading",
    rates.signals === undefined ? "–" : `${number(rates.signals, 2)} · ${number(rates.orders, 2)}`,
  );
  const checks = state.ready && Array.isArray(state.ready.checks) ? state.ready.checks : [];
  const lag = checks.find((c) => c.name === "stream_lag");
  const lagBox = $("stream-lag");
  const worst = lag ? /largest lag (\d+)/.exec(lag.detail) : null;
  lagBox.textContent = !lag ? "–" : worst ? `${worst[1]} entries (worst group)` : lag.detail;
  lagBox.title = lag ? lag.detail : "";
  lagBox.className = lag && !lag.ok ? "down" : "";
  const services = $("services");
  services.textContent =
    checks
      .filter((c) => c.name !== "stream_lag")
      .map((c) => `${c.name} ${c.ok ? "✓" : "✗"}`)
      .join("   ") || "–";
  services.className = checks.some((c) => !c.ok) ? "down" : checks.length ? "up" : "";
}

function render() {
  scheduled = false;
  const dirty = state.dirty;
  state.dirty = new Set();
  if (dirty.has("chart")) renderChart();
  renderTables(dirty);
  if (dirty.has("positions")) renderPositions();
  if (dirty.has("pnl") || dirty.has("positions")) renderPnl();
  if (dirty.has("controls")) renderControls();
  if (dirty.has("system")) renderSystem();
}

// --- interaction -------------------------------------------------------------------------------

function hoverAt(event) {
  const box = ui.price.getBoundingClientRect();
  const plotWidth = box.width - AXIS_WIDTH;
  const x = event.clientX - box.left;
  const count = visibleCandles().length;
  const fromRight = Math.floor((plotWidth - x) / state.spacing);
  state.hover = x > plotWidth || fromRight < 0 || fromRight >= count ? null : count - 1 - fromRight;
  invalidate("chart");
}

for (const canvas of [ui.price, ui.stoch]) {
  canvas.addEventListener("mousemove", hoverAt);
  canvas.addEventListener("mouseleave", () => {
    state.hover = null;
    invalidate("chart");
  });
  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const factor = event.deltaY < 0 ? 1.15 : 1 / 1.15;
      state.spacing = Math.min(24, Math.max(3, state.spacing * factor));
      invalidate("chart");
    },
    { passive: false },
  );
}
ui.symbol.addEventListener("change", () =>
  changeMarket().catch((error) => toast(error.message, true)),
);
ui.timeframe.addEventListener("change", () =>
  changeMarket().catch((error) => toast(error.message, true)),
);
window.addEventListener("resize", () => invalidate("chart", "pnl"));

// --- start -------------------------------------------------------------------------------------

let started = false;
async function start() {
  try {
    await loadMarkets();
    await Promise.all([loadMarket(), loadTrading(), poll()]);
  } catch (error) {
    if (error.status !== 401) toast(`loading: ${error.message}`, true);
    return;
  }
  if (!started) {
    started = true;
    setInterval(() => poll().catch(() => {}), POLL_MS);
    setInterval(watchdog, 1000);
  }
  if (!state.socket) connect();
  document.body.dataset.loaded = "true";
}

state.token = readLocation();
if (state.token) start();
else askToken("The gateway needs an API token (read, or admin to use the kill switch).");
