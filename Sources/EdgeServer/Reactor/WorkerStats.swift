import Synchronization

/// One reactor's counters. Only the owning reactor writes them, with a plain load and
/// store (relaxed atomics compile to ordinary moves, no locked read-modify-write), and
/// readers on other threads (health, metrics) load them: nothing shared is contended.
final class WorkerStats: Sendable {
    /// Open WebSocket sessions.
    let webSocketsOpen = Atomic<Int>(0)
    /// Sockets of any kind held by the reactor.
    let socketsOpen = Atomic<Int>(0)
    /// WebSocket sessions ever opened.
    let webSocketsTotal = Atomic<UInt64>(0)
    let httpRequests = Atomic<UInt64>(0)
    let messagesReceived = Atomic<UInt64>(0)
    let messagesSent = Atomic<UInt64>(0)
    let bytesSent = Atomic<UInt64>(0)
    /// Connections that ended in a protocol failure, a socket error or a timeout.
    let connectionErrors = Atomic<UInt64>(0)
    /// Client messages that could not be parsed (bad JSON, wrong shape).
    let parseErrors = Atomic<UInt64>(0)
    let upgradesRejected = Atomic<UInt64>(0)
    let handshakeTimeouts = Atomic<UInt64>(0)
    let idleTimeouts = Atomic<UInt64>(0)
    /// Clients that resumed (URL or Subscribe), recovered or not.
    let resumes = Atomic<UInt64>(0)
    let resumesRecovered = Atomic<UInt64>(0)
    /// Frames dropped for slow consumers by conflation.
    let conflated = Atomic<UInt64>(0)
    /// Slow consumers closed with 1013.
    let slowConsumerDisconnects = Atomic<UInt64>(0)
    /// Deliveries that failed: a write error or a 1013 close.
    let broadcastFailures = Atomic<UInt64>(0)
    /// Bytes queued for blocked subscribers at the end of the last pass.
    let backlogBytes = Atomic<Int>(0)
    /// Frames in the resume history.
    let historyMessages = Atomic<Int>(0)
    let framesReceived = Atomic<UInt64>(0)
    /// TLS handshakes completed, by version (index 0: TLS 1.2, 1: TLS 1.3).
    let tlsHandshakes: InlineArray<2, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }
    /// TLS handshakes refused or broken off (bad version, no shared cipher, garbage, h2 only).
    let tlsHandshakeFailures = Atomic<UInt64>(0)
    /// Established TLS connections closed for a bad record or an alert.
    let tlsRecordFailures = Atomic<UInt64>(0)
    /// Plain-text HTTP requests on the TLS port, answered 400.
    let tlsPlaintextRequests = Atomic<UInt64>(0)
    /// Token checks on upgrades and snapshots, by result (`AuthResult`).
    let authResults: InlineArray<13, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }
    /// Token checks answered by the reactor's cache of verified tokens.
    let tokenCacheHits = Atomic<UInt64>(0)
    /// In-band `Refresh` messages accepted and refused.
    let tokenRefreshes = Atomic<UInt64>(0)
    let tokenRefreshesRefused = Atomic<UInt64>(0)
    /// Connections closed 4001 because their token expired without a refresh.
    let tokenExpiryCloses = Atomic<UInt64>(0)
    /// Subscriptions refused for going beyond the token's channels or symbols.
    let forbiddenSubscriptions = Atomic<UInt64>(0)
    /// Refusals by limit (`LimitKind`).
    let limitRefusals: InlineArray<5, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }
    /// Connections closed 1008 for flooding messages far past their rate.
    let floodCloses = Atomic<UInt64>(0)
    /// Connections that negotiated permessage-deflate.
    let deflateSessions = Atomic<UInt64>(0)
    /// Broadcast frames this reactor compressed (once each, shared by its subscribers).
    let framesCompressed = Atomic<UInt64>(0)
    /// Client messages inflated.
    let messagesInflated = Atomic<UInt64>(0)
    /// max_frequency: held updates superseded before release, counted per member that
    /// would have received them; updates released at a tick (once per group); group
    /// updates written to members.
    let rateConflated = Atomic<UInt64>(0)
    let rateReleases = Atomic<UInt64>(0)
    let rateDeliveries = Atomic<UInt64>(0)
    /// Writes held back because the connection reached --max-bandwidth.
    let bandwidthLimited = Atomic<UInt64>(0)
    /// Publish requests the reactor refused before the publisher saw them, by reason.
    let publishRejections: InlineArray<3, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }

    @inline(__always)
    func countPublishRejection(_ reason: PublishRejection) {
        publishRejections[reason.rawValue].bump()
    }

    /// Upper bounds of the broadcast latency buckets, in nanoseconds (100 us to 5 s).
    static let latencyBounds: [UInt64] = [
        100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000,
        50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000,
    ]
    /// Per-bucket counts (not cumulative); the last one is +Inf.
    let latencyBuckets: InlineArray<16, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }
    let latencySumNanoseconds = Atomic<UInt64>(0)
    let latencyCount = Atomic<UInt64>(0)

    /// Records one frame's publish-to-socket time on this reactor.
    @inline(__always)
    func observeLatency(nanoseconds: UInt64) {
        var i = 0
        let bounds = Self.latencyBounds
        while i < bounds.count && nanoseconds > bounds[i] { i += 1 }
        latencyBuckets[i].bump()
        latencySumNanoseconds.bump(nanoseconds)
        latencyCount.bump()
    }
}

/// Why a reactor refused a publish (metrics label `reason`).
enum PublishRejection: Int, CaseIterable {
    case unauthorized, forbidden, unsupportedMediaType

    var label: String {
        switch self {
        case .unauthorized: return "unauthorized"
        case .forbidden: return "forbidden"
        case .unsupportedMediaType: return "unsupported_media_type"
        }
    }
}

extension Atomic where Value == UInt64 {
    /// Single-writer increment: no read-modify-write instruction.
    @inline(__always)
    func bump(_ n: UInt64 = 1) {
        store(load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}

extension Atomic where Value == Int {
    @inline(__always)
    func bump(_ n: Int) {
        store(load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}
