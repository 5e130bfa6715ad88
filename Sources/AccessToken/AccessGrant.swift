import TradingStream

/// What a verified token lets one connection do: whose private messages it sees, which
/// channels and symbols it may subscribe to, and until when (PROTOCOL.md "Authentication").
public struct AccessGrant: Sendable, Equatable {
    /// Accounts whose private messages (`account` on the envelope) reach the holder.
    public var accounts: [String]
    /// Channels the holder may subscribe to (bit per `Channel`).
    public var channelMask: UInt8
    /// Symbols the holder may subscribe to; nil: any.
    public var symbols: [String]?
    /// Seconds since the epoch; nil for a token without `exp` (only when the policy allows it).
    public var expiresAt: Int64?
    /// Bytes per second the holder may be sent (`max_bandwidth`); nil: no cap of its own.
    public var maxBandwidth: Int?

    public init(accounts: [String], channelMask: UInt8 = Channel.allMask, symbols: [String]? = nil, expiresAt: Int64? = nil, maxBandwidth: Int? = nil) {
        self.accounts = accounts
        self.channelMask = channelMask
        self.symbols = symbols
        self.expiresAt = expiresAt
        self.maxBandwidth = maxBandwidth
    }

    /// The grant of verified claims. Channel names that mean nothing here grant nothing:
    /// a token from a newer issuer can never widen what this server hands out.
    public init(_ claims: TokenClaims) {
        accounts = claims.accounts
        if let names = claims.channels {
            var mask: UInt8 = 0
            for name in names { if let channel = Channel(name: name) { mask |= channel.bit } }
            // Errors about the connection itself are never withheld.
            channelMask = mask | Channel.error.bit
        } else {
            channelMask = Channel.allMask
        }
        symbols = claims.symbols
        expiresAt = claims.expiresAt
        maxBandwidth = claims.maxBandwidth
    }

    /// The cap in force for a connection, in bytes per second (0: none): the lower of the
    /// server's `--max-bandwidth` (0: none) and the token's `max_bandwidth`, so a token can
    /// narrow the server's cap but never lift it.
    public static func bandwidthCap(server: Int, grant: AccessGrant?) -> Int {
        guard let claim = grant?.maxBandwidth, claim > 0 else { return server }
        return server == 0 ? claim : min(server, claim)
    }

    public var restrictsChannels: Bool { channelMask != Channel.allMask }

    /// The channels of `mask` this grant does not allow, by type name.
    public func forbiddenChannels(_ mask: UInt8) -> [String] {
        Channel.allCases.filter { mask & $0.bit != 0 && channelMask & $0.bit == 0 }.map(\.typeName)
    }

    /// The symbols of `wanted` this grant does not allow.
    public func forbiddenSymbols(_ wanted: [String]) -> [String] {
        guard let symbols else { return [] }
        return wanted.filter { !symbols.contains($0) }
    }
}
