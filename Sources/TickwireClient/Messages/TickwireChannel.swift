/// The broadcast channels of PROTOCOL.md: one per broadcast message type.
public enum TickwireChannel: String, Sendable, Hashable, CaseIterable, Codable {
    case marketData = "MarketData"
    case chartUpdate = "ChartUpdate"
    case positionUpdate = "PositionUpdate"
    case tradeExecuted = "TradeExecuted"
    case aiSignalReceived = "AISignalReceived"
    case botStatusUpdate = "BotStatusUpdate"
    case error = "Error"

    /// The canonical name the server uses (the message type).
    public var typeName: String { rawValue }

    /// The short alias the server also accepts (`prices`, `trades`, ...).
    public var alias: String {
        switch self {
        case .marketData: return "prices"
        case .chartUpdate: return "charts"
        case .positionUpdate: return "positions"
        case .tradeExecuted: return "trades"
        case .aiSignalReceived: return "signals"
        case .botStatusUpdate: return "status"
        case .error: return "errors"
        }
    }

    /// A channel from its type name or alias.
    public init?(name: String) {
        if let channel = TickwireChannel(rawValue: name) {
            self = channel
        } else if let channel = TickwireChannel.allCases.first(where: { $0.alias == name }) {
            self = channel
        } else {
            return nil
        }
    }
}

/// What a connection receives: `nil` channels means every channel, `nil` symbols every
/// symbol (PROTOCOL.md `Subscribe`). Remembered across reconnects and sent in the resume URL.
public struct TickwireSubscription: Sendable, Hashable {
    public var channels: Set<TickwireChannel>?
    public var symbols: [String]?
    /// `max_frequency`: at most this many updates per second per symbol (and timeframe) on
    /// the conflatable channels (market data, candles), each the newest value; trades,
    /// positions and signals are never throttled. nil: the full rate.
    public var maxFrequency: Double?

    public init(channels: Set<TickwireChannel>? = nil, symbols: [String]? = nil, maxFrequency: Double? = nil) {
        self.channels = channels
        // An empty symbol list means "all symbols" on the wire: keep one spelling of it.
        self.symbols = symbols.flatMap { $0.isEmpty ? nil : $0 }
        self.maxFrequency = maxFrequency
    }

    /// Everything: the server's default before any `Subscribe`.
    public static let everything = TickwireSubscription()

    public var isEverything: Bool { channels == nil && symbols == nil }

    /// The `Subscribe` message's `data` (PROTOCOL.md): `symbols` always (empty: all),
    /// `channels` unless every one, `max_frequency` when set.
    var subscribeData: SubscribeData {
        SubscribeData(channels: orderedChannels?.map(\.typeName), symbols: symbols ?? [], maxFrequency: maxFrequency)
    }

    /// The channels in a stable order (the protocol's table order).
    var orderedChannels: [TickwireChannel]? {
        channels.map { set in TickwireChannel.allCases.filter(set.contains) }
    }

    /// Whether a message on `channel` about `symbol` passes this subscription. Messages
    /// without a symbol (bot status, most errors) pass any symbol filter (PROTOCOL.md).
    public func includes(_ channel: TickwireChannel, symbol: String?) -> Bool {
        if let channels, !channels.contains(channel) { return false }
        if let symbols, let symbol, !symbols.contains(symbol) { return false }
        return true
    }
}

/// `Subscribe.data` on the wire.
struct SubscribeData: Encodable, Sendable, Equatable {
    var channels: [String]?
    var symbols: [String]
    var maxFrequency: Double?

    enum CodingKeys: String, CodingKey {
        case channels, symbols
        case maxFrequency = "max_frequency"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(channels, forKey: .channels)
        try c.encode(symbols, forKey: .symbols)
        // A whole number goes as an integer (`4`, not `4.0`): what a server that counts
        // updates per second in integers reads without doubt.
        if let f = maxFrequency {
            if f == f.rounded(), abs(f) < 1e15 { try c.encode(Int64(f), forKey: .maxFrequency) } else { try c.encode(f, forKey: .maxFrequency) }
        }
    }
}
