#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Exponential backoff between reconnection attempts (FR-WEBSOCKET-003):
/// `min(maxDelay, initialDelay * factor^(attempt-1))`, with full jitter by default.
public struct ReconnectPolicy: Sendable, Hashable {
    /// 1 s: long enough not to spin on a server that refuses at once, short enough that a
    /// dropped Wi-Fi or a proxy restart costs the user about a second.
    public var initialDelay: Duration = .seconds(1)
    /// 2: the delay doubles per failed attempt, the usual compromise between reacting fast
    /// and backing off from an overloaded server.
    public var factor: Double = 2
    /// 30 s: the spec's cap; waiting longer only delays recovery once the server is back.
    public var maxDelay: Duration = .seconds(30)
    /// 10: the spec's limit; with the defaults that is about 4 minutes of trying. `nil`
    /// never gives up (for services that must stay connected).
    public var maxAttempts: Int? = 10
    /// Full jitter (a uniformly random delay in `0 ..< computed`): when a server restarts,
    /// every client lost the connection at the same instant; jitter spreads their
    /// reconnections out instead of returning them in synchronized waves.
    public var jitter = true

    public init() {}

    public init(initialDelay: Duration, factor: Double = 2, maxDelay: Duration = .seconds(30), maxAttempts: Int? = 10, jitter: Bool = true) {
        self.initialDelay = initialDelay
        self.factor = factor
        self.maxDelay = maxDelay
        self.maxAttempts = maxAttempts
        self.jitter = jitter
    }

    /// The spec's schedule, 5 s, 10 s, 20 s, 30 s, 30 s ..., 10 attempts, without jitter.
    public static let specification = ReconnectPolicy(initialDelay: .seconds(5), jitter: false)

    /// The delay before attempt `attempt` (1-based). `random` returns a value in `0 ..< 1`;
    /// it is only consulted with `jitter`.
    public func delay(forAttempt attempt: Int, random: () -> Double = { Double.random(in: 0..<1) }) -> Duration {
        let base = initialDelay.seconds
        let exponent = Double(max(0, attempt - 1))
        var seconds = min(maxDelay.seconds, base * pow(factor, exponent))
        if !seconds.isFinite || seconds < 0 { seconds = maxDelay.seconds }
        if jitter { seconds *= min(max(random(), 0), 1) }
        return .nanoseconds(Int64((seconds * 1e9).rounded(.down)))
    }

    /// Whether attempt `attempt` (1-based) may still be made.
    public func allows(attempt: Int) -> Bool {
        maxAttempts.map { attempt <= $0 } ?? true
    }
}

extension TickwireClient {
    /// Client settings. Every default is the browser client's (tickwire.js), with its reason.
    public struct Configuration: Sendable {
        /// See `ReconnectPolicy`; `.specification` is FR-WEBSOCKET-003's fixed schedule.
        public var reconnect = ReconnectPolicy()

        /// nil: the server's `heartbeat_interval_ms` from `Connected` (the server knows its
        /// idle timeout), else 30 s (the spec's heartbeat). The client sends `{"type":"Ping"}`
        /// this often; the server's answer keeps the link visibly alive.
        public var heartbeatInterval: Duration?

        /// nil: 2.5 x the heartbeat interval, i.e. two missed heartbeats plus slack before a
        /// silent link (a dead NAT mapping, a suspended laptop) is called dead and replaced.
        public var staleTimeout: Duration?

        /// 10 s for TCP connect plus the WebSocket handshake: a black-holed address would
        /// otherwise hold an attempt for the kernel's minutes-long SYN timeout.
        public var connectTimeout: Duration = .seconds(10)

        /// 5 s: after a resume request the server answers `SubscriptionConfirmed` at once;
        /// when it does not (or sends no `Connected`), the client stops waiting and loads
        /// the snapshot rather than hold the stream in a buffer.
        public var confirmTimeout: Duration = .seconds(5)

        /// 2 s for our Close to be answered (RFC 6455 §7.1.1): enough on any live link, and
        /// a dead one must not hold `disconnect()`'s socket.
        public var closeTimeout: Duration = .seconds(2)

        /// True: the first connection loads `GET /api/snapshot`, so the application starts
        /// from the current state rather than from whatever moves next. False: start with
        /// live messages only (for consumers that need events, not state). After a lost
        /// connection the snapshot is always loaded when the server cannot replay.
        public var loadSnapshotOnFirstConnect = true

        /// 3 tries (250 ms, 500 ms apart), then the connection is dropped and resumed by the
        /// reconnect policy: a snapshot is one small request, so failing it again and again
        /// means the server is unwell.
        public var snapshotRetries = 3

        /// 10 s for one snapshot request: it is served from memory, so a slow one is stuck.
        public var snapshotTimeout: Duration = .seconds(10)

        /// nil: `/api/snapshot` beside the WebSocket path (`/ws` -> `/api/snapshot`,
        /// `/edge/ws` -> `/edge/api/snapshot`), as behind a path-routing proxy.
        public var snapshotPath: String?

        /// 16 MiB: protocol messages are a few hundred bytes and a publish body is at most
        /// 4 MiB by default, so a larger message is a broken or hostile peer, not data worth
        /// holding in memory (RFC 6455 §10.4). Over it the client closes with 1009.
        public var maxMessageSize = 16 << 20

        /// 64 MiB for a snapshot body: it holds one message per symbol and timeframe plus 40
        /// recent ones, so even thousands of symbols fit many times over.
        public var maxSnapshotBytes = 64 << 20

        /// Unbounded: dropping events would silently break the no-gap guarantee; a consumer
        /// that cannot keep up should conflate on its side (or choose a bounded policy here
        /// and accept losses).
        public var eventBuffering: AsyncStream<TickwireEvent>.Continuation.BufferingPolicy = .unbounded

        /// The initial subscription (nil: everything); `subscribe(...)` changes it.
        public var subscription = TickwireSubscription.everything

        /// `wss://` settings (the server's certificate is always verified).
        public var tls = TLSSettings()

        /// Access tokens (PROTOCOL.md "Authentication"), the Swift twin of the browser
        /// client's `getToken()`: called before every connection attempt and whenever the
        /// server asks for a refresh (`RefreshToken`), so a token expired at close 4001 is
        /// replaced before the client reconnects. It must return a JWT quickly (an attempt
        /// waits for it at most `connectTimeout`); a throw is reported and the attempt retried
        /// by the reconnect policy. The token travels as the `bearer.<token>` entry of
        /// `Sec-WebSocket-Protocol` (beside `tickwire`), never in the URL, and as
        /// `Authorization: Bearer` for `/api/snapshot`. nil: no token.
        public var tokenProvider: (@Sendable () async throws -> String)?

        /// True: offer permessage-deflate (RFC 7692), which the server then uses for
        /// messages of 128 bytes or more. Market data is repetitive JSON, so the wire
        /// shrinks to a fraction for a little CPU on both ends; false for links where
        /// bandwidth costs nothing and CPU does. The message-size limit still applies to the
        /// inflated size (1009 past it).
        public var compression = true

        public init() {}
    }

    /// Trust settings for `wss://`. TLS 1.2 or 1.3 only; the server's certificate must chain
    /// to a trusted CA and name the URL's host (DNS name or IP address; SNI is sent for
    /// names). Verification cannot be turned off: a client that skips it trusts anyone on
    /// the path, which is no better than `ws://`.
    public struct TLSSettings: Sendable, Hashable {
        /// A PEM file of the CA certificate(s) to trust instead of the system store: a private
        /// CA, or the server's own self-signed certificate. nil: the system's trust store.
        public var caFile: String?

        public init(caFile: String? = nil) {
            self.caFile = caFile
        }
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
