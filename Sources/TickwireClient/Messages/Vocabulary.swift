// String-valued protocol fields as open sets: the known values are constants, and a value
// a newer server sends still decodes (forward compatibility, FR-WEBSOCKET-002) instead of
// failing the whole message.

/// A position's direction: `LONG` or `SHORT`.
public struct PositionSide: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let long = PositionSide(rawValue: "LONG")
    public static let short = PositionSide(rawValue: "SHORT")
    public var description: String { rawValue }
}

/// A position's lifecycle: `OPEN` or `CLOSED` (Tickwire's simulator adds it).
public struct PositionStatus: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let open = PositionStatus(rawValue: "OPEN")
    public static let closed = PositionStatus(rawValue: "CLOSED")
    public var description: String { rawValue }
}

/// A trade's direction: `BUY` or `SELL`.
public struct TradeSide: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let buy = TradeSide(rawValue: "BUY")
    public static let sell = TradeSide(rawValue: "SELL")
    public var description: String { rawValue }
}

/// An AI signal's direction: `long`, `short` or `neutral`.
public struct SignalDirection: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let long = SignalDirection(rawValue: "long")
    public static let short = SignalDirection(rawValue: "short")
    public static let neutral = SignalDirection(rawValue: "neutral")
    public var description: String { rawValue }
}
