/// Drops events already delivered, per stream: an event passes only when its order key
/// (event time, or trade id for aggTrade) is above the last one that passed on its stream.
/// This is what makes a rotation seamless (the old and the new connection overlap, and
/// each event is published once, from whichever delivered it first) and lets several
/// `--upstream` URLs carrying the same streams back each other up.
public struct StreamDedupe: Sendable {
    private var last: [UInt64: Int64] = [:]
    /// Streams remembered. A Binance connection carries at most 1024 streams; past this
    /// bound (a feed naming ever new streams) the table starts afresh rather than grow.
    public static let maxStreams = 65_536

    public init() {}

    /// Whether the event is new on its stream (and records it if so).
    public mutating func admit(stream: UInt64, order: Int64) -> Bool {
        if let previous = last[stream], order <= previous { return false }
        if last.count >= Self.maxStreams && last[stream] == nil { last.removeAll(keepingCapacity: true) }
        last[stream] = order
        return true
    }
}
