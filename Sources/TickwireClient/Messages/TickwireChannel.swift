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

    public init(channels: Set<TickwireChannel>? = nil, symbols: [String]? = nil) {
        self.channels = channels
        // An empty symbol list means "all symbols" on the wire: keep one spelling of it.
        self.symbols = symbols.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Everything: the server's default before any `Subscribe`.
    public static let everything = TickwireSubscription()

    public var isEverything: Bool { channels == nil && symbols == nil }

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
