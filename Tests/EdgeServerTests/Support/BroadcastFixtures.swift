import TradingStream

/// A frame whose JSON is `size` filler bytes: the broadcast building blocks look only at
/// its metadata and byte count, never at the JSON.
func makeFrame(seq: UInt64, channel: Channel = .tradeExecuted, symbol: String? = nil, key: UInt64 = 0, size: Int = 10) -> BroadcastFrame {
    let json = [UInt8](repeating: UInt8(ascii: "x"), count: size)
    return json.withUnsafeBytes {
        BroadcastFrame(json: $0, seq: seq, channel: channel, symbolHash: symbol.map(SymbolHash.hash) ?? 0,
                       conflationKey: key, acceptedAt: seq)
    }
}

/// SplitMix64: a seeded generator, so a randomized test fails the same way every run.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Holds an object weakly: whether a container really released it.
struct WeakBox<T: AnyObject> {
    weak var object: T?
    init(_ object: T) { self.object = object }
    var isFreed: Bool { object == nil }
}
