/// The broadcast channels: one per server message type that producers publish
/// (FR-WEBSOCKET-002), each with the alias clients may subscribe by (FR-WEBSOCKET-004).
public enum Channel: UInt8, CaseIterable, Sendable {
    case marketData = 0
    case chartUpdate
    case positionUpdate
    case tradeExecuted
    case aiSignalReceived
    case botStatusUpdate
    case error

    /// Bit in a subscription's channel mask.
    @inlinable public var bit: UInt8 { 1 << rawValue }

    /// All channels: the default subscription.
    public static let allMask: UInt8 = (1 << UInt8(allCases.count)) - 1

    /// The message type name, as sent in `type`.
    public var typeName: String {
        switch self {
        case .marketData: return "MarketData"
        case .chartUpdate: return "ChartUpdate"
        case .positionUpdate: return "PositionUpdate"
        case .tradeExecuted: return "TradeExecuted"
        case .aiSignalReceived: return "AISignalReceived"
        case .botStatusUpdate: return "BotStatusUpdate"
        case .error: return "Error"
        }
    }

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

    /// The channel for a type name or alias.
    public init?(name: String) {
        for c in Channel.allCases where c.typeName == name || c.alias == name {
            self = c
            return
        }
        return nil
    }

    /// The slow-consumer policy (PROTOCOL.md "Slow consumers"): state snapshots may be
    /// conflated, newest per symbol (and timeframe) wins; events never are.
    @inlinable
    public var isConflatable: Bool {
        switch self {
        case .marketData, .chartUpdate, .botStatusUpdate: return true
        case .positionUpdate, .tradeExecuted, .aiSignalReceived, .error: return false
        }
    }

    /// Whether `max_frequency` applies (PROTOCOL.md "Maximum frequency"): the price and
    /// candle streams, which a screen redraws a few times a second. Bot status is
    /// conflatable for slow consumers but rare, and events are never throttled.
    @inlinable
    public var isThrottleable: Bool {
        switch self {
        case .marketData, .chartUpdate: return true
        default: return false
        }
    }

    /// The throttleable channels' bits.
    public static let throttleMask: UInt8 = Channel.marketData.bit | Channel.chartUpdate.bit
}

/// 64-bit FNV-1a: symbols and conflation keys are compared by hash on the hot path.
/// A collision only ever delivers a message to a client filtering on another symbol.
public enum SymbolHash {
    @inlinable
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64 {
        var h = seed
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        // 0 means "no symbol".
        return h == 0 ? 1 : h
    }

    public static func hash(_ string: String) -> UInt64 {
        var s = string
        return s.withUTF8 { hash(UnsafeRawBufferPointer($0)) }
    }
}
