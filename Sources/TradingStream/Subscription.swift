/// What one connection asked for: a set of channels and an optional symbol filter.
public struct Subscription: Sendable, Equatable {
    /// Bit i set: channel i wanted.
    public var channelMask: UInt8
    /// Sorted symbol hashes; empty means every symbol.
    public var symbolHashes: [UInt64]
    /// The symbols as given (for SubscriptionConfirmed), in the client's order.
    public var symbols: [String]
    /// `max_frequency`: updates per second per key on the throttleable channels
    /// (`Channel.isThrottleable`); 0: every update, as published.
    public var maxFrequency: Int = 0

    public static let everything = Subscription(channelMask: Channel.allMask, symbolHashes: [], symbols: [])

    public init(channelMask: UInt8, symbolHashes: [UInt64], symbols: [String]) {
        self.channelMask = channelMask
        self.symbolHashes = symbolHashes
        self.symbols = symbols
    }

    public init(channels: [Channel], symbols: [String]) {
        var mask: UInt8 = 0
        for c in channels { mask |= c.bit }
        var seen = Set<String>()
        let unique = symbols.filter { seen.insert($0).inserted }
        self.init(channelMask: mask, symbolHashes: unique.map(SymbolHash.hash).sorted(), symbols: unique)
    }

    /// Every channel and symbol (at whatever frequency).
    public var isEverything: Bool { channelMask == Channel.allMask && symbolHashes.isEmpty }
    /// Whether some of its updates go through the rate groups rather than straight from the log.
    public var isThrottled: Bool { maxFrequency > 0 && channelMask & Channel.throttleMask != 0 }
    public var channels: [Channel] { Channel.allCases.filter { channelMask & $0.bit != 0 } }

    /// Whether a message on `channel` about `symbolHash` (0: none) matches.
    @inlinable
    public func matches(channel: UInt8, symbolHash: UInt64) -> Bool {
        guard channelMask & (1 << channel) != 0 else { return false }
        if symbolHashes.isEmpty || symbolHash == 0 { return true }
        return Self.contains(symbolHashes, symbolHash)
    }

    @inlinable
    public static func contains(_ sorted: [UInt64], _ value: UInt64) -> Bool {
        if sorted.count <= 8 { return sorted.contains(value) }
        var lo = 0
        var hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid] < value { lo = mid + 1 } else { hi = mid }
        }
        return lo < sorted.count && sorted[lo] == value
    }
}
