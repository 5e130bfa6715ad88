// The `data` payload of every server message type (PROTOCOL.md "Server to client types").
// Fields the protocol lists are required; fields it marks optional or as a Tickwire
// addition are optionals. Unknown extra fields are ignored, so producers may add more.
// Times inside `data` are Unix milliseconds; `uptime` is seconds.

/// `Connected`: the server's greeting, the first message on every connection.
public struct ConnectedInfo: Sendable, Hashable, Codable {
    /// This server run's history identity: resume only works within one epoch.
    public var epoch: String
    /// The newest seq at connect time.
    public var seq: UInt64
    /// How often the server expects a client heartbeat; the client's default ping period.
    public var heartbeatIntervalMs: Int
    /// The server's name and version, e.g. `tickwire/0.1.0`.
    public var server: String?

    public init(epoch: String, seq: UInt64, heartbeatIntervalMs: Int, server: String? = nil) {
        self.epoch = epoch
        self.seq = seq
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.server = server
    }

    enum CodingKeys: String, CodingKey {
        case epoch, seq, server
        case heartbeatIntervalMs = "heartbeat_interval_ms"
    }
}

/// `MarketData` (channel `prices`).
public struct MarketData: Sendable, Hashable, Codable {
    public var symbol: String
    public var price: Double
    public var priceChange24h: Double
    public var priceChangePercent24h: Double
    public var volume24h: Double
    public var timestamp: Int64

    public init(symbol: String, price: Double, priceChange24h: Double, priceChangePercent24h: Double, volume24h: Double, timestamp: Int64) {
        self.symbol = symbol
        self.price = price
        self.priceChange24h = priceChange24h
        self.priceChangePercent24h = priceChangePercent24h
        self.volume24h = volume24h
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey {
        case symbol, price, timestamp
        case priceChange24h = "price_change_24h"
        case priceChangePercent24h = "price_change_percent_24h"
        case volume24h = "volume_24h"
    }
}

/// One OHLCV candle of a `ChartUpdate`.
public struct Candle: Sendable, Hashable, Codable {
    /// The candle's start time.
    public var timestamp: Int64
    public var open: Double
    public var high: Double
    public var low: Double
    public var close: Double
    public var volume: Double
    /// False while the candle is still forming.
    public var isClosed: Bool

    public init(timestamp: Int64, open: Double, high: Double, low: Double, close: Double, volume: Double, isClosed: Bool) {
        self.timestamp = timestamp
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.isClosed = isClosed
    }

    enum CodingKeys: String, CodingKey {
        case timestamp, open, high, low, close, volume
        case isClosed = "is_closed"
    }
}

/// `ChartUpdate` (channel `charts`).
public struct ChartUpdate: Sendable, Hashable, Codable {
    public var symbol: String
    /// E.g. `1m`, `5m`, `1h`.
    public var timeframe: String
    public var candle: Candle
    public var latestPrice: Double
    public var priceChange24h: Double
    public var priceChangePercent24h: Double
    public var volume24h: Double
    public var timestamp: Int64

    public init(symbol: String, timeframe: String, candle: Candle, latestPrice: Double, priceChange24h: Double,
                priceChangePercent24h: Double, volume24h: Double, timestamp: Int64) {
        self.symbol = symbol
        self.timeframe = timeframe
        self.candle = candle
        self.latestPrice = latestPrice
        self.priceChange24h = priceChange24h
        self.priceChangePercent24h = priceChangePercent24h
        self.volume24h = volume24h
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey {
        case symbol, timeframe, candle, timestamp
        case latestPrice = "latest_price"
        case priceChange24h = "price_change_24h"
        case priceChangePercent24h = "price_change_percent_24h"
        case volume24h = "volume_24h"
    }
}

/// `PositionUpdate` (channel `positions`).
public struct PositionUpdate: Sendable, Hashable, Codable {
    public var symbol: String
    public var side: PositionSide
    public var pnl: Double
    public var currentPrice: Double
    public var unrealizedPnl: Double
    public var timestamp: Int64
    /// Tickwire addition.
    public var quantity: Double?
    /// Tickwire addition.
    public var entryPrice: Double?
    /// Tickwire addition; a `CLOSED` position (or quantity 0) leaves the snapshot.
    public var status: PositionStatus?

    public init(symbol: String, side: PositionSide, pnl: Double, currentPrice: Double, unrealizedPnl: Double, timestamp: Int64,
                quantity: Double? = nil, entryPrice: Double? = nil, status: PositionStatus? = nil) {
        self.symbol = symbol
        self.side = side
        self.pnl = pnl
        self.currentPrice = currentPrice
        self.unrealizedPnl = unrealizedPnl
        self.timestamp = timestamp
        self.quantity = quantity
        self.entryPrice = entryPrice
        self.status = status
    }

    enum CodingKeys: String, CodingKey {
        case symbol, side, pnl, timestamp, quantity, status
        case currentPrice = "current_price"
        case unrealizedPnl = "unrealized_pnl"
        case entryPrice = "entry_price"
    }
}

/// `TradeExecuted` (channel `trades`).
public struct TradeExecuted: Sendable, Hashable, Codable {
    public var symbol: String
    public var side: TradeSide
    public var quantity: Double
    public var price: Double
    public var timestamp: Int64
    /// Absent on opening trades.
    public var pnl: Double?

    public init(symbol: String, side: TradeSide, quantity: Double, price: Double, timestamp: Int64, pnl: Double? = nil) {
        self.symbol = symbol
        self.side = side
        self.quantity = quantity
        self.price = price
        self.timestamp = timestamp
        self.pnl = pnl
    }
}

/// `AISignalReceived` (channel `signals`).
public struct AISignal: Sendable, Hashable, Codable {
    public var symbol: String
    public var signal: SignalDirection
    /// 0 to 1.
    public var confidence: Double
    public var timestamp: Int64
    public var modelType: String
    public var timeframe: String
    public var reasoning: String
    /// Per-strategy scores, e.g. `["rsi": 0.8, "macd": 0.9]`.
    public var strategyScores: [String: Double]

    public init(symbol: String, signal: SignalDirection, confidence: Double, timestamp: Int64, modelType: String,
                timeframe: String, reasoning: String, strategyScores: [String: Double]) {
        self.symbol = symbol
        self.signal = signal
        self.confidence = confidence
        self.timestamp = timestamp
        self.modelType = modelType
        self.timeframe = timeframe
        self.reasoning = reasoning
        self.strategyScores = strategyScores
    }

    enum CodingKeys: String, CodingKey {
        case symbol, signal, confidence, timestamp, timeframe, reasoning
        case modelType = "model_type"
        case strategyScores = "strategy_scores"
    }
}

/// `BotStatusUpdate` (channel `status`).
public struct BotStatus: Sendable, Hashable, Codable {
    /// E.g. `running`, `stopped`.
    public var status: String
    public var activePositions: Int
    public var totalPnl: Double
    public var totalTrades: Int
    /// Seconds.
    public var uptime: Double

    public init(status: String, activePositions: Int, totalPnl: Double, totalTrades: Int, uptime: Double) {
        self.status = status
        self.activePositions = activePositions
        self.totalPnl = totalPnl
        self.totalTrades = totalTrades
        self.uptime = uptime
    }

    enum CodingKeys: String, CodingKey {
        case status, uptime
        case activePositions = "active_positions"
        case totalPnl = "total_pnl"
        case totalTrades = "total_trades"
    }
}

/// `Error`: from a producer (broadcast on channel `errors`) or about this connection.
public struct ErrorData: Sendable, Hashable, Codable {
    public var message: String
    /// E.g. `INVALID_JSON`, `UNKNOWN_CHANNEL`, `INVALID_SUBSCRIPTION`.
    public var code: String
    public var details: TickwireJSON?

    public init(message: String, code: String, details: TickwireJSON? = nil) {
        self.message = message
        self.code = code
        self.details = details
    }
}

/// `SubscriptionConfirmed`: the subscription now in effect, and after a resume request
/// whether the server could replay what was missed.
public struct SubscriptionConfirmed: Sendable, Hashable, Codable {
    /// Canonical type names.
    public var channels: [String]
    /// Empty: every symbol.
    public var symbols: [String]
    /// After a resume request: whether every missed message is being replayed.
    public var recovered: Bool?
    /// After a resume request: how many missed messages follow.
    public var replayed: Int?
    public var epoch: String?
    public var head: UInt64?
    /// `max_frequency`: the updates per second per symbol (and timeframe) in force for the
    /// conflatable channels, as the server echoes it; nil when none is (full rate).
    public var maxFrequency: Double?

    public init(channels: [String], symbols: [String], recovered: Bool? = nil, replayed: Int? = nil, epoch: String? = nil, head: UInt64? = nil,
                maxFrequency: Double? = nil) {
        self.channels = channels
        self.symbols = symbols
        self.recovered = recovered
        self.replayed = replayed
        self.epoch = epoch
        self.head = head
        self.maxFrequency = maxFrequency
    }

    enum CodingKeys: String, CodingKey {
        case channels, symbols, recovered, replayed, epoch, head
        case maxFrequency = "max_frequency"
    }

    /// `channels` as typed channels (names this client does not know are left out).
    public var knownChannels: [TickwireChannel] { channels.compactMap(TickwireChannel.init(name:)) }
}

/// `RefreshToken`: the connection's token expires soon; answer with `Refresh` (the client
/// does, through `Configuration.tokenProvider`) or be closed with 4001 at `expiresAt`.
public struct TokenRefreshRequest: Sendable, Hashable, Codable {
    /// The current token's `exp` (seconds since the epoch).
    public var expiresAt: Int64
    /// How long until then, in milliseconds, when the server asked.
    public var expiresInMs: Int64?

    public init(expiresAt: Int64, expiresInMs: Int64? = nil) {
        self.expiresAt = expiresAt
        self.expiresInMs = expiresInMs
    }

    enum CodingKeys: String, CodingKey {
        case expiresAt = "expires_at"
        case expiresInMs = "expires_in_ms"
    }
}

/// `TokenRefreshed`: the server took the new token; the connection now expires at
/// `expiresAt` (nil: never).
public struct TokenRefreshed: Sendable, Hashable, Codable {
    public var expiresAt: Int64?

    public init(expiresAt: Int64?) {
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey {
        case expiresAt = "expires_at"
    }
}
