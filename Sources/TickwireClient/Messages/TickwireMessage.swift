/// A server message's payload, typed by its `type` (PROTOCOL.md).
public enum TickwireMessage: Sendable, Hashable {
    case connected(ConnectedInfo)
    case marketData(MarketData)
    case chartUpdate(ChartUpdate)
    case positionUpdate(PositionUpdate)
    case tradeExecuted(TradeExecuted)
    case aiSignalReceived(AISignal)
    case botStatusUpdate(BotStatus)
    case error(ErrorData)
    case pong
    case subscriptionConfirmed(SubscriptionConfirmed)
    /// The server asks for a new token (PROTOCOL.md "Token refresh").
    case refreshToken(TokenRefreshRequest)
    /// The server accepted a `Refresh`.
    case tokenRefreshed(TokenRefreshed)
    /// A type this client does not know yet (forward compatibility, FR-WEBSOCKET-002).
    case unknown(type: String, data: TickwireJSON?)

    /// The broadcast channel that carries this message, or nil for per-connection types
    /// (`Connected`, `Pong`, `SubscriptionConfirmed`) and unknown ones.
    public var channel: TickwireChannel? {
        switch self {
        case .marketData: return .marketData
        case .chartUpdate: return .chartUpdate
        case .positionUpdate: return .positionUpdate
        case .tradeExecuted: return .tradeExecuted
        case .aiSignalReceived: return .aiSignalReceived
        case .botStatusUpdate: return .botStatusUpdate
        case .error: return .error
        case .connected, .pong, .subscriptionConfirmed, .refreshToken, .tokenRefreshed, .unknown: return nil
        }
    }

    /// The `symbol` the message is about, if it has one (what symbol filters look at).
    public var symbol: String? {
        switch self {
        case .marketData(let d): return d.symbol
        case .chartUpdate(let d): return d.symbol
        case .positionUpdate(let d): return d.symbol
        case .tradeExecuted(let d): return d.symbol
        case .aiSignalReceived(let d): return d.symbol
        case .error(let d): return d.details?["symbol"]?.stringValue
        case .unknown(_, let data): return data?["symbol"]?.stringValue
        case .botStatusUpdate, .connected, .pong, .subscriptionConfirmed, .refreshToken, .tokenRefreshed: return nil
        }
    }

    /// How the client sequences a message (see `StreamSynchronizer`).
    enum Sequencing {
        /// Carries state and a fresh seq: applied at most once, in seq order.
        case state
        /// An `Error` or an unknown type: a broadcast takes a fresh seq, a per-connection
        /// message repeats one, and the two cannot be told apart by type. Never dropped.
        case notice
        /// Per-connection (`Connected`, `Pong`, `SubscriptionConfirmed`, `RefreshToken`,
        /// `TokenRefreshed`): outside the sequence.
        case connection
    }

    var sequencing: Sequencing {
        switch self {
        case .marketData, .chartUpdate, .positionUpdate, .tradeExecuted, .aiSignalReceived, .botStatusUpdate: return .state
        case .error, .unknown: return .notice
        case .connected, .pong, .subscriptionConfirmed, .refreshToken, .tokenRefreshed: return .connection
        }
    }
}

/// One server message: the envelope fields and the typed payload.
public struct TickwireEnvelope: Sendable, Hashable, Codable {
    /// The wire `type`.
    public var type: String
    /// Monotonic per server epoch; a broadcast message takes the next number, a
    /// per-connection one repeats the seq of the broadcast message it follows.
    public var seq: UInt64?
    /// ISO 8601 UTC with milliseconds, as sent.
    public var timestamp: String?
    /// The optional human-readable `message` field.
    public var message: String?
    public var payload: TickwireMessage

    public init(type: String, seq: UInt64?, timestamp: String? = nil, message: String? = nil, payload: TickwireMessage) {
        self.type = type
        self.seq = seq
        self.timestamp = timestamp
        self.message = message
        self.payload = payload
    }

    /// `timestamp` as Unix milliseconds (nil when absent or not ISO 8601 UTC).
    public var timestampMilliseconds: Int64? { timestamp.flatMap(ISO8601Milliseconds.parse) }

    enum CodingKeys: String, CodingKey {
        case type, seq, data, message, timestamp
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        seq = try c.decodeIfPresent(UInt64.self, forKey: .seq)
        timestamp = try c.decodeIfPresent(String.self, forKey: .timestamp)
        message = try c.decodeIfPresent(String.self, forKey: .message)
        switch type {
        case "Connected": payload = .connected(try c.decode(ConnectedInfo.self, forKey: .data))
        case "MarketData": payload = .marketData(try c.decode(MarketData.self, forKey: .data))
        case "ChartUpdate": payload = .chartUpdate(try c.decode(ChartUpdate.self, forKey: .data))
        case "PositionUpdate": payload = .positionUpdate(try c.decode(PositionUpdate.self, forKey: .data))
        case "TradeExecuted": payload = .tradeExecuted(try c.decode(TradeExecuted.self, forKey: .data))
        case "AISignalReceived": payload = .aiSignalReceived(try c.decode(AISignal.self, forKey: .data))
        case "BotStatusUpdate": payload = .botStatusUpdate(try c.decode(BotStatus.self, forKey: .data))
        case "Error": payload = .error(try c.decode(ErrorData.self, forKey: .data))
        case "Pong": payload = .pong
        case "SubscriptionConfirmed": payload = .subscriptionConfirmed(try c.decode(SubscriptionConfirmed.self, forKey: .data))
        case "RefreshToken": payload = .refreshToken(try c.decode(TokenRefreshRequest.self, forKey: .data))
        case "TokenRefreshed": payload = .tokenRefreshed(try c.decode(TokenRefreshed.self, forKey: .data))
        default:
            // PROTOCOL.md: `data`, when present, is an object, whatever the type.
            switch try c.decodeIfPresent(TickwireJSON.self, forKey: .data) {
            case nil, .null?: payload = .unknown(type: type, data: nil)
            case let data?:
                guard case .object = data else {
                    throw DecodingError.typeMismatch(TickwireJSON.self, .init(codingPath: [CodingKeys.data], debugDescription: "'data' is not an object"))
                }
                payload = .unknown(type: type, data: data)
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try c.encodeIfPresent(seq, forKey: .seq)
        switch payload {
        case .connected(let d): try c.encode(d, forKey: .data)
        case .marketData(let d): try c.encode(d, forKey: .data)
        case .chartUpdate(let d): try c.encode(d, forKey: .data)
        case .positionUpdate(let d): try c.encode(d, forKey: .data)
        case .tradeExecuted(let d): try c.encode(d, forKey: .data)
        case .aiSignalReceived(let d): try c.encode(d, forKey: .data)
        case .botStatusUpdate(let d): try c.encode(d, forKey: .data)
        case .error(let d): try c.encode(d, forKey: .data)
        case .subscriptionConfirmed(let d): try c.encode(d, forKey: .data)
        case .refreshToken(let d): try c.encode(d, forKey: .data)
        case .tokenRefreshed(let d): try c.encode(d, forKey: .data)
        case .unknown(_, let d): try c.encodeIfPresent(d, forKey: .data)
        case .pong: break
        }
        try c.encodeIfPresent(message, forKey: .message)
        try c.encodeIfPresent(timestamp, forKey: .timestamp)
    }
}

/// `2026-11-27T17:09:58.123Z` to Unix milliseconds, without Foundation's date machinery.
enum ISO8601Milliseconds {
    static func parse(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        // YYYY-MM-DDTHH:MM:SS[.fff...]Z
        guard b.count >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T"),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"), b.last == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int64? {
            var value: Int64 = 0
            for i in range {
                let d = b[i] &- UInt8(ascii: "0")
                guard d < 10 else { return nil }
                value = value * 10 + Int64(d)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
              let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var millis: Int64 = 0
        if b[19] == UInt8(ascii: ".") {
            let digits = b.count - 1 - 20
            guard digits >= 1, let fraction = number(20..<(b.count - 1)) else { return nil }
            millis = fraction
            if digits < 3 { for _ in digits..<3 { millis *= 10 } } else { for _ in 3..<digits { millis /= 10 } }
        } else if b.count != 20 {
            return nil
        }
        // Days from civil (Howard Hinnant's algorithm).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis
    }
}
