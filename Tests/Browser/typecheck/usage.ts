// Compile-only check of tickwire.d.ts: `tsc --noEmit -p Tests/Browser/typecheck`.
// Exercises the public API the way an application would, including the React one-liner
// against a minimal local declaration of useSyncExternalStore (no React install).
import {
  TickwireClient,
  backoffDelay,
  createTickwireStore,
  initialState,
  parseMessage,
  reduce,
  type AISignalRecord,
  type ConnectionState,
  type OutgoingWebSocketMessage,
  type ServerMessage,
  type Snapshot,
  type TickwireError,
  type TickwireState,
  type TradeRecord,
  type WebSocketLike,
} from "../../../Sources/EdgeServer/Web/tickwire.js";

// React's signature, declared locally.
declare function useSyncExternalStore<Snapshot>(
  subscribe: (onStoreChange: () => void) => () => void,
  getSnapshot: () => Snapshot,
  getServerSnapshot?: () => Snapshot,
): Snapshot;

const client = new TickwireClient({ url: "ws://127.0.0.1:8080/ws", autoConnect: false, maxAttempts: 10 });
const specSchedule = new TickwireClient({ autoConnect: false, initialDelayMs: 5000, jitter: false, symbols: ["BTCUSDT"], channels: ["prices", "TradeExecuted"] });

// The React one-liner.
export function useTickwire(): TickwireState {
  const state = useSyncExternalStore(client.store.subscribe, client.store.getState);
  return state;
}

// The spec's hook API on top of the client.
export function useWebSocket() {
  const state = useTickwire();
  return {
    state,
    connect: () => client.connect(),
    disconnect: () => client.disconnect(),
    sendMessage: (m: OutgoingWebSocketMessage) => client.sendMessage(m),
  };
}

// Typed events: data and envelope types follow the event name.
const offTrade = client.on("TradeExecuted", (trade, msg) => {
  const side: "BUY" | "SELL" = trade.side;
  const pnl: number | undefined = trade.pnl;
  const seq: number = msg.seq;
  console.log(`${side} ${trade.quantity} ${trade.symbol} @ ${trade.price}`, pnl, seq);
});
client.on("MarketData", (md) => { const p: number = md.price; void p; });
client.on("ChartUpdate", (c) => { const closed: boolean = c.candle.is_closed; void closed; });
client.on("PositionUpdate", (p) => { const s: "LONG" | "SHORT" = p.side; void s; });
client.on("AISignalReceived", (s) => { const scores: Record<string, number> = s.strategy_scores; void scores; });
client.on("BotStatusUpdate", (b) => { const up: number = b.uptime; void up; });
client.on("Error", (e) => { const code: string = e.code; void code; });
client.on("Connected", (c) => { const hb: number = c.heartbeat_interval_ms; void hb; });
client.on("SubscriptionConfirmed", (c) => { const r: boolean | undefined = c.recovered; void r; });
client.on("Pong", (_data, msg) => { const t: string = msg.timestamp; void t; });
client.on("state", (s: TickwireState) => { const c: ConnectionState = s.connectionState; void c; });
client.on("error", (e: TickwireError) => { console.warn(e.source, e.code, e.message); });
client.on("snapshot", (snap: Snapshot) => { const n: number = snap.recent_trades.length; void n; });
client.on("message", (m: ServerMessage) => {
  // Discriminated union narrowing on `type`.
  if (m.type === "TradeExecuted" && m.data) { const q: number = m.data.quantity; void q; }
  if (m.type === "AISignalReceived" && m.data) { const c: number = m.data.confidence; void c; }
});
offTrade();

// @ts-expect-error: the listener for MarketData does not get trade data.
client.on("MarketData", (md: { side: "BUY" }) => void md);
// @ts-expect-error: unknown event names are rejected.
client.on("NoSuchEvent", () => undefined);

// State shape.
const st = client.getState();
const trades: ReadonlyArray<TradeRecord> = st.recentTrades;
const signals: ReadonlyArray<AISignalRecord> = st.aiSignals;
const btc = st.prices["BTCUSDT"];
const btcCandles = st.candles["BTCUSDT"] ?? [];
const lastCandle = btcCandles[btcCandles.length - 1];
const isConn: boolean = st.isConnected && !st.isConnecting;
const err: string | null = st.error;
console.log(trades[0]?.seq, signals[0]?.model_type, btc?.price_change_percent_24h, lastCandle?.close, isConn, err,
  st.positions.map((p) => p.unrealized_pnl), st.botStatus?.total_pnl, st.reconnectAttempt, st.lastMessage?.type);

// Methods.
client.connect();
client.subscribe(["prices", "trades"], ["BTCUSDT", "ETHUSDT"]);
client.unsubscribe(["MarketData"]);
client.retry();
const sent: boolean = client.sendMessage({ type: "Ping" });
client.sendMessage({ type: "Subscribe", data: { channels: ["signals"], resume: { epoch: "9f0c2a51d4e8b736", since: 1042 } } });
client.disconnect();
specSchedule.destroy();
console.log(sent, client.epoch, client.seq, client.stats.duplicatesDropped, client.subscription.symbols);

// Pure helpers and a store of one's own.
const d: number = backoffDelay(3, { initialDelayMs: 5000, factor: 2, maxDelayMs: 30000, jitter: false });
const parsed = parseMessage('{"type":"Pong","seq":1,"timestamp":"2026-01-01T00:00:00.000Z"}');
const store = createTickwireStore(initialState());
const unsubscribe = store.subscribe(() => console.log(store.getState().seq));
if (parsed.message) store.setState(reduce(store.getState(), parsed.message));
unsubscribe();
console.log(d);

// Injected WebSocket / fetch (tests, Node).
class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: any) => any) | null = null;
  onmessage: ((ev: { data: any }) => any) | null = null;
  onerror: ((ev: any) => any) | null = null;
  onclose: ((ev: { code: number; reason: string }) => any) | null = null;
  constructor(public url: string) {}
  send(_data: string): void {}
  close(_code?: number, _reason?: string): void {}
}
const injected = new TickwireClient({
  url: "ws://example.test/ws",
  WebSocket: FakeSocket,
  fetch: async () => ({ ok: true, status: 200, json: async () => ({}) }),
  logger: console,
});
injected.destroy();
