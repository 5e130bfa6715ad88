/// Reconnect delays: exponential with full jitter (a uniformly random delay up to the
/// current cap), so that many nodes cut off together do not reconnect together.
public struct UpstreamBackoff: Sendable {
    /// The first cap: 0.25 s, so a dropped connection (the normal 24 h end, a deploy on the
    /// venue) is back within a fraction of a second.
    public static let initialDelay = 0.25
    /// The largest cap: 30 s. Binance limits new connections per IP (300 per 5 minutes);
    /// 30 s between tries keeps a long outage far below that.
    public static let maximumDelay = 30.0
    /// No try comes sooner than this after the last (full jitter could pick 0).
    public static let minimumDelay = 0.05

    public private(set) var attempt = 0

    public init() {}

    /// `random` in 0...1.
    public mutating func nextDelay(random: Double) -> Double {
        let cap = min(Self.maximumDelay, Self.initialDelay * Double(1 << min(attempt, 20)))
        attempt += 1
        return max(Self.minimumDelay, cap * min(max(random, 0), 1))
    }

    /// After a connection that delivered data: the next drop starts from the first cap.
    public mutating func reset() { attempt = 0 }
}
