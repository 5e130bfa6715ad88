import Reactor
import WireProtocol

/// A reactor's clock, read once per loop pass (after each poll) so that everything done in
/// one pass agrees on the time and no handler pays for a clock call.
final class ReactorClock {
    /// Monotonic milliseconds.
    private(set) var monotonic: UInt64 = 0
    /// Monotonic milliseconds modulo 2^32, the deadline lists' unit.
    private(set) var now: UInt32 = 0
    /// Wall-clock milliseconds since the epoch (message timestamps).
    private(set) var wall: UInt64 = 0
    /// The HTTP `Date` header value, rebuilt once a second.
    private(set) var httpDate = ""
    private var dateSecond: UInt64 = 0

    init() { refresh() }

    func refresh() {
        monotonic = monotonicMilliseconds()
        now = UInt32(truncatingIfNeeded: monotonic)
        wall = wallClockNanoseconds() / 1_000_000
        let second = wall / 1000
        if second != dateSecond {
            dateSecond = second
            httpDate = Timestamp.httpDate(secondsSinceEpoch: second)
        }
    }
}
