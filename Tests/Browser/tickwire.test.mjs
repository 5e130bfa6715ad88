// Unit tests of tickwire.js without a browser or a server: `node --test Tests/Browser/`.
// A fake WebSocket and fetch play the server; timers are real but set to a few milliseconds.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  TickwireClient, backoffDelay, parseMessage, reduce, initialState,
} from "../../Sources/EdgeServer/Web/tickwire.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits for `pred`, polling every 2 ms (the poll interval is the only sleep); fails after `ms`. */
async function until(pred, ms = 2000, what = "condition") {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await sleep(2);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const quietLogger = { warns: [], warn(...a) { this.warns.push(a.join(" ")); }, error() {}, debug() {} };

/** A scriptable server: sockets it accepted, the snapshot it serves, and helpers to talk. */
function fakeServer({ epoch = "e1", refuse = false } = {}) {
  const server = {
    epoch, refuse, seq: 0, sockets: [], urls: [], fetches: 0, snapshot: null,
    heartbeatMs: 30000,
    get last() { return this.sockets[this.sockets.length - 1]; },
  };
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      server.urls.push(url);
      server.sockets.push(this);
      setTimeout(() => {
        if (this.readyState !== 0) return;
        if (server.refuse) { this.readyState = 3; this.onclose && this.onclose({ code: 1006, reason: "" }); return; }
        this.readyState = 1;
        this.onopen && this.onopen({});
      }, 1);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code = 1000, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose && this.onclose({ code, reason });
    }
    /** Server side: push a message envelope. */
    push(type, data, seq = undefined) {
      const msg = { type, seq: seq ?? server.seq, timestamp: new Date().toISOString() };
      if (data !== undefined) msg.data = data;
      this.onmessage && this.onmessage({ data: JSON.stringify(msg) });
    }
    raw(text) { this.onmessage && this.onmessage({ data: text }); }
    greet() { this.push("Connected", { epoch: server.epoch, seq: server.seq, heartbeat_interval_ms: server.heartbeatMs, server: "fake" }); }
    /** Server side: drop the connection abnormally. */
    drop() { this.readyState = 3; this.onclose && this.onclose({ code: 1006, reason: "" }); }
  }
  server.WebSocket = FakeSocket;
  server.fetch = async () => {
    server.fetches += 1;
    const snap = server.snapshot ?? { epoch: server.epoch, seq: server.seq, market: {}, charts: {}, positions: [], bot_status: null, recent_trades: [], ai_signals: [], timestamp: "" };
    return { ok: true, status: 200, json: async () => JSON.parse(JSON.stringify(snap)) };
  };
  return server;
}

function trade(symbol, price, extra = {}) {
  return { symbol, side: "BUY", quantity: 1, price, timestamp: 1_700_000_000_000 + price, ...extra };
}

function makeClient(server, options = {}) {
  return new TickwireClient({
    url: "ws://test.local/ws", WebSocket: server.WebSocket, fetch: server.fetch, logger: quietLogger,
    initialDelayMs: 5, maxDelayMs: 20, ...options,
  });
}

test("backoff: exponential, capped, full jitter; the spec's schedule is one setting away", () => {
  const spec = { initialDelayMs: 5000, factor: 2, maxDelayMs: 30000, jitter: false };
  assert.deepEqual([1, 2, 3, 4, 5, 10].map((a) => backoffDelay(a, spec)), [5000, 10000, 20000, 30000, 30000, 30000]);
  const jit = { ...spec, initialDelayMs: 1000, jitter: true };
  assert.equal(backoffDelay(3, jit, () => 0.5), 2000);
  assert.equal(backoffDelay(3, jit, () => 0), 0);
  assert.ok(backoffDelay(9, jit, () => 0.999999) < 30000);
});

test("parseMessage: rejects non-JSON, non-objects, a missing string type and non-object data", () => {
  assert.equal(parseMessage("nope").problem, "not JSON");
  assert.equal(parseMessage("[1]").problem, "not a JSON object");
  assert.equal(parseMessage('{"type":3}').problem, "no string type");
  assert.equal(parseMessage('{"type":"MarketData","data":5}').problem, "data is not an object");
  assert.equal(parseMessage('{"type":"Pong","seq":1}').message.type, "Pong");
});

test("first connect: connecting -> connected, snapshot replaces state, buffered live messages applied once", async () => {
  const server = fakeServer();
  server.seq = 10;
  server.snapshot = {
    epoch: "e1", seq: 12, market: { BTCUSDT: { symbol: "BTCUSDT", price: 50000, price_change_24h: 1, price_change_percent_24h: 0.1, volume_24h: 5, timestamp: 1 } },
    charts: {}, positions: [{ symbol: "ETHUSDT", side: "LONG", pnl: 0, current_price: 3000, unrealized_pnl: 5, timestamp: 1, status: "OPEN" }],
    bot_status: { status: "running", active_positions: 1, total_pnl: 3, total_trades: 2, uptime: 9 },
    recent_trades: [{ ...trade("BTCUSDT", 12), seq: 12 }, { ...trade("BTCUSDT", 11), seq: 11 }], ai_signals: [], timestamp: "",
  };
  const states = [];
  let fetchGate;
  const gated = new Promise((r) => { fetchGate = r; });
  const realFetch = server.fetch;
  server.fetch = async (...a) => { await gated; return realFetch(...a); };
  const client = makeClient(server);
  client.on("state", (s) => states.push(s.connectionState));
  assert.equal(client.connectionState, "connecting");
  await until(() => server.last && server.last.readyState === 1, 2000, "open");
  assert.equal(server.urls[0], "ws://test.local/ws", "no resume on the first connect");
  const ws = server.last;
  ws.greet();
  // Live messages while the snapshot loads: 11 and 12 are in the snapshot, 13 is not.
  ws.push("TradeExecuted", trade("BTCUSDT", 11), 11);
  ws.push("TradeExecuted", trade("BTCUSDT", 12), 12);
  ws.push("TradeExecuted", trade("BTCUSDT", 13), 13);
  fetchGate();
  await until(() => client.getState().synced, 2000, "synced");
  const s = client.getState();
  assert.deepEqual(s.recentTrades.map((t) => t.seq), [13, 12, 11]);
  assert.equal(s.seq, 13);
  assert.equal(s.epoch, "e1");
  assert.equal(s.prices.BTCUSDT.price, 50000);
  assert.equal(s.positions[0].symbol, "ETHUSDT");
  assert.equal(s.botStatus.status, "running");
  assert.equal(client.stats.duplicatesDropped, 2);
  assert.equal(states[0], "connected", "connecting (asserted above) -> connected");
  assert.ok(Object.isFrozen(s) && Object.isFrozen(s.recentTrades));
  // A duplicate arriving live is dropped; the state object does not change.
  ws.push("TradeExecuted", trade("BTCUSDT", 13), 13);
  assert.equal(client.getState(), s);
  client.destroy();
});

test("resume: reconnect asks for epoch/since and applies the replay without duplicates", async () => {
  const server = fakeServer();
  server.seq = 5;
  const client = makeClient(server, { channels: ["prices", "trades"], symbols: ["BTCUSDT"] });
  await until(() => server.last && server.last.readyState === 1, 2000, "open");
  assert.match(server.urls[0], /channels=prices%2Ctrades&symbols=BTCUSDT$/);
  server.last.greet();
  await until(() => client.getState().synced, 2000, "synced");
  server.last.push("TradeExecuted", trade("BTCUSDT", 6), 6);
  server.last.push("TradeExecuted", trade("BTCUSDT", 7), 7);
  server.seq = 7;
  const got = [];
  client.on("TradeExecuted", (_d, m) => got.push(m.seq));
  server.last.drop();
  assert.equal(client.connectionState, "reconnecting");
  await until(() => server.sockets.length === 2 && server.last.readyState === 1, 2000, "reconnect");
  assert.match(server.last.url, /\?epoch=e1&since=7&channels=prices%2Ctrades&symbols=BTCUSDT$/);
  server.seq = 9;
  server.last.greet();
  server.last.push("SubscriptionConfirmed", { channels: ["MarketData", "TradeExecuted"], symbols: ["BTCUSDT"], recovered: true, replayed: 2, epoch: "e1", head: 9 }, 7);
  server.last.push("TradeExecuted", trade("BTCUSDT", 7), 7); // already applied
  server.last.push("TradeExecuted", trade("BTCUSDT", 8), 8);
  server.last.push("TradeExecuted", trade("BTCUSDT", 9), 9);
  await until(() => client.getState().synced, 2000, "synced again");
  assert.deepEqual(got, [8, 9]);
  assert.equal(server.fetches, 1, "no snapshot after a recovered resume");
  assert.deepEqual(client.getState().recentTrades.map((t) => t.seq), [9, 8, 7, 6]);
  assert.deepEqual(client.getState().subscription.symbols, ["BTCUSDT"]);
  client.destroy();
});

test("recovered:false and a new epoch reload the snapshot and replace the trades", async () => {
  const server = fakeServer();
  const client = makeClient(server);
  await until(() => server.last && server.last.readyState === 1);
  server.last.greet();
  await until(() => client.getState().synced);
  server.last.push("TradeExecuted", trade("BTCUSDT", 1), 1);
  server.seq = 1;
  // Same epoch but history gone: recovered false.
  server.last.drop();
  await until(() => server.sockets.length === 2 && server.last.readyState === 1);
  server.seq = 3;
  server.snapshot = { epoch: "e1", seq: 3, market: {}, charts: {}, positions: [], bot_status: null, recent_trades: [{ ...trade("BTCUSDT", 3), seq: 3 }, { ...trade("BTCUSDT", 2), seq: 2 }, { ...trade("BTCUSDT", 1), seq: 1 }], ai_signals: [], timestamp: "" };
  server.last.greet();
  assert.equal(client.getState().synced, false);
  server.last.push("SubscriptionConfirmed", { channels: [], symbols: [], recovered: false, replayed: 0, epoch: "e1", head: 3 }, 3);
  await until(() => client.getState().synced);
  assert.deepEqual(client.getState().recentTrades.map((t) => t.seq), [3, 2, 1]);
  // Server restart: new epoch, seq starts again; the old trades are replaced, not kept twice.
  server.epoch = "e2";
  server.seq = 1;
  server.snapshot = { epoch: "e2", seq: 1, market: {}, charts: {}, positions: [], bot_status: null, recent_trades: [{ ...trade("SOLUSDT", 1), seq: 1 }], ai_signals: [], timestamp: "" };
  server.last.drop();
  await until(() => server.sockets.length === 3 && server.last.readyState === 1);
  server.last.greet();
  server.last.push("SubscriptionConfirmed", { channels: [], symbols: [], recovered: false, replayed: 0, epoch: "e2", head: 1 }, 1);
  await until(() => client.getState().synced && client.epoch === "e2");
  server.last.push("TradeExecuted", trade("SOLUSDT", 2), 2);
  const s = client.getState();
  assert.deepEqual(s.recentTrades.map((t) => [t.epoch, t.seq]), [["e2", 2], ["e2", 1]]);
  assert.equal(server.fetches, 3);
  client.destroy();
});

test("gives up after maxAttempts, then retry() starts over; disconnect() stops reconnecting", async () => {
  const server = fakeServer({ refuse: true });
  const errors = [];
  const client = makeClient(server, { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 });
  client.on("error", (e) => errors.push(e.code));
  await until(() => client.connectionState === "disconnected", 2000, "give up");
  assert.equal(server.sockets.length, 4, "the first try plus 3 reconnection attempts");
  assert.match(client.getState().error, /gave up/);
  assert.deepEqual(errors, ["GAVE_UP"]);
  server.refuse = false;
  client.retry();
  await until(() => client.connectionState === "connected", 2000, "retry");
  server.last.greet();
  await until(() => client.getState().synced);
  assert.equal(client.getState().error, null);
  client.disconnect();
  assert.equal(client.connectionState, "disconnected");
  const n = server.sockets.length;
  // "Nothing happens": the sleep is the observation window (10 times maxDelayMs), not a
  // wait for something to happen.
  await sleep(20);
  assert.equal(server.sockets.length, n, "no reconnection after disconnect()");
  // connect() after disconnect() resumes from the kept position.
  client.connect();
  await until(() => server.sockets.length === n + 1);
  assert.match(server.last.url, /epoch=e1&since=0/);
  client.destroy();
});

test("heartbeat: Ping every interval; silence past staleAfterMs reconnects", async () => {
  const server = fakeServer();
  const client = makeClient(server, { heartbeatIntervalMs: 20, staleAfterMs: 120 });
  await until(() => server.last && server.last.readyState === 1);
  server.last.greet();
  await until(() => client.getState().synced);
  const first = server.last;
  await until(() => first.sent.filter((m) => m.type === "Ping").length >= 2, 2000, "pings");
  await until(() => server.sockets.length === 2, 2000, "stale reconnect");
  assert.equal(first.readyState, 3);
  client.destroy();
});

test("invalid messages are warned about and skipped; unknown types ignored", async () => {
  const server = fakeServer();
  quietLogger.warns.length = 0;
  const client = makeClient(server);
  await until(() => server.last && server.last.readyState === 1);
  server.last.greet();
  await until(() => client.getState().synced);
  const before = client.getState();
  server.last.raw("not json");
  server.last.raw('{"no":"type"}');
  server.last.push("FutureThing", { x: 1 }, 99);
  assert.equal(client.getState(), before);
  assert.equal(quietLogger.warns.length, 2);
  assert.equal(client.seq, 0, "an unknown type does not move the seq");
  // Error messages reach the state and the "error" event.
  const errs = [];
  client.on("error", (e) => errs.push(e));
  server.last.push("Error", { message: "bad", code: "INVALID_JSON" }, 0);
  assert.equal(client.getState().error, "bad");
  assert.equal(errs[0].code, "INVALID_JSON");
  client.destroy();
});

test("reduce: positions keyed by symbol, closed ones removed; caps; candles from ticks and ChartUpdate", () => {
  let s = { ...initialState(), epoch: "e" };
  const o = { maxTrades: 2, maxSignals: 2, maxCandles: 3, candleTimeframe: "1m" };
  s = reduce(s, { type: "PositionUpdate", seq: 1, data: { symbol: "SOLUSDT", side: "LONG", status: "OPEN", quantity: 1 } }, o);
  s = reduce(s, { type: "PositionUpdate", seq: 2, data: { symbol: "BTCUSDT", side: "SHORT", status: "OPEN", quantity: 1 } }, o);
  assert.deepEqual(s.positions.map((p) => p.symbol), ["BTCUSDT", "SOLUSDT"]);
  s = reduce(s, { type: "PositionUpdate", seq: 3, data: { symbol: "BTCUSDT", side: "SHORT", status: "CLOSED", quantity: 0 } }, o);
  assert.deepEqual(s.positions.map((p) => p.symbol), ["SOLUSDT"]);
  for (let i = 4; i < 8; i++) s = reduce(s, { type: "TradeExecuted", seq: i, data: trade("X", i) }, o);
  assert.deepEqual(s.recentTrades.map((t) => t.seq), [7, 6]);
  const md = (price, ts) => ({ type: "MarketData", seq: 0, data: { symbol: "BTCUSDT", price, timestamp: ts } });
  s = reduce(s, md(10, 60_000), o);
  s = reduce(s, md(12, 61_000), o);
  s = reduce(s, md(9, 62_000), o);
  assert.deepEqual({ ...s.candles.BTCUSDT[0] }, { timestamp: 60_000, open: 10, high: 12, low: 9, close: 9, volume: 0, is_closed: false });
  s = reduce(s, { type: "ChartUpdate", seq: 9, data: { symbol: "BTCUSDT", timeframe: "1m", candle: { timestamp: 60_000, open: 10, high: 13, low: 8, close: 9, volume: 7, is_closed: true } } }, o);
  assert.equal(s.candles.BTCUSDT[0].volume, 7);
  s = reduce(s, md(11, 63_000), o); // a late tick never reopens a closed candle
  assert.equal(s.candles.BTCUSDT[0].is_closed, true);
  s = reduce(s, md(11, 120_000), o);
  assert.equal(s.candles.BTCUSDT.length, 2);
  assert.equal(s.candles.BTCUSDT[1].open, 9, "a new candle opens at the previous close");
});

test("subscribe: sent when connected, remembered for the next URL, state reloaded filtered", async () => {
  const server = fakeServer();
  const client = makeClient(server);
  await until(() => server.last && server.last.readyState === 1);
  server.last.greet();
  await until(() => client.getState().synced);
  server.seq = 4;
  server.snapshot = {
    epoch: "e1", seq: 4, market: { BTCUSDT: { price: 1 }, ETHUSDT: { price: 2 } }, charts: {}, positions: [], bot_status: null,
    recent_trades: [{ ...trade("ETHUSDT", 4), seq: 4 }, { ...trade("BTCUSDT", 3), seq: 3 }], ai_signals: [], timestamp: "",
  };
  client.subscribe(["prices", "trades"], ["BTCUSDT"]);
  assert.deepEqual(server.last.sent.at(-1), { type: "Subscribe", data: { channels: ["prices", "trades"], symbols: ["BTCUSDT"] } });
  server.last.push("SubscriptionConfirmed", { channels: ["MarketData", "TradeExecuted"], symbols: ["BTCUSDT"] }, 4);
  await until(() => server.fetches === 2 && client.getState().synced && client.seq === 4, 2000, "resync");
  const s = client.getState();
  assert.deepEqual(Object.keys(s.prices), ["BTCUSDT"]);
  assert.deepEqual(s.recentTrades.map((t) => t.symbol), ["BTCUSDT"]);
  server.last.drop();
  await until(() => server.sockets.length === 2);
  assert.match(server.last.url, /since=4&channels=prices%2Ctrades&symbols=BTCUSDT$/);
  client.unsubscribe(["prices"]);
  assert.deepEqual(client.subscription, { channels: ["TradeExecuted"], symbols: ["BTCUSDT"] });
  client.destroy();
});

test("a server that never says Connected still gets synced from the snapshot", async () => {
  const server = fakeServer();
  server.seq = 2;
  const client = makeClient(server, { confirmTimeoutMs: 30 });
  await until(() => server.last && server.last.readyState === 1);
  server.last.push("TradeExecuted", trade("BTCUSDT", 3), 3);
  await until(() => client.getState().synced, 2000, "synced without Connected");
  assert.deepEqual(client.getState().recentTrades.map((t) => t.seq), [3]);
  client.destroy();
});
