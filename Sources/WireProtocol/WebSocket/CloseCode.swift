/// WebSocket close status codes (RFC 6455 §7.4, IANA "WebSocket Close Code Number Registry").
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let normalClosure = CloseCode(rawValue: 1000)
    public static let goingAway = CloseCode(rawValue: 1001)
    public static let protocolError = CloseCode(rawValue: 1002)
    public static let unsupportedData = CloseCode(rawValue: 1003)
    /// Never sent on the wire: "no status code was present" (§7.4.1).
    public static let noStatusReceived = CloseCode(rawValue: 1005)
    /// Never sent on the wire: "closed abnormally, no close frame" (§7.4.1).
    public static let abnormalClosure = CloseCode(rawValue: 1006)
    public static let invalidPayload = CloseCode(rawValue: 1007)
    public static let policyViolation = CloseCode(rawValue: 1008)
    public static let messageTooBig = CloseCode(rawValue: 1009)
    public static let mandatoryExtension = CloseCode(rawValue: 1010)
    public static let internalError = CloseCode(rawValue: 1011)
    public static let serviceRestart = CloseCode(rawValue: 1012)
    /// "Try again later": Tickwire's slow-consumer close; the client resumes from its last seq.
    public static let tryAgainLater = CloseCode(rawValue: 1013)
    public static let badGateway = CloseCode(rawValue: 1014)

    /// Whether a peer may put this code in a Close frame (§7.4.1, §7.4.2 and the IANA
    /// registry): 1000-1003 and 1007-1014 are defined, 3000-4999 belong to libraries and
    /// applications; 1004-1006, 1015, other 1xxx and 2xxx values are reserved or wire-forbidden.
    @inlinable
    public var isValidOnWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    public var description: String { String(rawValue) }
}
