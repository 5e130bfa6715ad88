// Type declarations for tickwire.js (the Tickwire browser client). Message shapes follow
// PROTOCOL.md; the state follows FR-WEBSOCKET's "Frontend Hook API".

// ---------------------------------------------------------------------------------------
// Messages: server to client

export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting";

/** Canonical channel (type) names. */
export type ChannelName =
  | "MarketData" | "ChartUpdate" | "PositionUpdate" | "TradeExecuted"
  | "AISignalReceived" | "BotStatusUpdate" | "Error";

/** Aliases accepted by the server for the channel names. */
export type ChannelAlias = "prices" | "charts" | "positions" | "trades" | "signals" | "status" | "errors";

export type Channel = ChannelName | ChannelAlias;

export interface ConnectedData {
  epoch: string;
  /** Head seq at connect. */
  seq: number;
  heartbeat_interval_ms: number;
  server: string;
  /** With a token: the accounts whose private messages this connection receives. */
  accounts?: string[];
  /** With a token that expires: its `exp`, seconds since the epoch. */
  expires_at?: number;
}

/** The server asks for a new token before the current one expires (PROTOCOL.md "Token refresh"). */
export interface RefreshTokenData {
  expires_at: number;
  expires_in_ms: number;
}

export interface TokenRefreshedData {
  expires_at: number | null;
}

export interface MarketData {
  symbol: string;
  price: number;
  price_change_24h: number;
  price_change_percent_24h: number;
  volume_24h: number;
  /** Milliseconds since the epoch. */
  timestamp: number;
}

export interface Candle {
  /** Open time, milliseconds since the epoch. */
  timestamp: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  is_closed: boolean;
}

export interface ChartUpdateData {
  symbol: string;
  timeframe: string;
  candle: Candle;
  latest_price: number;
  price_change_24h: number;
  price_change_percent_24h: number;
  volume_24h: number;
  timestamp: number;
}

export type PositionSide = "LONG" | "SHORT";

export interface PositionUpdateData {
  symbol: string;
  side: PositionSide;
  pnl: number;
  current_price: number;
  unrealized_pnl: number;
  timestamp: number;
  /** Tickwire's simulator adds these three. */
  quantity?: number;
  entry_price?: number;
  status?: "OPEN" | "CLOSED";
}

export type TradeSide = "BUY" | "SELL";

export interface TradeExecutedData {
  symbol: string;
  side: TradeSide;
  quantity: number;
  price: number;
  timestamp: number;
  /** Absent on opening trades. */
  pnl?: number;
}

export type SignalDirection = "long" | "short" | "neutral";

export interface AISignalData {
  symbol: string;
  signal: SignalDirection;
  /** 0 to 1. */
  confidence: number;
  timestamp: number;
  model_type: string;
  timeframe: string;
  reasoning: string;
  strategy_scores: Record<string, number>;
}

export interface BotStatusData {
  status: string;
  active_positions: number;
  total_pnl: number;
  total_trades: number;
  /** Seconds. */
  uptime: number;
}

export interface ErrorData {
  message: string;
  code: string;
  details?: unknown;
}

export interface SubscriptionConfirmedData {
  channels: ChannelName[];
  /** Empty: all symbols. */
  symbols: string[];
  /** Present after a resume request. */
  recovered?: boolean;
  replayed?: number;
  epoch?: string;
  head?: number;
  /** The max_frequency in force; absent: every update. */
  max_frequency?: number;
}

/** Every server message type and its `data`. */
export interface ServerMessageDataMap {
  Connected: ConnectedData;
  MarketData: MarketData;
  ChartUpdate: ChartUpdateData;
  PositionUpdate: PositionUpdateData;
  TradeExecuted: TradeExecutedData;
  AISignalReceived: AISignalData;
  BotStatusUpdate: BotStatusData;
  Error: ErrorData;
  Pong: undefined;
  SubscriptionConfirmed: SubscriptionConfirmedData;
  RefreshToken: RefreshTokenData;
  TokenRefreshed: TokenRefreshedData;
}

export type ServerMessageType = keyof ServerMessageDataMap;

/** The envelope of PROTOCOL.md. */
export interface Envelope<T extends ServerMessageType = ServerMessageType, D = ServerMessageDataMap[T]> {
  type: T;
  /** Monotonic per server epoch; a valid resume point on any message. */
  seq: number;
  /** Private messages (PositionUpdate, TradeExecuted, BotStatusUpdate, ...): the account they are for. */
  account?: string;
  data?: D;
  message?: string;
  /** ISO 8601 UTC with milliseconds. */
  timestamp: string;
}

export type ConnectedMessage = Envelope<"Connected">;
export type MarketDataMessage = Envelope<"MarketData">;
export type ChartUpdateMessage = Envelope<"ChartUpdate">;
export type PositionUpdateMessage = Envelope<"PositionUpdate">;
export type TradeExecutedMessage = Envelope<"TradeExecuted">;
export type AISignalReceivedMessage = Envelope<"AISignalReceived">;
export type BotStatusUpdateMessage = Envelope<"BotStatusUpdate">;
export type ErrorMessage = Envelope<"Error">;
export type PongMessage = Envelope<"Pong">;
export type SubscriptionConfirmedMessage = Envelope<"SubscriptionConfirmed">;
export type RefreshTokenMessage = Envelope<"RefreshToken">;
export type TokenRefreshedMessage = Envelope<"TokenRefreshed">;

/** Any server message, discriminated by `type`. */
export type ServerMessage =
  | ConnectedMessage | MarketDataMessage | ChartUpdateMessage | PositionUpdateMessage
  | TradeExecutedMessage | AISignalReceivedMessage | BotStatusUpdateMessage | ErrorMessage
  | PongMessage | SubscriptionConfirmedMessage | RefreshTokenMessage | TokenRefreshedMessage;

/** Alias with the spec's name. */
export type WebSocketMessage = ServerMessage;

// ---------------------------------------------------------------------------------------
// Messages: client to server

export interface SubscribeOptions {
  /** Updates per second per key on prices and candles (1 to the server's --max-frequency-limit); null: every update. */
  maxFrequency?: number | null;
}

export interface ResumePoint {
  epoch: string;
  since: number;
}

export interface PingMessage {
  type: "Ping";
  timestamp?: string;
}

export interface SubscribeMessage {
  type: "Subscribe";
  data: { channels?: Channel[]; symbols?: string[]; resume?: ResumePoint; /** updates/s per key on prices and candles */ max_frequency?: number | null };
  timestamp?: string;
}

export interface UnsubscribeMessage {
  type: "Unsubscribe";
  data: { channels?: Channel[]; symbols?: string[] };
  timestamp?: string;
}

/** The answer to RefreshToken: a new token for the same accounts. */
export interface RefreshMessage {
  type: "Refresh";
  data: { token: string };
}

/** What `sendMessage` accepts: the protocol's client messages, or any object with a type
 *  (unknown client types are ignored by the server, for forward compatibility). */
export type OutgoingWebSocketMessage =
  | PingMessage | SubscribeMessage | UnsubscribeMessage | RefreshMessage
  | { type: string; data?: Record<string, unknown>; timestamp?: string };

// ---------------------------------------------------------------------------------------
// Snapshot (GET /api/snapshot)

/** A snapshot list entry: the message data, ideally with its `seq`. */
export type SnapshotEntry<D> = D & { seq?: number };

export interface Snapshot {
  epoch: string;
  /** Head seq at the time of the snapshot: resume with since = seq. */
  seq: number;
  market: Record<string, MarketData>;
  charts: Record<string, Record<string, ChartUpdateData | ChartUpdateData[]>>;
  /** Open positions only. */
  positions: PositionUpdateData[];
  bot_status: BotStatusData | null;
  /** Newest first, 20. */
  recent_trades: SnapshotEntry<TradeExecutedData>[];
  /** Newest first, 20. */
  ai_signals: SnapshotEntry<AISignalData>[];
  timestamp: string;
}

// ---------------------------------------------------------------------------------------
// State

/** A trade or signal in the store: the message data plus what identifies it. */
export type Identified<D> = Readonly<D> & {
  /** The message's seq; null when a snapshot entry came without one. */
  readonly seq: number | null;
  /** The server epoch the seq belongs to. */
  readonly epoch: string | null;
};

export type TradeRecord = Identified<TradeExecutedData>;
export type AISignalRecord = Identified<AISignalData>;

export interface TickwireState {
  readonly connectionState: ConnectionState;
  readonly isConnected: boolean;
  /** True while connecting or reconnecting. */
  readonly isConnecting: boolean;
  /** 1-based number of the reconnection attempt under way; 0 once back in sync. */
  readonly reconnectAttempt: number;
  /** The last server or connection error message; null after a successful (re)connect. */
  readonly error: string | null;
  readonly lastMessage: ServerMessage | null;
  /** Server epoch of the data below. */
  readonly epoch: string | null;
  /** Highest broadcast seq applied. */
  readonly seq: number | null;
  /** True once the state is known to be complete for this connection (snapshot loaded or resume confirmed). */
  readonly synced: boolean;
  readonly botStatus: Readonly<BotStatusData> | null;
  /** Open positions, ordered by symbol (one per symbol). */
  readonly positions: ReadonlyArray<Readonly<PositionUpdateData>>;
  /** Newest first, at most `maxSignals`. */
  readonly aiSignals: ReadonlyArray<AISignalRecord>;
  /** Newest first, at most `maxTrades`. */
  readonly recentTrades: ReadonlyArray<TradeRecord>;
  /** Latest MarketData per symbol. */
  readonly prices: Readonly<Record<string, Readonly<MarketData>>>;
  /** Candles of `candleTimeframe` per symbol, oldest first; the last may be forming (is_closed false). */
  readonly candles: Readonly<Record<string, ReadonlyArray<Readonly<Candle>>>>;
  /** As last confirmed by the server (empty lists: everything). */
  readonly subscription: { readonly channels: ReadonlyArray<ChannelName>; readonly symbols: ReadonlyArray<string> };
}

export interface TickwireStore {
  /** The current immutable state: the same object until the next change. Bound. */
  getState(): TickwireState;
  /** Calls `listener` after every change; returns the function that unsubscribes. Bound. */
  subscribe(listener: () => void): () => void;
  setState(next: TickwireState): void;
}

export function createTickwireStore(state?: TickwireState): TickwireStore;
export function initialState(): TickwireState;

// ---------------------------------------------------------------------------------------
// Options

/** The subset of the browser WebSocket the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onerror: ((ev: any) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface FetchResponseLike {
  ok: boolean;
  status: number;
  json(): Promise<any>;
}

export type FetchLike = (url: string, init?: { headers?: Record<string, string>; cache?: string }) => Promise<FetchResponseLike>;

export interface Logger {
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  debug?(...args: unknown[]): void;
}

export interface BackoffOptions {
  /** Delay before the first reconnection attempt (ms). Default 1000. */
  initialDelayMs: number;
  /** Growth per attempt. Default 2. */
  factor: number;
  /** Cap (ms). Default 30000. */
  maxDelayMs: number;
  /** Full jitter: a uniform delay in [0, computed). Default true. The spec's 5/10/20/30 s:
   *  `{ initialDelayMs: 5000, jitter: false }`. */
  jitter: boolean;
}

export interface TickwireOptions extends Partial<BackoffOptions> {
  /** WebSocket URL; relative URLs and http(s) are resolved against the page. Default "/ws". */
  url?: string;
  /** Default: the `url`'s host with path /api/snapshot. */
  snapshotUrl?: string;
  /** Connect on construction. Default true. */
  autoConnect?: boolean;
  /** Ping interval. Default: the server's heartbeat_interval_ms, else 30000. */
  heartbeatIntervalMs?: number | null;
  /** Reconnect when nothing has arrived for this long. Default 2.5 x heartbeat. */
  staleAfterMs?: number | null;
  /** Abandon a socket that has not opened after this long. Default 10000. */
  connectTimeoutMs?: number;
  /** Reconnection attempts before giving up ("disconnected" with an error). Default 10. */
  maxAttempts?: number;
  /** Snapshot fetch tries before the connection is dropped and resumed. Default 3. */
  snapshotRetries?: number;
  /** Wait for SubscriptionConfirmed after a resume before falling back to the snapshot. Default 5000. */
  confirmTimeoutMs?: number;
  /** Store caps. Defaults 20, 20, 120. */
  maxTrades?: number;
  maxSignals?: number;
  maxCandles?: number;
  /** Timeframe kept in state.candles. Default "1m". */
  candleTimeframe?: string;
  /** Returns the access token (a JWT), or a Promise of one; called before every connect and
   *  when the server sends RefreshToken. Default null: no token. */
  getToken?: (() => string | null | Promise<string | null>) | null;
  /** Initial subscription (null or empty: everything). */
  channels?: Channel[] | null;
  symbols?: string[] | null;
  /** Initial max_frequency (updates per second per key on prices and candles); null: every update. */
  maxFrequency?: number | null;
  /** Injected implementations (tests, Node). Default: the globals. */
  WebSocket?: WebSocketConstructor;
  fetch?: FetchLike;
  logger?: Logger;
}

export const DEFAULT_OPTIONS: Readonly<Required<Omit<TickwireOptions, "url" | "snapshotUrl" | "WebSocket" | "fetch" | "logger">>>;

// ---------------------------------------------------------------------------------------
// Events

/** A connection or server problem, as given to "error" listeners. */
export interface TickwireError {
  readonly source: "server" | "connection";
  readonly message: string;
  /** Server error code, or one of CONNECT_FAILED, CONNECTION_LOST, GAVE_UP, SNAPSHOT_FAILED, SNAPSHOT_MISMATCH. */
  readonly code: string | null;
  readonly details?: unknown;
}

type MessageListenerArgs<T extends ServerMessageType> = [data: ServerMessageDataMap[T], message: Envelope<T>];

/** Event name to listener arguments. */
export interface TickwireEventMap {
  Connected: MessageListenerArgs<"Connected">;
  MarketData: MessageListenerArgs<"MarketData">;
  ChartUpdate: MessageListenerArgs<"ChartUpdate">;
  PositionUpdate: MessageListenerArgs<"PositionUpdate">;
  TradeExecuted: MessageListenerArgs<"TradeExecuted">;
  AISignalReceived: MessageListenerArgs<"AISignalReceived">;
  BotStatusUpdate: MessageListenerArgs<"BotStatusUpdate">;
  Error: MessageListenerArgs<"Error">;
  Pong: MessageListenerArgs<"Pong">;
  SubscriptionConfirmed: MessageListenerArgs<"SubscriptionConfirmed">;
  /** Every valid message of a known type, before it is applied (duplicates included). */
  message: [message: ServerMessage];
  /** Every store change. */
  state: [state: TickwireState];
  /** Server Error messages and connection problems. */
  error: [error: TickwireError];
  /** A snapshot was loaded and replaced the state. */
  snapshot: [snapshot: Snapshot];
}

export type TickwireEvent = keyof TickwireEventMap;

export interface TickwireStats {
  received: number;
  applied: number;
  duplicatesDropped: number;
  invalid: number;
  snapshotsLoaded: number;
  reconnects: number;
}

export interface Subscription {
  channels: Channel[] | null;
  symbols: string[] | null;
  /** The max_frequency asked for; absent: every update. */
  maxFrequency?: number;
}

export class TickwireClient {
  constructor(options?: TickwireOptions);
  readonly options: Readonly<TickwireOptions>;
  readonly url: string;
  readonly snapshotUrl: string;
  readonly store: TickwireStore;
  readonly stats: Readonly<TickwireStats>;
  readonly connectionState: ConnectionState;
  /** Epoch of the applied state (null before the first sync). */
  readonly epoch: string | null;
  /** Highest broadcast seq applied in `epoch` (null before the first sync). */
  readonly seq: number | null;
  /** The remembered subscription (null: all). */
  readonly subscription: Subscription;

  getState(): TickwireState;
  /** Opens the connection; resumes from the last seq. No-op when connecting or connected. */
  connect(): void;
  /** Closes the connection and stops reconnecting; the state is kept. */
  disconnect(): void;
  /** Reconnects now with a fresh attempt budget. */
  retry(): void;
  /** Replaces the subscription; remembered across reconnects. `maxFrequency`: at most that
   *  many price and candle updates per second per symbol (and timeframe), each the newest. */
  subscribe(channels?: Channel[] | null, symbols?: string[] | null, options?: SubscribeOptions): void;
  /** Removes channels and/or symbols from the subscription. */
  unsubscribe(channels?: Channel[] | null, symbols?: string[] | null): void;
  /** Sends a message as JSON; false when not connected. */
  sendMessage(message: OutgoingWebSocketMessage): boolean;
  /** Adds a listener; returns the function that removes it. */
  on<K extends TickwireEvent>(type: K, listener: (...args: TickwireEventMap[K]) => void): () => void;
  off<K extends TickwireEvent>(type: K, listener: (...args: TickwireEventMap[K]) => void): void;
  /** Disconnects and releases timers and global listeners. */
  destroy(): void;
}

export default TickwireClient;

// ---------------------------------------------------------------------------------------
// Pure helpers

export const CONNECTION_STATES: ReadonlyArray<ConnectionState>;
export const BROADCAST_TYPES: ReadonlyArray<ChannelName>;
export const CONNECTION_TYPES: ReadonlyArray<"Connected" | "Pong" | "SubscriptionConfirmed">;
export const CHANNEL_ALIASES: Readonly<Record<ChannelAlias, ChannelName>>;

/** Delay before reconnection attempt `attempt` (1-based). */
export function backoffDelay(attempt: number, options: BackoffOptions, random?: () => number): number;
/** Parses a text frame; `message` is null when it must be skipped, with the reason in `problem`. */
export function parseMessage(raw: unknown): { message: ServerMessage | null; problem: string | null };
export function canonicalChannel(name: string): ChannelName | null;
/** Applies one broadcast message to a state (pure). */
export function reduce(state: TickwireState, message: ServerMessage, options?: Partial<TickwireOptions>): TickwireState;
/** Replaces the data part of a state with a snapshot, filtered by a subscription (pure). */
export function stateFromSnapshot(state: TickwireState, snapshot: Snapshot, options?: Partial<TickwireOptions>, subscription?: Subscription): TickwireState;
