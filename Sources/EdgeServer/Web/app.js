// Tickwire live dashboard. Renders the TickwireClient store; all data comes from /ws and
// /api/snapshot through tickwire.js. No framework: each panel re-renders when its slice of the
// immutable state changes (reference equality), at most once per animation frame.
//
// One file on purpose (about 700 lines): the dashboard is served as one script with no build
// step; one section per panel.
import { TickwireClient } from "./tickwire.js";

const KNOWN_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];
const SPARK_POINTS = 90;
const BANNER_MS = 6000;
const TOAST_MS = 8000;
const SIGNAL_TOAST_MS = 10000; // longer than a trade banner: it is there to be clicked
const MAX_BANNERS = 3; // per kind (trade banners, signal toasts), so trades never push a signal out
// What the tiles and the chart can draw: the server conflates prices and candles to this many
// updates per second per symbol (PROTOCOL.md `max_frequency`); trades, positions and signals
// are never throttled.
const DRAW_FREQUENCY = 10;
// The trade cue: a short sine blip, higher for a buy than for a sell.
const CUE_HZ = { BUY: 880, SELL: 660 };
const CUE_SECONDS = 0.14;
const CUE_GAIN = 0.08;
const CUE_MIN_GAP_MS = 120; // a replayed burst of trades sounds as one cue, not a buzz

// A server with --auth takes a JWT: the page is opened as /?token=<JWT> (by the app that
// signs traders in). The token is kept in memory only and taken out of the address bar, so
// it ends up in no bookmark, screenshot or history entry.
const pageParams = new URLSearchParams(location.search);
const pageToken = pageParams.get("token");
if (pageToken) {
  pageParams.delete("token");
  const rest = pageParams.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}
// Not connected by the constructor: the subscription below must be set before the first
// socket's URL is built, or the first connection would run at the full rate.
const client = new TickwireClient({ getToken: pageToken ? () => pageToken : null, autoConnect: false });
window.tickwire = client; // for tests and the console
// A client without the option ignores the third argument: the dashboard then gets the full
// rate and still works.
client.subscribe(null, null, { maxFrequency: DRAW_FREQUENCY });
client.connect();

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "title" || k === "type") node.setAttribute(k, String(v));
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// --- formatting --------------------------------------------------------------------------

const numberFormats = new Map();
function fmtNumber(v, min, max) {
  const key = `${min}:${max}`;
  if (!numberFormats.has(key)) numberFormats.set(key, new Intl.NumberFormat("en-US", { minimumFractionDigits: min, maximumFractionDigits: max }));
  return numberFormats.get(key).format(v);
}
function priceDigits(p) {
  const a = Math.abs(p);
  return a >= 1 ? 2 : a >= 0.01 ? 4 : 6;
}
/** A price for tables and tiles: fixed decimals for the magnitude. */
function fmtPrice(p) {
  if (typeof p !== "number" || !isFinite(p)) return "–";
  const d = priceDigits(p);
  return fmtNumber(p, d, d);
}
/** Dollars for sentences: "$50,000", "$3,012.45"; with sign: "+$250", "-$12.50". */
function fmtUsd(v, signed = false) {
  if (typeof v !== "number" || !isFinite(v)) return "–";
  const a = Math.abs(v);
  const whole = Math.abs(a - Math.round(a)) < 0.005;
  const s = whole ? fmtNumber(Math.round(a), 0, 0) : fmtNumber(a, 2, Math.max(2, priceDigits(a)));
  const sign = v < 0 ? "-" : signed ? "+" : "";
  return `${sign}$${s}`;
}
function fmtSignedUsd2(v) {
  if (typeof v !== "number" || !isFinite(v)) return "–";
  return `${v < 0 ? "-" : "+"}$${fmtNumber(Math.abs(v), 2, 2)}`;
}
function fmtQty(q) {
  return typeof q === "number" ? fmtNumber(q, 0, 6) : "–";
}
function fmtPct(v) {
  return typeof v === "number" ? `${v >= 0 ? "+" : ""}${fmtNumber(v, 2, 2)}%` : "–";
}
function fmtTime(ms) {
  if (typeof ms !== "number") return "–";
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}
function fmtUptime(s) {
  if (typeof s !== "number") return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}
function fmtAgo(ms) {
  if (typeof ms !== "number") return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}
const signClass = (v) => (typeof v !== "number" || v === 0 ? "" : v > 0 ? "up" : "down");

/** Live unrealized PnL of a position at the latest mark price, when the position says enough. */
function livePnl(p, mark) {
  if (typeof mark === "number" && typeof p.quantity === "number" && typeof p.entry_price === "number") {
    return (mark - p.entry_price) * p.quantity * (p.side === "SHORT" ? -1 : 1);
  }
  return p.unrealized_pnl;
}

// --- local view state ----------------------------------------------------------------------

const sparkHistory = new Map(); // symbol -> number[] of recent prices
const saved = (() => { try { return localStorage.getItem("tickwire.symbol"); } catch { return null; } })();
let selected = saved || KNOWN_SYMBOLS[0];
let prev = null;

client.on("MarketData", (md) => pushSpark(md.symbol, md.price));
let sparkEpoch = null;
client.on("snapshot", (snap) => {
  // A new server epoch (restart) starts the sparklines afresh rather than joining two runs.
  if (snap.epoch !== sparkEpoch) sparkHistory.clear();
  sparkEpoch = snap.epoch;
  for (const [sym, md] of Object.entries(client.getState().prices)) if (!sparkHistory.has(sym)) pushSpark(sym, md.price);
});

function pushSpark(symbol, price) {
  if (typeof price !== "number") return;
  let h = sparkHistory.get(symbol);
  if (!h) sparkHistory.set(symbol, (h = []));
  h.push(price);
  if (h.length > SPARK_POINTS) h.splice(0, h.length - SPARK_POINTS);
}

// --- connection --------------------------------------------------------------------------

const connLabels = { connected: "Connected", connecting: "Connecting…", reconnecting: "Reconnecting…", disconnected: "Disconnected" };

function renderConnection(s) {
  const dot = $("#conn-dot");
  dot.dataset.state = s.connectionState;
  let label = connLabels[s.connectionState];
  if (s.connectionState === "reconnecting" || (s.connectionState === "connecting" && s.reconnectAttempt > 0)) {
    label = `Reconnecting… (attempt ${s.reconnectAttempt})`;
  } else if (s.connectionState === "connected" && !s.synced) {
    label = "Syncing…";
  } else if (s.connectionState === "disconnected" && s.error) {
    label = "Connection failed";
  }
  $("#conn-label").textContent = label;
  $("#retry").hidden = s.connectionState !== "disconnected";
  $("#conn-seq").textContent = s.epoch ? `${s.epoch.slice(0, 8)} · #${s.seq ?? "–"}` : "";
}

$("#retry").addEventListener("click", () => client.retry());

// --- price tiles -----------------------------------------------------------------------------

function orderedSymbols(prices) {
  const extra = Object.keys(prices).filter((s) => !KNOWN_SYMBOLS.includes(s)).sort();
  return [...KNOWN_SYMBOLS.filter((s) => prices[s]), ...extra];
}

function tileFor(symbol) {
  let tile = document.querySelector(`.price-tile[data-symbol="${CSS.escape(symbol)}"]`);
  if (tile) return tile;
  tile = el("button", { class: "price-tile", type: "button", "data-symbol": symbol, "aria-selected": String(symbol === selected) },
    el("span", { class: "symbol", text: symbol.replace(/USDT$/, " / USDT") }),
    el("span", { class: "price", text: "–" }),
    el("span", { class: "change", text: "" }));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 96 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.innerHTML = '<defs><linearGradient x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-opacity="0.28"/><stop offset="1" stop-opacity="0"/></linearGradient></defs><polygon class="area"/><polyline/>';
  const gradId = `spark-${symbol}`;
  svg.querySelector("linearGradient").id = gradId;
  svg.querySelector(".area").setAttribute("fill", `url(#${gradId})`);
  tile.append(svg);
  tile.addEventListener("click", () => select(symbol));
  $("#tiles").append(tile);
  return tile;
}

function renderSpark(tile, symbol, up) {
  const h = sparkHistory.get(symbol) || [];
  const svg = tile.querySelector(".spark");
  const color = up ? "var(--up)" : "var(--down)";
  const line = svg.querySelector("polyline");
  const area = svg.querySelector(".area");
  svg.querySelectorAll("stop").forEach((s) => s.setAttribute("stop-color", up ? "#22c55e" : "#f0515b"));
  line.setAttribute("stroke", color);
  if (h.length < 2) { line.setAttribute("points", ""); area.setAttribute("points", ""); return; }
  let lo = Infinity, hi = -Infinity;
  for (const v of h) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const span = hi - lo || Math.abs(hi) * 1e-4 || 1;
  const step = 96 / (SPARK_POINTS - 1);
  const x0 = 96 - (h.length - 1) * step;
  const pts = h.map((v, i) => `${(x0 + i * step).toFixed(1)},${(37 - ((v - lo) / span) * 34).toFixed(1)}`);
  line.setAttribute("points", pts.join(" "));
  area.setAttribute("points", `${x0.toFixed(1)},40 ${pts.join(" ")} 96,40`);
}

function renderTiles(s) {
  for (const symbol of orderedSymbols(s.prices)) {
    const md = s.prices[symbol];
    const tile = tileFor(symbol);
    const priceEl = tile.querySelector(".price");
    const text = fmtPrice(md.price);
    const old = prev && prev.prices[symbol];
    if (priceEl.textContent !== text) {
      priceEl.textContent = text;
      if (old && old.price !== md.price) {
        priceEl.classList.remove("tick-up", "tick-down");
        void priceEl.offsetWidth; // restart the colour fade
        priceEl.classList.add(md.price > old.price ? "tick-up" : "tick-down");
        setTimeout(() => priceEl.classList.remove("tick-up", "tick-down"), 350);
      }
    }
    const change = tile.querySelector(".change");
    change.textContent = `${fmtPct(md.price_change_percent_24h)}  ${md.price_change_24h >= 0 ? "+" : ""}${fmtPrice(md.price_change_24h)}`;
    change.className = `change ${signClass(md.price_change_percent_24h)}`;
    renderSpark(tile, symbol, (md.price_change_percent_24h ?? 0) >= 0);
  }
}

function select(symbol) {
  selected = symbol;
  try { localStorage.setItem("tickwire.symbol", symbol); } catch { /* storage unavailable: not remembered */ }
  document.querySelectorAll(".price-tile").forEach((t) => t.setAttribute("aria-selected", String(t.dataset.symbol === symbol)));
  renderChart(client.getState());
}

// --- candle chart (canvas) ------------------------------------------------------------------

const canvas = $("#chart");
const ctx = canvas.getContext("2d");

function renderChart(s) {
  const candles = s.candles[selected] || [];
  const md = s.prices[selected];
  $("#chart-title").replaceChildren(document.createTextNode(selected), el("span", { class: "tf", text: `· ${client.options.candleTimeframe} candles` }));
  const last = candles[candles.length - 1];
  $("#chart-ohlc").replaceChildren(...(last ? [
    ["O", last.open], ["H", last.high], ["L", last.low], ["C", last.close],
  ].map(([k, v]) => el("span", {}, `${k} `, el("b", { text: fmtPrice(v) }))) : []));

  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const colUp = css.getPropertyValue("--up").trim(), colDown = css.getPropertyValue("--down").trim();
  const padL = 8, padR = 72, padT = 10, padB = 24;
  const plotW = w - padL - padR, plotH = h - padT - padB;

  ctx.font = "11px ui-monospace, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
  ctx.textBaseline = "middle";
  if (!candles.length) {
    ctx.fillStyle = "#4b5668";
    ctx.textAlign = "center";
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText("Waiting for candles…", w / 2, h / 2);
    return;
  }
  // Candle slots widen (up to 18 px) when there are few candles, and never go below 7 px.
  const visible = candles.slice(-Math.max(1, Math.floor(plotW / 7)));
  const slot = Math.max(7, Math.min(18, plotW / Math.max(visible.length, 1)));
  let lo = Infinity, hi = -Infinity;
  for (const c of visible) { lo = Math.min(lo, c.low); hi = Math.max(hi, c.high); }
  if (md) { lo = Math.min(lo, md.price); hi = Math.max(hi, md.price); }
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.001 || 1;
  lo -= pad; hi += pad;
  const y = (v) => padT + (1 - (v - lo) / (hi - lo)) * plotH;

  // Grid and price axis: round steps.
  const rawStep = (hi - lo) / 5;
  const mag = Math.pow(10, Math.floor(Math.log10(rawStep)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s2) => s2 >= rawStep) || rawStep;
  ctx.strokeStyle = "rgba(31, 42, 59, 0.9)";
  ctx.lineWidth = 1;
  ctx.fillStyle = "#8390a5";
  ctx.textAlign = "left";
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(padL, yy); ctx.lineTo(padL + plotW, yy); ctx.stroke();
    ctx.fillText(fmtPrice(v), padL + plotW + 8, yy);
  }

  // Candles, right-aligned.
  const x0 = padL + plotW - visible.length * slot;
  const body = Math.max(3, Math.round(slot * 0.62));
  ctx.textAlign = "center";
  visible.forEach((c, i) => {
    const cx = Math.round(x0 + i * slot + slot / 2) + 0.5;
    const up = c.close >= c.open;
    const color = up ? colUp : colDown;
    ctx.globalAlpha = c.is_closed ? 1 : 0.6;
    ctx.strokeStyle = color;
    ctx.beginPath(); ctx.moveTo(cx, y(c.high)); ctx.lineTo(cx, y(c.low)); ctx.stroke();
    const top = y(Math.max(c.open, c.close)), bot = y(Math.min(c.open, c.close));
    ctx.fillStyle = color;
    ctx.fillRect(Math.round(cx - body / 2), Math.round(top), body, Math.max(1, Math.round(bot - top)));
    ctx.globalAlpha = 1;
    const t = new Date(c.timestamp);
    if (t.getMinutes() % 10 === 0 && t.getSeconds() === 0 && i > 1 && i < visible.length - 1) {
      ctx.fillStyle = "#4b5668";
      ctx.fillText(t.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" }), cx, h - padB / 2);
    }
  });

  // Last price line and label.
  if (md) {
    const yy = Math.round(y(md.price)) + 0.5;
    const up = (md.price_change_percent_24h ?? 0) >= 0;
    ctx.setLineDash([4, 4]);
    ctx.strokeStyle = up ? colUp : colDown;
    ctx.beginPath(); ctx.moveTo(padL, yy); ctx.lineTo(padL + plotW, yy); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = up ? colUp : colDown;
    ctx.fillRect(padL + plotW + 2, yy - 9, padR - 4, 18);
    ctx.fillStyle = "#06130b";
    ctx.textAlign = "left";
    ctx.fillText(fmtPrice(md.price), padL + plotW + 7, yy);
  }
}

new ResizeObserver(() => renderChart(client.getState())).observe(canvas);

// --- positions -------------------------------------------------------------------------------

function renderPositions(s) {
  const rows = s.positions.map((p) => {
    const mark = s.prices[p.symbol] ? s.prices[p.symbol].price : p.current_price;
    const pnl = livePnl(p, mark);
    return el("tr", { "data-symbol": p.symbol },
      el("td", { class: "sym", text: p.symbol }),
      el("td", {}, el("span", { class: `badge ${p.side === "SHORT" ? "short" : "long"}`, text: p.side })),
      el("td", { class: "num", text: fmtQty(p.quantity) }),
      el("td", { class: "num", text: fmtPrice(p.entry_price) }),
      el("td", { class: "num", text: fmtPrice(mark) }),
      el("td", { class: `num ${signClass(pnl)}`, "data-field": "pnl", text: fmtSignedUsd2(pnl) }));
  });
  $("#positions tbody").replaceChildren(...rows);
  $("#positions-count").textContent = rows.length ? String(rows.length) : "";
  $('[data-empty-for="positions"]').hidden = rows.length > 0;
}

// --- trades ----------------------------------------------------------------------------------

const tradeKey = (t) => `${t.epoch}:${t.seq ?? `${t.symbol}/${t.timestamp}/${t.price}`}`;

function renderTrades(s) {
  const before = new Set(prev ? prev.recentTrades.map(tradeKey) : []);
  const rows = s.recentTrades.map((t) => el("tr", { "data-seq": t.seq ?? "", "data-epoch": t.epoch ?? "", class: prev && !before.has(tradeKey(t)) ? "fresh" : "" },
    el("td", { class: "time", text: fmtTime(t.timestamp) }),
    el("td", { class: "sym", text: t.symbol }),
    el("td", {}, el("span", { class: `badge ${t.side === "SELL" ? "sell" : "buy"}`, text: t.side })),
    el("td", { class: "num", text: fmtQty(t.quantity) }),
    el("td", { class: "num", text: fmtPrice(t.price) }),
    el("td", { class: `num ${signClass(t.pnl)}`, text: typeof t.pnl === "number" ? fmtSignedUsd2(t.pnl) : "" })));
  $("#trades tbody").replaceChildren(...rows);
  $("#trades-count").textContent = rows.length ? String(rows.length) : "";
  $('[data-empty-for="trades"]').hidden = rows.length > 0;
}

// --- AI signals --------------------------------------------------------------------------------

function bar(fraction) {
  const fill = el("i");
  fill.style.width = `${Math.round(Math.max(0, Math.min(1, Number(fraction) || 0)) * 100)}%`;
  return el("span", { class: "bar" }, fill);
}

const MISSING = "not given";
const given = (v) => v !== null && v !== undefined && v !== "";

/** "RSI", "MACD", "Bollinger": a strategy name as a trader reads it. */
function strategyLabel(name) {
  return /^(rsi|macd|ema|sma|atr|adx|obv|vwap)$/i.test(name) ? name.toUpperCase() : name.charAt(0).toUpperCase() + name.slice(1);
}
function scoreRows(scores) {
  return Object.entries(scores && typeof scores === "object" ? scores : {}).map(([name, v]) => el("div", { class: "score", "data-strategy": name },
    el("span", { class: "k", text: strategyLabel(name) }),
    bar(v),
    el("span", { class: "v", text: typeof v === "number" ? v.toFixed(2) : String(v) })));
}
const signalDirection = (g) => (given(g.signal) ? String(g.signal).toUpperCase() : null);
const confidencePct = (g) => (typeof g.confidence === "number" && isFinite(g.confidence) ? `${Math.round(g.confidence * 100)}%` : null);

let listedSignals = [];
function renderSignals(s) {
  listedSignals = s.aiSignals;
  const items = s.aiSignals.map((g, i) => {
    const pct = confidencePct(g);
    return el("li", { class: "signal", "data-index": i, "data-seq": g.seq ?? "", "data-signal": g.signal, title: "Show details" },
      el("div", { class: "row" },
        el("span", { class: "sym", text: g.symbol ?? MISSING }),
        el("span", { class: "badge", "data-signal": g.signal, text: signalDirection(g) ?? "–" }),
        el("span", { class: "conf", title: "confidence" }, bar(g.confidence), pct ?? "–")),
      el("div", { class: "meta", text: [g.model_type, g.timeframe].map((v) => (given(v) ? v : "–")).concat(fmtAgo(g.timestamp)).filter(Boolean).join(" · ") }),
      el("p", { class: "reason", text: g.reasoning || "" }),
      el("div", { class: "scores" }, ...scoreRows(g.strategy_scores)));
  });
  $("#signals").replaceChildren(...items);
  $("#signals-count").textContent = items.length ? String(items.length) : "";
  $('[data-empty-for="signals"]').hidden = items.length > 0;
}

$("#signals").addEventListener("click", (ev) => {
  const li = ev.target.closest("li.signal");
  const g = li && listedSignals[Number(li.dataset.index)];
  if (g) openSignalDetails(g);
});

// --- bot status --------------------------------------------------------------------------------

function renderBot(s) {
  const b = s.botStatus;
  const panel = $("#bot-status");
  const pill = panel.querySelector(".pill");
  pill.dataset.status = b ? String(b.status).toLowerCase() : "unknown";
  pill.textContent = b ? b.status : "no status yet";
  const set = (f, text, cls = "") => {
    const dd = panel.querySelector(`[data-field="${f}"]`);
    dd.textContent = text;
    dd.className = cls;
  };
  set("total_pnl", b ? fmtSignedUsd2(b.total_pnl) : "–", b ? signClass(b.total_pnl) : "");
  set("total_trades", b ? String(b.total_trades) : "–");
  set("active_positions", b ? String(b.active_positions) : "–");
  set("uptime", b ? fmtUptime(b.uptime) : "–");
  $("#bot-summary").replaceChildren(...(b ? [
    el("span", {}, "Bot ", el("b", { text: b.status })),
    el("span", {}, "PnL ", el("b", { class: signClass(b.total_pnl), text: fmtSignedUsd2(b.total_pnl) })),
    el("span", {}, "Trades ", el("b", { text: String(b.total_trades) })),
  ] : []));
}

// --- notifications and toasts ---------------------------------------------------------------------

function dismiss(node) {
  if (!node.isConnected || node.classList.contains("leaving")) return;
  node.classList.add("leaving");
  setTimeout(() => node.remove(), 300);
}

/** Shows `node` on top of the notification stack, keeping at most MAX_BANNERS of its kind;
 *  it leaves after `ms`, but not while the pointer rests on it. */
function pushNotification(node, kind, ms) {
  const box = $("#notifications");
  node.dataset.kind = kind;
  box.prepend(node);
  const same = box.querySelectorAll(`:scope > [data-kind="${kind}"]:not(.leaving)`);
  for (let i = MAX_BANNERS; i < same.length; i++) same[i].remove();
  let timer = setTimeout(() => dismiss(node), ms);
  node.addEventListener("mouseenter", () => clearTimeout(timer));
  node.addEventListener("mouseleave", () => { clearTimeout(timer); timer = setTimeout(() => dismiss(node), ms); });
}

function banner(text, cls) {
  pushNotification(el("div", { class: `banner ${cls}`, text }), "trade", BANNER_MS);
}

// --- alert settings: notifications on/off, trade sound on/off (remembered) -------------------

function loadSetting(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === "on" ? true : v === "off" ? false : fallback;
  } catch { return fallback; }
}
function saveSetting(key, on) {
  try { localStorage.setItem(key, on ? "on" : "off"); } catch { /* storage unavailable: not remembered */ }
}

const settings = {
  notifications: loadSetting("tickwire.notifications", true),
  sound: loadSetting("tickwire.sound", false), // off by default (UC-WEBSOCKET-002: "if enabled")
};

/** State for tests and the console: what the page decided, counted where it happened. */
const dashboard = {
  /** Trade cues whose oscillator was started. */
  soundsPlayed: 0,
  /** Trade cues not started because the browser has not let the page play audio yet. */
  soundsBlocked: 0,
  /** Trade cues folded into the one just started (less than CUE_MIN_GAP_MS after it). */
  soundsMerged: 0,
  /** Milliseconds since the last cue started: a trade after CUE_MIN_GAP_MS gets a cue of its own. */
  get soundQuietMs() { return performance.now() - lastCueAt; },
  get notifications() { return settings.notifications; },
  get sound() { return settings.sound; },
  get audioState() { return audio ? audio.state : "none"; },
};
window.tickwireDashboard = dashboard;

function renderToggles() {
  const set = (btn, on, disabled = false) => {
    btn.setAttribute("aria-pressed", String(on));
    btn.disabled = disabled;
    btn.querySelector(".state").textContent = on ? "on" : "off";
  };
  set($("#notify-toggle"), settings.notifications);
  // Notifications off silences the sound too; its own setting is kept for when they come back.
  set($("#sound-toggle"), settings.sound, !settings.notifications);
}

$("#notify-toggle").addEventListener("click", () => {
  settings.notifications = !settings.notifications;
  saveSetting("tickwire.notifications", settings.notifications);
  if (!settings.notifications) $("#notifications").querySelectorAll(".banner").forEach(dismiss);
  else if (settings.sound) unlockAudio();
  renderToggles();
});
$("#sound-toggle").addEventListener("click", () => {
  settings.sound = !settings.sound;
  saveSetting("tickwire.sound", settings.sound);
  if (settings.sound) unlockAudio(); // this click is the gesture the browser wants
  renderToggles();
});
renderToggles();

// --- trade sound (WebAudio, no asset) -----------------------------------------------------------

let audio = null;
let lastCueAt = -Infinity;

function unlockAudio() {
  if (!audio) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    audio = new Ctx();
  }
  // Browsers start a context "suspended" until the page has had a click or a key press.
  if (audio.state === "suspended") audio.resume().catch(() => { /* still blocked: retried on the next gesture */ });
  return audio;
}
// A remembered "sound on" needs a gesture after a reload before the browser lets it play.
for (const type of ["pointerdown", "keydown"]) {
  document.addEventListener(type, () => { if (settings.sound && settings.notifications) unlockAudio(); }, { capture: true });
}

function playTradeCue(side) {
  const ctx = unlockAudio();
  if (!ctx || ctx.state !== "running") {
    dashboard.soundsBlocked += 1;
    $("#sound-toggle").dataset.audio = "blocked";
    return;
  }
  $("#sound-toggle").dataset.audio = "ok";
  const nowMs = performance.now();
  if (nowMs - lastCueAt < CUE_MIN_GAP_MS) { dashboard.soundsMerged += 1; return; }
  lastCueAt = nowMs;
  const t0 = ctx.currentTime;
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.type = "sine";
  osc.frequency.setValueAtTime(CUE_HZ[side] || CUE_HZ.BUY, t0);
  // A fast attack and an exponential decay: no click at either end.
  gain.gain.setValueAtTime(0.0001, t0);
  gain.gain.exponentialRampToValueAtTime(CUE_GAIN, t0 + 0.01);
  gain.gain.exponentialRampToValueAtTime(0.0001, t0 + CUE_SECONDS);
  osc.connect(gain).connect(ctx.destination);
  osc.onended = () => { osc.disconnect(); gain.disconnect(); };
  osc.start(t0);
  osc.stop(t0 + CUE_SECONDS + 0.02);
  dashboard.soundsPlayed += 1;
}

/** "Trade Executed: SELL 0.5 BTCUSDT @ $50,000 | PnL: +$250" (UC-WEBSOCKET-002). */
export function tradeBannerText(t) {
  const pnl = typeof t.pnl === "number" ? ` | PnL: ${fmtUsd(t.pnl, true)}` : "";
  return `Trade Executed: ${t.side} ${fmtQty(t.quantity)} ${t.symbol} @ ${fmtUsd(t.price)}${pnl}`;
}

client.on("TradeExecuted", (t) => {
  if (!settings.notifications) return; // the trades table still shows it
  banner(tradeBannerText(t), typeof t.pnl !== "number" ? "" : t.pnl >= 0 ? "profit" : "loss");
  if (settings.sound) playTradeCue(t.side);
});

/** "New AI Signal: ETHUSDT LONG (85% confidence)" (UC-WEBSOCKET-003). */
export function signalToastText(g) {
  const pct = confidencePct(g);
  return `New AI Signal: ${given(g.symbol) ? g.symbol : "unknown symbol"} ${signalDirection(g) ?? "no direction"} (${pct ? `${pct} confidence` : "confidence not given"})`;
}

function signalToast(g) {
  const open = el("button", { class: "open", type: "button", title: "Show details", text: signalToastText(g) });
  const close = el("button", { class: "close", type: "button", title: "Dismiss", text: "×" });
  const node = el("div", { class: "banner signal", "data-seq": g.seq ?? "", "data-signal": g.signal }, open, close);
  open.addEventListener("click", () => { openSignalDetails(g); dismiss(node); });
  close.addEventListener("click", () => dismiss(node));
  pushNotification(node, "signal", SIGNAL_TOAST_MS);
}

client.on("AISignalReceived", (g, m) => {
  // Notifications off: listed in the signals panel (the store has it), not alerted.
  if (settings.notifications) signalToast({ ...g, seq: m && typeof m.seq === "number" ? m.seq : null });
});

// --- signal details -------------------------------------------------------------------------------

const details = $("#signal-details");

function openSignalDetails(g) {
  const field = (name, value) => {
    const dd = details.querySelector(`[data-field="${name}"]`);
    const ok = value !== null && value !== undefined && value !== "" && !(Array.isArray(value) && !value.length);
    dd.classList.toggle("missing", !ok);
    dd.replaceChildren(...(ok ? (Array.isArray(value) ? value : [String(value)]) : [MISSING]));
  };
  details.dataset.seq = g.seq ?? "";
  details.dataset.signal = g.signal ?? "";
  $("#signal-details-title").textContent = `AI signal · ${given(g.symbol) ? g.symbol : "unknown symbol"}`;
  field("symbol", given(g.symbol) ? g.symbol : null);
  field("signal", signalDirection(g));
  field("confidence", confidencePct(g));
  field("model_type", given(g.model_type) ? g.model_type : null);
  field("timeframe", given(g.timeframe) ? g.timeframe : null);
  field("timestamp", typeof g.timestamp === "number" ? fmtTime(g.timestamp) : null);
  field("reasoning", given(g.reasoning) ? g.reasoning : null);
  field("strategy_scores", scoreRows(g.strategy_scores));
  if (!details.open) details.showModal();
}

details.querySelector("[data-close]").addEventListener("click", () => details.close());
// A click on the backdrop (outside the dialog's box) closes it.
details.addEventListener("click", (ev) => {
  const r = details.getBoundingClientRect();
  if (ev.target === details && (ev.clientX < r.left || ev.clientX > r.right || ev.clientY < r.top || ev.clientY > r.bottom)) details.close();
});

function toast(message, { code = null, kind = "error", sticky = false } = {}) {
  const box = $("#toasts");
  const close = el("button", { class: "close", type: "button", title: "Dismiss", text: "×" });
  const node = el("div", { class: "toast", "data-kind": kind, role: "alert" },
    el("div", { class: "body" }, message, code ? el("span", { class: "code", text: code }) : null), close);
  close.addEventListener("click", () => dismiss(node));
  box.append(node);
  while (box.children.length > 5) box.firstElementChild.remove();
  if (!sticky) setTimeout(() => dismiss(node), TOAST_MS);
}

client.on("error", (e) => {
  if (e.source === "server") toast(e.message, { code: e.code });
  else toast(e.message, { code: e.code, kind: "connection", sticky: e.code === "GAVE_UP" });
});

// --- render loop ---------------------------------------------------------------------------------

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  // Animation frames pause in background tabs; a timer keeps the DOM current there too.
  if (document.visibilityState === "visible") requestAnimationFrame(render);
  else setTimeout(render, 250);
}

function render() {
  scheduled = false;
  const s = client.getState();
  const p = prev || {};
  if (s.connectionState !== p.connectionState || s.reconnectAttempt !== p.reconnectAttempt || s.synced !== p.synced || s.epoch !== p.epoch || s.seq !== p.seq || s.error !== p.error) {
    renderConnection(s);
    if (s.connectionState === "connected" && p.connectionState !== "connected") {
      document.querySelectorAll('#toasts .toast[data-kind="connection"]').forEach(dismiss);
    }
  }
  if (s.prices !== p.prices) renderTiles(s);
  if (s.candles !== p.candles || s.prices[selected] !== (p.prices && p.prices[selected])) renderChart(s);
  if (s.positions !== p.positions || s.prices !== p.prices) renderPositions(s);
  if (s.recentTrades !== p.recentTrades) renderTrades(s);
  if (s.aiSignals !== p.aiSignals) renderSignals(s);
  if (s.botStatus !== p.botStatus) renderBot(s);
  prev = s;
}

client.store.subscribe(schedule);
setInterval(() => { if (prev) renderSignals(prev); }, 15000); // refresh "…s ago"
render();
