// Tickwire browser client: connection state machine, heartbeat, lossless resume and a
// store shaped like the FR-WEBSOCKET "Frontend Hook API" state. ES module, no dependencies.
//
//   import { TickwireClient } from "/tickwire.js";
//   const client = new TickwireClient();                 // connects to ws(s)://<page host>/ws
//   client.on("TradeExecuted", (trade, msg) => ...);     // typed events, see tickwire.d.ts
//   client.store.subscribe(() => render(client.store.getState()));
//   // React: const state = useSyncExternalStore(client.store.subscribe, client.store.getState);
//
// Protocol: PROTOCOL.md. Every server message carries a `seq`; the client applies each
// broadcast message at most once (seq <= last applied seq in the same epoch is dropped) and
// resumes with `/ws?epoch=E&since=S` after any drop. When the server cannot replay
// (`recovered: false`, a new epoch, or the first connect) it reloads `GET /api/snapshot` and
// replaces its state, buffering the live stream meanwhile so nothing falls in between.
//
// One file on purpose (about 950 lines): it is the whole client a page or an app imports, with
// no bundler and no second request; its sections are marked with `// ----` rules.

/** The connection states of FR-WEBSOCKET-003's state machine. */
export const CONNECTION_STATES = Object.freeze(["disconnected", "connecting", "connected", "reconnecting"]);

/** Broadcast message types: they take a fresh seq and are deduplicated. */
export const BROADCAST_TYPES = Object.freeze([
  "MarketData", "ChartUpdate", "PositionUpdate", "TradeExecuted", "AISignalReceived", "BotStatusUpdate", "Error",
]);

/** Per-connection message types: they repeat the seq of the last broadcast before them. */
export const CONNECTION_TYPES = Object.freeze(["Connected", "Pong", "SubscriptionConfirmed", "RefreshToken", "TokenRefreshed"]);

/** Channel aliases accepted by the server, mapped to canonical type names. */
export const CHANNEL_ALIASES = Object.freeze({
  prices: "MarketData", charts: "ChartUpdate", positions: "PositionUpdate", trades: "TradeExecuted",
  signals: "AISignalReceived", status: "BotStatusUpdate", errors: "Error",
});

/** A `max_frequency` to send: a positive whole number, else null (every update). */
function validFrequency(n) {
  return Number.isInteger(n) && n > 0 ? n : null;
}

const KNOWN_TYPES = new Set([...BROADCAST_TYPES, ...CONNECTION_TYPES]);
const CHANNEL_NAMES = new Set(Object.values(CHANNEL_ALIASES));

/** Defaults, each with its reason. */
export const DEFAULT_OPTIONS = Object.freeze({
  autoConnect: true,
  /** null: use the server's `heartbeat_interval_ms` from Connected, else 30000 (the spec's 30 s). */
  heartbeatIntervalMs: null,
  /** null: 2.5 x heartbeat, i.e. two missed heartbeats plus slack before the link is called dead. */
  staleAfterMs: null,
  /** A socket that has not opened by then is abandoned: browsers may wait minutes on a black hole. */
  connectTimeoutMs: 10000,
  /** Backoff: min(maxDelayMs, initialDelayMs * factor^(attempt-1)), full jitter by default so
   *  that a restarted server is not hit by every dashboard in the same millisecond.
   *  The spec's 5 s / 10 s / 20 s / 30 s schedule: { initialDelayMs: 5000, jitter: false }. */
  initialDelayMs: 1000,
  factor: 2,
  maxDelayMs: 30000,
  jitter: true,
  /** The spec's limit; Infinity never gives up. */
  maxAttempts: 10,
  /** Snapshot loads are retried this often (then the connection is dropped and resumed). */
  snapshotRetries: 3,
  /** After a URL resume the server answers SubscriptionConfirmed; if it does not within this
   *  time the client assumes `recovered: false` and loads the snapshot. */
  confirmTimeoutMs: 5000,
  /** Store caps: the spec keeps 20 recent trades; signals and candles are bounded likewise. */
  maxTrades: 20,
  maxSignals: 20,
  maxCandles: 120,
  /** The candle timeframe kept in `state.candles` (ChartUpdate of other timeframes is ignored). */
  candleTimeframe: "1m",
  /** Access tokens (PROTOCOL.md "Authentication"): a function returning a JWT, or a Promise of
   *  one, called before every connect and when the server asks for a refresh. null: none.
   *  The token travels as a Sec-WebSocket-Protocol entry, so it stays out of URLs and logs. */
  getToken: null,
  /** Initial subscription; null/[] means everything. Remembered across reconnects. */
  channels: null,
  symbols: null,
});

// ---------------------------------------------------------------------------------------
// Pure helpers (no I/O): backoff, message validation, the state reducer.

/**
 * Delay before reconnection attempt `attempt` (1-based).
 * @param {number} attempt
 * @param {{initialDelayMs:number,factor:number,maxDelayMs:number,jitter:boolean}} o
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, o, random = Math.random) {
  const exp = o.initialDelayMs * Math.pow(o.factor, Math.max(0, attempt - 1));
  const capped = Math.min(o.maxDelayMs, exp);
  return o.jitter ? Math.floor(random() * capped) : capped;
}

/**
 * Parses one text frame. Returns the message, or null (with a reason) when it must be skipped.
 * @param {unknown} raw
 * @returns {{message: any, problem: string|null}}
 */
export function parseMessage(raw) {
  if (typeof raw !== "string") return { message: null, problem: "non-text frame" };
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    return { message: null, problem: "not JSON" };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return { message: null, problem: "not a JSON object" };
  if (typeof value.type !== "string") return { message: null, problem: "no string type" };
  if (value.data !== undefined && (value.data === null || typeof value.data !== "object")) {
    return { message: null, problem: "data is not an object" };
  }
  return { message: value, problem: null };
}

/** Canonical channel name for a type name or alias, or null when unknown. */
export function canonicalChannel(name) {
  if (CHANNEL_NAMES.has(name)) return name;
  return Object.prototype.hasOwnProperty.call(CHANNEL_ALIASES, name) ? CHANNEL_ALIASES[name] : null;
}

const EMPTY_ARRAY = Object.freeze([]);
const EMPTY_OBJECT = Object.freeze({});

/** The store's initial state. */
export function initialState() {
  return Object.freeze({
    connectionState: "disconnected",
    isConnected: false,
    isConnecting: false,
    reconnectAttempt: 0,
    error: null,
    lastMessage: null,
    epoch: null,
    seq: null,
    synced: false,
    botStatus: null,
    positions: EMPTY_ARRAY,
    aiSignals: EMPTY_ARRAY,
    recentTrades: EMPTY_ARRAY,
    prices: EMPTY_OBJECT,
    candles: EMPTY_OBJECT,
    subscription: Object.freeze({ channels: EMPTY_ARRAY, symbols: EMPTY_ARRAY }),
  });
}

function timeframeMs(tf) {
  const m = /^(\d+)([smhdw])$/.exec(String(tf));
  if (!m) return null;
  return Number(m[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[2]];
}

function sortedBySymbol(map) {
  return Object.freeze(Object.keys(map).sort().map((k) => map[k]));
}

function upsertPosition(positions, p) {
  const map = {};
  for (const q of positions) map[q.symbol] = q;
  const closed = p.status === "CLOSED" || p.quantity === 0;
  if (closed) delete map[p.symbol];
  else map[p.symbol] = Object.freeze({ ...p });
  return sortedBySymbol(map);
}

function mergeCandle(list, candle, cap) {
  const c = Object.freeze({ ...candle });
  const out = list.slice();
  let i = out.length - 1;
  while (i >= 0 && out[i].timestamp > c.timestamp) i--;
  if (i >= 0 && out[i].timestamp === c.timestamp) {
    // A closed candle replaces the locally formed one; a forming one never replaces a closed one.
    if (out[i].is_closed && !c.is_closed) return list;
    out[i] = c;
  } else {
    out.splice(i + 1, 0, c);
  }
  return Object.freeze(out.length > cap ? out.slice(out.length - cap) : out);
}

/** Updates the forming (not yet closed) candle of `symbol` from a MarketData tick. */
function formCandle(list, md, frameMs, cap) {
  if (!frameMs || typeof md.price !== "number" || typeof md.timestamp !== "number") return list;
  const start = Math.floor(md.timestamp / frameMs) * frameMs;
  const last = list.length ? list[list.length - 1] : null;
  if (last && last.timestamp > start) return list;
  if (last && last.timestamp === start) {
    if (last.is_closed) return list;
    return mergeCandle(list, {
      ...last, high: Math.max(last.high, md.price), low: Math.min(last.low, md.price), close: md.price,
    }, cap);
  }
  const open = last ? last.close : md.price;
  return mergeCandle(list, {
    timestamp: start, open, high: Math.max(open, md.price), low: Math.min(open, md.price),
    close: md.price, volume: 0, is_closed: false,
  }, cap);
}

/** A trade or signal record: the message data plus the seq/epoch that identify it. */
function record(data, seq, epoch) {
  return Object.freeze({ ...data, seq: typeof seq === "number" ? seq : null, epoch: epoch ?? null });
}

/**
 * The store reducer: applies one broadcast message to the state. Pure; returns the same
 * object when nothing changed.
 * @param {any} state
 * @param {any} msg
 * @param {typeof DEFAULT_OPTIONS} o
 */
export function reduce(state, msg, o = DEFAULT_OPTIONS) {
  const d = msg.data || EMPTY_OBJECT;
  const next = { ...state, lastMessage: msg };
  if (typeof msg.seq === "number") next.seq = msg.seq;
  switch (msg.type) {
    case "MarketData":
      if (typeof d.symbol !== "string") break;
      next.prices = Object.freeze({ ...state.prices, [d.symbol]: Object.freeze({ ...d }) });
      {
        const list = state.candles[d.symbol] || EMPTY_ARRAY;
        const formed = formCandle(list, d, timeframeMs(o.candleTimeframe), o.maxCandles);
        if (formed !== list) next.candles = Object.freeze({ ...state.candles, [d.symbol]: formed });
      }
      break;
    case "ChartUpdate":
      if (typeof d.symbol !== "string" || !d.candle || d.timeframe !== o.candleTimeframe) break;
      next.candles = Object.freeze({
        ...state.candles,
        [d.symbol]: mergeCandle(state.candles[d.symbol] || EMPTY_ARRAY, d.candle, o.maxCandles),
      });
      break;
    case "PositionUpdate":
      if (typeof d.symbol !== "string") break;
      next.positions = upsertPosition(state.positions, d);
      break;
    case "TradeExecuted":
      next.recentTrades = Object.freeze([record(d, msg.seq, state.epoch), ...state.recentTrades].slice(0, o.maxTrades));
      break;
    case "AISignalReceived":
      next.aiSignals = Object.freeze([record(d, msg.seq, state.epoch), ...state.aiSignals].slice(0, o.maxSignals));
      break;
    case "BotStatusUpdate":
      next.botStatus = Object.freeze({ ...d });
      break;
    case "Error":
      next.error = typeof d.message === "string" ? d.message : (msg.message || "Server error");
      break;
    default:
      break;
  }
  return Object.freeze(next);
}

/** Normalises a snapshot list entry: a data object, a data object with `seq`, or an envelope. */
function snapshotEntry(e, epoch) {
  if (e && typeof e === "object" && e.data && typeof e.data === "object" && typeof e.type === "string") {
    return record(e.data, e.seq, epoch);
  }
  return record(e, e && e.seq, epoch);
}

/** The data of a snapshot entry: snapshot entries are the complete messages that carried
 *  the state (PROTOCOL.md), but a bare data object is accepted too. */
function dataOf(e) {
  return e && typeof e === "object" && e.data && typeof e.data === "object" && typeof e.type === "string" ? e.data : e;
}

function passes(filter, type, data) {
  if (filter.channels && !filter.channels.has(type)) return false;
  if (filter.symbols && data && typeof data.symbol === "string" && !filter.symbols.has(data.symbol)) return false;
  return true;
}

/**
 * Replaces the data part of the state with a `GET /api/snapshot` document (PROTOCOL.md),
 * keeping only what the current subscription would deliver.
 */
export function stateFromSnapshot(state, snap, o = DEFAULT_OPTIONS, subscription = { channels: null, symbols: null }) {
  const filter = {
    channels: subscription.channels && subscription.channels.length ? new Set(subscription.channels.map(canonicalChannel)) : null,
    symbols: subscription.symbols && subscription.symbols.length ? new Set(subscription.symbols) : null,
  };
  const epoch = typeof snap.epoch === "string" ? snap.epoch : null;
  const prices = {};
  for (const [sym, entry] of Object.entries(snap.market || {})) {
    const md = dataOf(entry);
    if (md && passes(filter, "MarketData", { symbol: sym })) prices[sym] = Object.freeze({ symbol: sym, ...md });
  }
  const candles = {};
  for (const [sym, frames] of Object.entries(snap.charts || {})) {
    if (!passes(filter, "ChartUpdate", { symbol: sym }) || !frames) continue;
    let entry = frames[o.candleTimeframe];
    if (!entry) continue;
    // One ChartUpdate data per timeframe (PROTOCOL.md); an array of them or a `candles`
    // array of history is accepted too.
    const items = (Array.isArray(entry) ? entry : [entry]).map(dataOf);
    let list = EMPTY_ARRAY;
    for (const it of items) {
      if (!it) continue;
      if (Array.isArray(it.candles)) for (const c of it.candles) list = mergeCandle(list, c, o.maxCandles);
      if (it.candle) list = mergeCandle(list, it.candle, o.maxCandles);
      else if (typeof it.timestamp === "number" && typeof it.open === "number") list = mergeCandle(list, it, o.maxCandles);
    }
    if (list.length) candles[sym] = list;
  }
  const positions = {};
  for (const p of (snap.positions || []).map(dataOf)) {
    if (p && typeof p.symbol === "string" && p.status !== "CLOSED" && passes(filter, "PositionUpdate", p)) positions[p.symbol] = Object.freeze({ ...p });
  }
  const trades = (snap.recent_trades || []).map((e) => snapshotEntry(e, epoch))
    .filter((t) => passes(filter, "TradeExecuted", t)).slice(0, o.maxTrades);
  const signals = (snap.ai_signals || []).map((e) => snapshotEntry(e, epoch))
    .filter((s) => passes(filter, "AISignalReceived", s)).slice(0, o.maxSignals);
  const botStatus = snap.bot_status && passes(filter, "BotStatusUpdate", null) ? Object.freeze({ ...dataOf(snap.bot_status) }) : null;
  return Object.freeze({
    ...state,
    epoch,
    seq: typeof snap.seq === "number" ? snap.seq : null,
    prices: Object.freeze(prices),
    candles: Object.freeze(candles),
    positions: sortedBySymbol(positions),
    recentTrades: Object.freeze(trades),
    aiSignals: Object.freeze(signals),
    botStatus,
  });
}

// ---------------------------------------------------------------------------------------
// The store: an immutable snapshot plus listeners, the shape useSyncExternalStore expects.

/**
 * Creates a store. `getState` returns the same object until the next change;
 * `subscribe(listener)` returns the unsubscribe function. Both are bound, so they can be
 * passed around unbound (React's useSyncExternalStore does).
 * @param {any} [state]
 */
export function createTickwireStore(state = initialState()) {
  const listeners = new Set();
  let current = state;
  return {
    getState: () => current,
    subscribe: (listener) => {
      listeners.add(listener);
      return () => { listeners.delete(listener); };
    },
    /** Replaces the state (the client calls this; applications should not need to). */
    setState: (next) => {
      if (next === current) return;
      current = next;
      for (const l of [...listeners]) {
        try { l(); } catch (e) { console.error("tickwire: store listener failed", e); }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------
// The client.

/** Resolves `url` (default "/ws") against the page, turning http(s) into ws(s). */
function socketUrl(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  if (!url && !base) throw new Error("TickwireClient: `url` is required outside a browser page");
  const u = new URL(url || "/ws", base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.toString();
}

function snapshotUrlFor(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = u.pathname.replace(/\/[^/]*$/, "/api/snapshot");
  u.search = "";
  u.hash = "";
  return u.toString();
}

const OPEN = 1;

export class TickwireClient {
  /** @param {Partial<typeof DEFAULT_OPTIONS> & {url?:string, snapshotUrl?:string, WebSocket?:any, fetch?:any, logger?:any}} [options] */
  constructor(options = {}) {
    const o = { ...DEFAULT_OPTIONS, ...options };
    this.options = o;
    this.url = socketUrl(o.url);
    this.snapshotUrl = o.snapshotUrl || snapshotUrlFor(this.url);
    this._WebSocket = o.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
    this._fetch = o.fetch || (typeof fetch !== "undefined" ? fetch.bind(globalThis) : null);
    if (!this._WebSocket) throw new Error("TickwireClient: no WebSocket implementation (pass options.WebSocket)");
    if (!this._fetch) throw new Error("TickwireClient: no fetch implementation (pass options.fetch)");
    this.log = o.logger || console;
    this.store = createTickwireStore();
    this._listeners = new Map();
    this._subscription = {
      channels: o.channels && o.channels.length ? [...o.channels] : null,
      symbols: o.symbols && o.symbols.length ? [...o.symbols] : null,
      maxFrequency: validFrequency(o.maxFrequency),
    };
    this._socket = null;
    this._generation = 0; // bumped per socket: late events of an old socket are ignored
    this._shouldReconnect = false;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._tickTimer = null;
    this._confirmTimer = null;
    this._connectTimer = null;
    this._epoch = null; // epoch of the applied state
    this._seq = null; // highest broadcast seq applied (within _epoch)
    this._phase = "idle"; // idle | await-confirm | loading | live
    this._buffer = [];
    this._connEpoch = null;
    this._streamStart = null;
    this._snapshotToken = 0;
    this._serverHeartbeatMs = null;
    this._lastReceivedAt = 0;
    this._lastPingAt = 0;
    this._resumeRequested = false;
    this._resyncAfterConfirm = false;
    this._token = null;
    this.stats = { received: 0, applied: 0, duplicatesDropped: 0, invalid: 0, snapshotsLoaded: 0, reconnects: 0 };
    this._onOnline = () => { if (this.connectionState === "reconnecting") this._openSocket(); };
    if (typeof window !== "undefined" && window.addEventListener) window.addEventListener("online", this._onOnline);
    if (o.autoConnect) this.connect();
  }

  // --- public API ----------------------------------------------------------------------

  /** The current connection state. */
  get connectionState() { return this.store.getState().connectionState; }
  /** The epoch of the applied state (null before the first sync). */
  get epoch() { return this._epoch; }
  /** The highest broadcast seq applied in `epoch` (null before the first sync). */
  get seq() { return this._seq; }
  /** Shorthand for `store.getState()`. */
  getState() { return this.store.getState(); }

  /** Opens the connection (no-op when connecting or connected). Resumes from the last seq. */
  connect() {
    this._shouldReconnect = true;
    const s = this.connectionState;
    if (s === "connected" || s === "connecting") return;
    this._clearReconnectTimer();
    this._attempt = 0;
    this._openSocket();
  }

  /** Closes the connection and stops reconnecting. State is kept; `connect()` resumes. */
  disconnect() {
    this._shouldReconnect = false;
    this._clearReconnectTimer();
    this._attempt = 0;
    this._dropSocket(1000, "client disconnect");
    this._setConnection("disconnected", { error: null });
  }

  /** Reconnects now with a fresh attempt budget (e.g. the "Retry" button after giving up). */
  retry() {
    if (this.connectionState === "connected") return;
    this._dropSocket(1000, "retry");
    this._clearReconnectTimer();
    this._shouldReconnect = true;
    this._attempt = 0;
    this._openSocket();
  }

  /**
   * Replaces the subscription (PROTOCOL.md `Subscribe`); remembered across reconnects.
   * @param {string[]|null} [channels] type names or aliases; null/[]: all
   * @param {string[]|null} [symbols] null/[]: all
   * @param {{maxFrequency?: number|null}} [options] maxFrequency: at most this many price and
   *   candle updates per second per symbol (and timeframe), each the newest; null: every update
   */
  subscribe(channels = null, symbols = null, options = {}) {
    this._subscription = {
      channels: channels && channels.length ? [...channels] : null,
      symbols: symbols && symbols.length ? [...symbols] : null,
      maxFrequency: validFrequency(options && options.maxFrequency),
    };
    const data = {};
    if (this._subscription.channels) data.channels = this._subscription.channels;
    data.symbols = this._subscription.symbols || [];
    if (this._subscription.maxFrequency) data.max_frequency = this._subscription.maxFrequency;
    this._sendSubscriptionChange({ type: "Subscribe", data });
  }

  /** Removes channels and/or symbols from the subscription (PROTOCOL.md `Unsubscribe`). */
  unsubscribe(channels = null, symbols = null) {
    const sub = this._subscription;
    if (channels && channels.length) {
      const drop = new Set(channels.map(canonicalChannel));
      const current = sub.channels ? sub.channels.map(canonicalChannel) : [...CHANNEL_NAMES];
      sub.channels = current.filter((c) => !drop.has(c));
    }
    if (symbols && symbols.length) {
      if (!sub.symbols) this.log.warn("tickwire: removing symbols from an all-symbols subscription is an error; subscribe to the symbols you want");
      else {
        sub.symbols = sub.symbols.filter((s) => !symbols.includes(s));
        // No symbols left means nothing left (the server's rule), not "every symbol":
        // remember it as no channels, so a reconnect does not widen the subscription.
        if (sub.symbols.length === 0) { sub.channels = []; sub.symbols = null; }
      }
    }
    const data = {};
    if (channels && channels.length) data.channels = [...channels];
    if (symbols && symbols.length) data.symbols = [...symbols];
    this._sendSubscriptionChange({ type: "Unsubscribe", data });
  }

  /** The remembered subscription (null: all; `maxFrequency` only when one was asked for). */
  get subscription() {
    const sub = {
      channels: this._subscription.channels ? [...this._subscription.channels] : null,
      symbols: this._subscription.symbols ? [...this._subscription.symbols] : null,
    };
    if (this._subscription.maxFrequency) sub.maxFrequency = this._subscription.maxFrequency;
    return sub;
  }

  /** Sends a message object as JSON. Returns false (and warns) when not connected. */
  sendMessage(message) {
    const ws = this._socket;
    if (!ws || ws.readyState !== OPEN) {
      this.log.warn("tickwire: sendMessage while not connected, dropped", message);
      return false;
    }
    ws.send(JSON.stringify(message));
    return true;
  }

  /**
   * Adds an event listener. Events: every server message type (listener gets `(data, message)`),
   * "message" (every valid message), "state" (the store state), "error" (a TickwireError),
   * "snapshot" (the loaded snapshot document). Returns the function that removes it.
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  /** Removes an event listener. */
  off(type, listener) {
    const set = this._listeners.get(type);
    if (set) set.delete(listener);
  }

  /** Disconnects and releases timers and global listeners. */
  destroy() {
    this.disconnect();
    if (typeof window !== "undefined" && window.removeEventListener) window.removeEventListener("online", this._onOnline);
    this._listeners.clear();
  }

  // --- events and state ------------------------------------------------------------------

  _emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const l of [...set]) {
      try { l(...args); } catch (e) { this.log.error(`tickwire: "${type}" listener failed`, e); }
    }
  }

  _commit(next) {
    if (next === this.store.getState()) return;
    this.store.setState(next);
    this._emit("state", next);
  }

  _setConnection(connectionState, extra = {}) {
    const prev = this.store.getState();
    const next = {
      ...prev,
      connectionState,
      isConnected: connectionState === "connected",
      isConnecting: connectionState === "connecting" || connectionState === "reconnecting",
      reconnectAttempt: this._attempt,
      synced: connectionState === "connected" ? prev.synced : false,
      ...extra,
    };
    if (Object.keys(next).every((k) => next[k] === prev[k])) return;
    this._commit(Object.freeze(next));
  }

  _error(source, message, code = null, details = undefined) {
    const err = { source, message, code };
    if (details !== undefined) err.details = details;
    this._emit("error", Object.freeze(err));
  }

  // --- socket lifecycle --------------------------------------------------------------------

  _socketUrl() {
    const u = new URL(this.url);
    if (this._epoch !== null && this._seq !== null) {
      u.searchParams.set("epoch", this._epoch);
      u.searchParams.set("since", String(this._seq));
    }
    if (this._subscription.channels) u.searchParams.set("channels", this._subscription.channels.join(","));
    if (this._subscription.symbols) u.searchParams.set("symbols", this._subscription.symbols.join(","));
    if (this._subscription.maxFrequency) u.searchParams.set("max_frequency", String(this._subscription.maxFrequency));
    return u.toString();
  }

  _openSocket() {
    if (!this.options.getToken) return this._openSocketWith(null);
    this._dropSocket(1000, "reopen");
    this._clearReconnectTimer();
    this._setConnection("connecting");
    const gen = this._generation;
    Promise.resolve()
      .then(() => this.options.getToken())
      .then((token) => {
        if (gen !== this._generation || !this._shouldReconnect) return;
        this._openSocketWith(token || null);
      }, (e) => {
        if (gen !== this._generation) return;
        this._error("connection", `getToken failed: ${e && e.message ? e.message : e}`, "TOKEN_FAILED");
        this._connectionLost();
      });
  }

  _openSocketWith(token) {
    this._dropSocket(1000, "reopen");
    this._clearReconnectTimer();
    this._token = token;
    const gen = ++this._generation;
    const url = this._socketUrl();
    this._resumeRequested = this._epoch !== null && this._seq !== null;
    this._phase = "idle";
    this._buffer = [];
    this._connEpoch = null; // epoch and head announced by this connection's Connected
    this._streamStart = null;
    this._setConnection("connecting");
    let ws;
    try {
      ws = token ? new this._WebSocket(url, ["tickwire", "bearer." + token]) : new this._WebSocket(url);
    } catch (e) {
      this._error("connection", `Cannot open ${url}: ${e && e.message ? e.message : e}`, "CONNECT_FAILED");
      this._connectionLost();
      return;
    }
    this._socket = ws;
    ws.onopen = () => { if (gen === this._generation) this._onOpen(gen); };
    ws.onmessage = (ev) => { if (gen === this._generation) this._onFrame(gen, ev.data); };
    ws.onerror = () => { /* the close event that follows does the work */ };
    ws.onclose = (ev) => {
      if (gen !== this._generation) return;
      this._socket = null;
      if (ev && ev.code === 1013) this.log.warn("tickwire: closed as a slow consumer, resuming");
      if (ev && ev.code === 4001) this.log.warn("tickwire: token expired, reconnecting with a new one");
      this._connectionLost();
    };
    this._connectTimer = setTimeout(() => {
      if (gen !== this._generation || !this._socket || this._socket.readyState === OPEN) return;
      this.log.warn(`tickwire: no connection after ${this.options.connectTimeoutMs} ms, giving this attempt up`);
      this._dropSocket(4000, "connect timeout");
      this._connectionLost();
    }, this.options.connectTimeoutMs);
  }

  _onOpen(gen) {
    clearTimeout(this._connectTimer);
    this._lastReceivedAt = Date.now();
    this._lastPingAt = Date.now();
    this._setConnection("connected", { error: null });
    this._startTicker(gen);
    // Connected is the server's first message; without it the stream has no known start,
    // so after a while the client syncs from the snapshot anyway rather than buffer forever.
    clearTimeout(this._confirmTimer);
    this._confirmTimer = setTimeout(() => {
      if (gen !== this._generation || this._phase !== "idle") return;
      this.log.warn("tickwire: no Connected message from the server, loading the snapshot");
      this._loadSnapshot(gen);
    }, this.options.confirmTimeoutMs);
  }

  /** Detaches and closes the current socket without triggering reconnection. */
  _dropSocket(code, reason) {
    clearTimeout(this._connectTimer);
    clearTimeout(this._confirmTimer);
    clearInterval(this._tickTimer);
    this._tickTimer = null;
    const ws = this._socket;
    this._socket = null;
    this._generation++;
    this._phase = "idle";
    this._buffer = [];
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try { ws.close(code, reason); } catch { /* already closing */ }
  }

  /** The socket is gone (closed, timed out, stale, or unusable): reconnect or give up. */
  _connectionLost() {
    clearTimeout(this._connectTimer);
    clearTimeout(this._confirmTimer);
    clearInterval(this._tickTimer);
    this._tickTimer = null;
    this._phase = "idle";
    this._buffer = [];
    this._generation++;
    if (!this._shouldReconnect) {
      this._setConnection("disconnected");
      return;
    }
    const wasConnected = this.connectionState === "connected";
    if (this._attempt >= this.options.maxAttempts) {
      const message = `Connection lost: gave up after ${this._attempt} reconnection attempts`;
      this._setConnection("disconnected", { error: message });
      this._error("connection", message, "GAVE_UP");
      return;
    }
    this._attempt += 1;
    this.stats.reconnects += 1;
    const delay = backoffDelay(this._attempt, this.options);
    if (wasConnected) this._error("connection", "Connection lost, reconnecting", "CONNECTION_LOST");
    this._setConnection("reconnecting");
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this._shouldReconnect) this._openSocket();
    }, delay);
  }

  _clearReconnectTimer() {
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
  }

  // --- heartbeat: one ticker per connection sends Ping and watches for silence ------------

  _heartbeatMs() {
    return this.options.heartbeatIntervalMs || this._serverHeartbeatMs || 30000;
  }

  _staleMs() {
    return this.options.staleAfterMs || 2.5 * this._heartbeatMs();
  }

  _startTicker(gen) {
    clearInterval(this._tickTimer);
    const period = Math.max(50, Math.min(1000, Math.min(this._heartbeatMs(), this._staleMs()) / 5));
    this._tickTimer = setInterval(() => {
      if (gen !== this._generation) return;
      const now = Date.now();
      if (now - this._lastReceivedAt > this._staleMs()) {
        this.log.warn(`tickwire: nothing received for ${now - this._lastReceivedAt} ms, reconnecting`);
        this._dropSocket(4000, "stale");
        this._connectionLost();
        return;
      }
      if (now - this._lastPingAt >= this._heartbeatMs()) {
        this._lastPingAt = now;
        this.sendMessage({ type: "Ping" });
      }
    }, period);
  }

  // --- incoming messages ------------------------------------------------------------------

  _onFrame(gen, raw) {
    this._lastReceivedAt = Date.now();
    this.stats.received += 1;
    const { message, problem } = parseMessage(raw);
    if (!message) {
      this.stats.invalid += 1;
      this.log.warn(`tickwire: invalid message skipped (${problem})`, typeof raw === "string" ? raw.slice(0, 200) : raw);
      return;
    }
    if (!KNOWN_TYPES.has(message.type)) {
      if (this.log.debug) this.log.debug(`tickwire: unknown message type "${message.type}" ignored`);
      return;
    }
    this._emit("message", message);
    switch (message.type) {
      case "Connected": return this._onConnected(gen, message);
      case "SubscriptionConfirmed": return this._onConfirmed(gen, message);
      case "RefreshToken": return this._refreshToken(gen);
      case "TokenRefreshed":
        this._emit("TokenRefreshed", message.data, message);
        return;
      case "Pong":
        // A Pong's seq is that of the last broadcast message before it on this connection.
        if (this._phase === "live" && typeof message.seq === "number" && this._seq !== null && message.seq > this._seq) this._seq = message.seq;
        this._emit("Pong", message.data, message);
        return;
      case "Error":
        // Per-connection errors repeat an old seq; broadcast errors take a new one. Either
        // way an error is shown, never buffered or deduplicated away.
        if (this._phase === "live") this._applyBroadcast(message);
        else this._emitServerError(message);
        return;
      default:
        if (this._phase === "live") this._applyBroadcast(message);
        else this._buffer.push(message);
    }
  }

  /** The server asks for a fresh token before the current one expires. */
  _refreshToken(gen) {
    if (!this.options.getToken) return;
    Promise.resolve()
      .then(() => this.options.getToken())
      .then((token) => {
        if (gen !== this._generation || !token) return;
        this._token = token;
        this.sendMessage({ type: "Refresh", data: { token } });
      }, (e) => this.log.warn(`tickwire: getToken failed on refresh: ${e && e.message ? e.message : e}`));
  }

  _emitServerError(message) {
    const d = message.data || {};
    this._commit(Object.freeze({ ...this.store.getState(), error: d.message || message.message || "Server error", lastMessage: message }));
    this._emit("Error", message.data, message);
    this._error("server", d.message || message.message || "Server error", d.code || null, d.details);
  }

  _onConnected(gen, message) {
    clearTimeout(this._confirmTimer);
    const d = message.data || {};
    if (typeof d.heartbeat_interval_ms === "number" && d.heartbeat_interval_ms > 0) {
      const changed = d.heartbeat_interval_ms !== this._serverHeartbeatMs;
      this._serverHeartbeatMs = d.heartbeat_interval_ms;
      if (changed) this._startTicker(gen);
    }
    this._streamStart = typeof d.seq === "number" ? d.seq : message.seq;
    this._connEpoch = typeof d.epoch === "string" ? d.epoch : null;
    this._emit("Connected", message.data, message);
    if (this._resumeRequested && this._connEpoch !== null && this._connEpoch === this._epoch) {
      this._phase = "await-confirm";
      clearTimeout(this._confirmTimer);
      this._confirmTimer = setTimeout(() => {
        if (gen !== this._generation || this._phase !== "await-confirm") return;
        this.log.warn("tickwire: no SubscriptionConfirmed after resume, loading the snapshot");
        this._loadSnapshot(gen);
      }, this.options.confirmTimeoutMs);
    } else {
      // First connect, or the server restarted (new epoch): replay is impossible.
      this._loadSnapshot(gen);
    }
  }

  _onConfirmed(gen, message) {
    const d = message.data || {};
    const sub = Object.freeze({
      channels: Object.freeze(Array.isArray(d.channels) ? [...d.channels] : []),
      symbols: Object.freeze(Array.isArray(d.symbols) ? [...d.symbols] : []),
    });
    this._commit(Object.freeze({ ...this.store.getState(), subscription: sub }));
    this._emit("SubscriptionConfirmed", message.data, message);
    if (this._phase === "await-confirm" && typeof d.recovered === "boolean") {
      clearTimeout(this._confirmTimer);
      if (d.recovered) this._goLive();
      else this._loadSnapshot(gen);
    } else if (this._resyncAfterConfirm && this._phase === "live") {
      // A changed subscription: channels or symbols may have been added, whose state only
      // the snapshot has. The subscription is in effect for every message after this one.
      this._resyncAfterConfirm = false;
      this._loadSnapshot(gen);
    }
  }

  _sendSubscriptionChange(msg) {
    if (this.connectionState !== "connected") return; // sent with the next connection's URL
    this._resyncAfterConfirm = true;
    this.sendMessage(msg);
  }

  /** Syncs from GET /api/snapshot; live messages are buffered meanwhile. Only the latest
   *  load may complete: an older one would overwrite newer live state. */
  _loadSnapshot(gen) {
    this._phase = "loading";
    this._fetchSnapshot(gen, ++this._snapshotToken, 1);
  }

  async _fetchSnapshot(gen, token, attempt) {
    const current = () => gen === this._generation && token === this._snapshotToken;
    let snap;
    try {
      const headers = { Accept: "application/json" };
      if (this._token) headers.Authorization = "Bearer " + this._token;
      const res = await this._fetch(this.snapshotUrl, { headers, cache: "no-store" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      snap = await res.json();
      if (!snap || typeof snap !== "object" || typeof snap.seq !== "number") throw new Error("malformed snapshot");
    } catch (e) {
      if (!current()) return;
      if (attempt < this.options.snapshotRetries) {
        setTimeout(() => { if (current()) this._fetchSnapshot(gen, token, attempt + 1); }, 250 * attempt);
        return;
      }
      this._error("connection", `Cannot load ${this.snapshotUrl}: ${e && e.message ? e.message : e}`, "SNAPSHOT_FAILED");
      this._dropSocket(4000, "snapshot failed");
      this._connectionLost();
      return;
    }
    if (!current()) return;
    // The snapshot must cover the start of this connection's stream, and come from its epoch.
    const stale = (this._connEpoch !== null && snap.epoch !== this._connEpoch)
      || (typeof this._streamStart === "number" && snap.seq < this._streamStart);
    if (stale) {
      if (attempt < this.options.snapshotRetries) {
        setTimeout(() => { if (current()) this._fetchSnapshot(gen, token, attempt + 1); }, 100 * attempt);
        return;
      }
      this._error("connection", "Snapshot does not match the stream, reconnecting", "SNAPSHOT_MISMATCH");
      this._dropSocket(4000, "snapshot mismatch");
      this._connectionLost();
      return;
    }
    this._epoch = typeof snap.epoch === "string" ? snap.epoch : this._connEpoch;
    this._seq = snap.seq;
    this.stats.snapshotsLoaded += 1;
    this._commit(stateFromSnapshot({ ...this.store.getState(), error: null }, snap, this.options, this._subscription));
    this._emit("snapshot", snap);
    this._goLive();
  }

  _goLive() {
    this._phase = "live";
    // Only a connection that got back in sync resets the backoff: one that is accepted and
    // then fails (closed at once, snapshot unavailable) keeps backing off.
    this._attempt = 0;
    if (this._epoch === null) this._epoch = this._connEpoch;
    const buffered = this._buffer;
    this._buffer = [];
    for (const m of buffered) this._applyBroadcast(m);
    this._commit(Object.freeze({ ...this.store.getState(), synced: true, reconnectAttempt: 0, epoch: this._epoch, seq: this._seq }));
  }

  _applyBroadcast(message) {
    if (typeof message.seq === "number" && this._seq !== null && message.seq <= this._seq) {
      if (message.type === "Error") this._emitServerError(message); // per-connection error
      else this.stats.duplicatesDropped += 1;
      return;
    }
    if (typeof message.seq === "number") this._seq = message.seq;
    this.stats.applied += 1;
    if (message.type === "Error") {
      this._emitServerError(message);
      return;
    }
    const prev = this.store.getState();
    this._commit(reduce({ ...prev, epoch: this._epoch }, message, this.options));
    this._emit(message.type, message.data, message);
  }
}

export default TickwireClient;
