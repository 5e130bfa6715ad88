#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

/// A Tickwire stream client (PROTOCOL.md, FR-WEBSOCKET-003) for apps and services: the
/// browser client's semantics in Swift.
///
/// ```swift
/// let client = try TickwireClient(url: "ws://127.0.0.1:8080/ws")
/// let events = client.events                  // subscribe to events before connecting
/// await client.connect()
/// for await event in events {
///     switch event {
///     case .snapshot(let snapshot): reset(from: snapshot)
///     case .message(let m):
///         if case .tradeExecuted(let trade) = m.payload { show(trade, seq: m.seq) }
///     case .state(let state): status = state
///     default: break
///     }
/// }
/// ```
///
/// - Connection: `ws://` or `wss://` (TLS 1.2+, the certificate verified for the host:
///   `Configuration.tls`). The client does the RFC 6455 handshake itself, masks every
///   frame, answers pings, does the closing handshake, and offers permessage-deflate.
/// - Tokens: `Configuration.tokenProvider` is asked before each connection and when the
///   server asks for a refresh; after close 4001 (token expired) the next attempt gets a
///   new one.
/// - States: disconnected → connecting → connected → reconnecting (→ disconnected after
///   giving up), with exponential backoff and full jitter (`ReconnectPolicy`).
///   `disconnect()` stops reconnection; `connect()` starts again with a fresh budget.
/// - Heartbeat: `{"type":"Ping"}` every heartbeat interval; a link silent for the stale
///   timeout is replaced.
/// - Lossless resume: the client remembers the epoch and the highest broadcast seq it
///   delivered and reconnects with `?epoch=E&since=S`; when the server cannot replay it
///   loads `GET /api/snapshot` (delivered as `.snapshot`) and continues from its seq. No
///   broadcast message is delivered twice, and none is skipped except those a snapshot
///   replaced.
///
/// Concurrency: an actor. Socket I/O runs on one plain thread per connection (and one per
/// snapshot request), blocked in `poll`, never on the cooperative pool; the actor only
/// decodes messages and runs timers, so it is safe to use from any task.
///
/// This file holds the state and the public API; each concern is an extension in
/// TickwireClient+Lifecycle/TokenRefresh/Heartbeat/Snapshot/Events/TestHooks.swift.
public actor TickwireClient: AsyncSequence {
    public typealias Element = TickwireEvent
    public typealias Failure = Never

    /// Counters for monitoring and tests.
    public struct Statistics: Sendable, Hashable {
        /// Text messages received, valid or not.
        public var messagesReceived = 0
        /// Messages skipped because they did not decode.
        public var invalidMessages = 0
        /// Broadcast messages dropped because their seq was already applied.
        public var duplicatesDropped = 0
        public var snapshotsLoaded = 0
        /// Reconnection attempts scheduled.
        public var reconnects = 0
        /// Messages that arrived deflated (permessage-deflate) and were inflated.
        public var compressedMessagesReceived = 0
        /// `Refresh` messages sent with a new token.
        public var tokenRefreshes = 0
    }

    public nonisolated let endpoint: TickwireEndpoint
    public nonisolated let configuration: Configuration
    nonisolated let hub = EventHub()
    /// `wss://`: the trust settings, loaded once; nil for `ws://`.
    nonisolated let tls: Result<TLSClientContext, TransportError>?

    /// The connection state (also reported as `.state` events).
    public internal(set) var state = ConnectionState.disconnected
    /// The subscription in effect, or requested for the next connection.
    public internal(set) var subscription: TickwireSubscription
    /// Failed attempts since the stream was last in step (0 while healthy).
    public internal(set) var reconnectAttempt = 0
    var counters = Statistics()

    /// The epoch of the state delivered so far (nil before the first sync).
    public var epoch: String? { sync.epoch }
    /// The highest broadcast seq delivered within `epoch` (or the seq of the last snapshot).
    public var lastSeq: UInt64? { sync.seq }
    public var statistics: Statistics {
        var s = counters
        s.duplicatesDropped = sync.duplicatesDropped
        return s
    }

    var sync: StreamSynchronizer
    let codec = MessageCodec()
    var connection: WebSocketConnection?
    /// Bumped per connection: late events, timers and snapshot results of an earlier
    /// connection are recognised and ignored.
    var generation = 0
    var shouldReconnect = false
    var isShutDown = false
    var reconnectTask: Task<Void, Never>?
    var tickerTask: Task<Void, Never>?
    var readerTask: Task<Void, Never>?
    var snapshotToken = 0
    var serverHeartbeat: Duration?
    var lastPingAt: UInt64 = 0
    /// When to stop waiting for `Connected` or for the resume confirmation.
    var confirmationDeadline: UInt64?
    /// The token of the current connection (or the newest sent in a `Refresh`): also the
    /// snapshot's `Authorization`.
    var currentToken: String?
    /// The provider's call for the next connection, while it runs.
    var tokenTask: Task<Void, Never>?
    /// Whether the last connection was closed with 4001 (token expired).
    var tokenExpired = false

    /// A client for `url` (`ws://host:port/ws` or `wss://...`). Nothing happens until
    /// `connect()`. Throws for a bad URL, or TLS settings that cannot be used.
    public init(url: String, configuration: Configuration = Configuration()) throws(TickwireClientError) {
        self.init(endpoint: try TickwireEndpoint(url: url), configuration: configuration)
        if case .failure(let error)? = tls { throw .tlsSetup(error.description) }
    }

    /// A client for `endpoint`. TLS settings that cannot be used are reported by
    /// `connect()` (a `tlsFailed` diagnostic), which then stays disconnected.
    public init(endpoint: TickwireEndpoint, configuration: Configuration = Configuration()) {
        self.endpoint = endpoint
        self.configuration = configuration
        self.subscription = configuration.subscription
        self.sync = StreamSynchronizer(loadSnapshotOnFirstConnect: configuration.loadSnapshotOnFirstConnect)
        if endpoint.secure {
            tls = Result { () throws(TransportError) in try TLSClientContext(caFile: configuration.tls.caFile) }
        } else {
            tls = nil
        }
    }

    deinit {
        reconnectTask?.cancel()
        tickerTask?.cancel()
        readerTask?.cancel()
        tokenTask?.cancel()
        connection?.close(code: .goingAway, reason: "client released")
        hub.finish()
    }

    // MARK: - Public API

    /// A new sequence of the client's events from now on. Each access makes an
    /// independent sequence; take it before `connect()` to see everything.
    public nonisolated var events: TickwireEvents {
        hub.makeStream(bufferingPolicy: configuration.eventBuffering)
    }

    /// `for await event in client`: the same as iterating a fresh `events`.
    public nonisolated func makeAsyncIterator() -> TickwireEvents.AsyncIterator {
        events.makeAsyncIterator()
    }

    /// Opens the connection (no-op while connecting or connected), resuming from the last
    /// delivered seq. After giving up, or while waiting to reconnect, it tries at once with
    /// a fresh attempt budget.
    public func connect() {
        guard !isShutDown else { return }
        if case .failure(let error)? = tls {
            emit(.diagnostic(TickwireDiagnostic(.tlsFailed, "cannot set up TLS: \(error); not connecting")))
            setState(.disconnected)
            return
        }
        shouldReconnect = true
        if state == .connected || state == .connecting { return }
        reconnectTask?.cancel()
        reconnectTask = nil
        reconnectAttempt = 0
        openConnection()
    }

    /// Closes the connection (closing handshake, code 1000) and stops reconnecting. The
    /// resume point is kept: a later `connect()` continues without a gap.
    public func disconnect() {
        shouldReconnect = false
        reconnectTask?.cancel()
        reconnectTask = nil
        reconnectAttempt = 0
        endConnection(closeWith: .normalClosure, reason: "client disconnect")
        setState(.disconnected)
    }

    /// `disconnect()`, then ends every event sequence; the client cannot be used again.
    public func shutdown() {
        disconnect()
        isShutDown = true
        hub.finish()
    }

    /// Replaces the subscription (PROTOCOL.md `Subscribe`): `nil` channels means every
    /// channel, `nil` or empty symbols every symbol. `maxFrequency` (updates per second
    /// per symbol and timeframe, > 0) throttles the conflatable channels to the newest value
    /// at that rate; nil is the full rate. Remembered across reconnects. When connected,
    /// the server's confirmation is followed by a snapshot reload, because newly added
    /// channels or symbols have state that only the snapshot holds.
    public func subscribe(channels: [TickwireChannel]? = nil, symbols: [String]? = nil, maxFrequency: Double? = nil) throws(TickwireClientError) {
        if let bad = symbols?.first(where: { $0.isEmpty || $0.utf8.count > 64 }) {
            throw .invalidSubscription("symbol '\(bad.prefix(64))' must be 1 to 64 bytes")
        }
        if let f = maxFrequency, !(f.isFinite && f > 0) {
            throw .invalidSubscription("maxFrequency must be a positive number of updates per second (got \(f))")
        }
        let next = TickwireSubscription(channels: channels.map(Set.init), symbols: symbols, maxFrequency: maxFrequency)
        subscription = next
        // Not connected (or the socket just went): the next connection carries it.
        guard state == .connected else { return }
        if (try? send(type: "Subscribe", data: next.subscribeData)) != nil { sync.subscriptionChangeSent() }
    }

    /// Removes channels and/or symbols from the subscription (PROTOCOL.md `Unsubscribe`).
    /// Removing symbols from an every-symbol subscription is an error (the server would
    /// reject it): subscribe to the symbols you want instead.
    public func unsubscribe(channels: [TickwireChannel] = [], symbols: [String] = []) throws(TickwireClientError) {
        var next = subscription
        if !channels.isEmpty {
            next.channels = (subscription.channels ?? Set(TickwireChannel.allCases)).subtracting(channels)
        }
        if !symbols.isEmpty {
            guard let current = subscription.symbols else {
                throw .invalidSubscription("this subscription covers every symbol; subscribe to the symbols you want instead of removing some")
            }
            let remaining = current.filter { !symbols.contains($0) }
            if remaining.isEmpty {
                // No symbols left means nothing left, not "every symbol" (as on the server).
                next.channels = []
                next.symbols = nil
            } else {
                next.symbols = remaining
            }
        }
        subscription = next
        guard state == .connected else { return }
        var data: [String: [String]] = [:]
        if !channels.isEmpty { data["channels"] = channels.map(\.typeName) }
        if !symbols.isEmpty { data["symbols"] = symbols }
        try? send(type: "Unsubscribe", data: data)
    }

    /// Sends `{"type": type}`. Use `subscribe`/`unsubscribe` for subscriptions, so that
    /// they survive reconnects.
    public func send(type: String) throws(TickwireClientError) {
        try send(encoded: codec.encodeMessageOrThrow(type: type, data: nil))
    }

    /// Sends `{"type": type, "data": data}`.
    public func send<Payload: Encodable & Sendable>(type: String, data: Payload) throws(TickwireClientError) {
        try send(encoded: codec.encodeMessageOrThrow(type: type, data: data))
    }
}
