#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
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
/// - Connection: `ws://` only (no TLS yet: `wss://` throws `unsupportedScheme`; put a
///   TLS-terminating proxy in front or use a trusted network). The client does the RFC 6455
///   handshake itself, masks every frame, answers pings and does the closing handshake.
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
    }

    public nonisolated let endpoint: TickwireEndpoint
    public nonisolated let configuration: Configuration
    private nonisolated let hub = EventHub()

    /// The connection state (also reported as `.state` events).
    public private(set) var state = ConnectionState.disconnected
    /// The subscription in effect, or requested for the next connection.
    public private(set) var subscription: TickwireSubscription
    /// Failed attempts since the stream was last in step (0 while healthy).
    public private(set) var reconnectAttempt = 0
    private var counters = Statistics()

    /// The epoch of the state delivered so far (nil before the first sync).
    public var epoch: String? { sync.epoch }
    /// The highest broadcast seq delivered within `epoch` (or the seq of the last snapshot).
    public var lastSeq: UInt64? { sync.seq }
    public var statistics: Statistics {
        var s = counters
        s.duplicatesDropped = sync.duplicatesDropped
        return s
    }

    private var sync: StreamSynchronizer
    private let codec = MessageCodec()
    private var connection: WebSocketConnection?
    /// Bumped per connection: late events, timers and snapshot results of an earlier
    /// connection are recognised and ignored.
    private var generation = 0
    private var shouldReconnect = false
    private var isShutDown = false
    private var reconnectTask: Task<Void, Never>?
    private var tickerTask: Task<Void, Never>?
    private var readerTask: Task<Void, Never>?
    private var snapshotToken = 0
    private var serverHeartbeat: Duration?
    private var lastPingAt: UInt64 = 0
    /// When to stop waiting for `Connected` or for the resume confirmation.
    private var confirmationDeadline: UInt64?

    /// A client for `url` (`ws://host:port/ws`). Nothing happens until `connect()`.
    public init(url: String, configuration: Configuration = Configuration()) throws(TickwireClientError) {
        self.init(endpoint: try TickwireEndpoint(url: url), configuration: configuration)
    }

    public init(endpoint: TickwireEndpoint, configuration: Configuration = Configuration()) {
        self.endpoint = endpoint
        self.configuration = configuration
        self.subscription = configuration.subscription
        self.sync = StreamSynchronizer(loadSnapshotOnFirstConnect: configuration.loadSnapshotOnFirstConnect)
    }

    deinit {
        reconnectTask?.cancel()
        tickerTask?.cancel()
        readerTask?.cancel()
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
    /// channel, `nil` or empty symbols every symbol. Remembered across reconnects. When
    /// connected, the server's confirmation is followed by a snapshot reload, because newly
    /// added channels or symbols have state that only the snapshot holds.
    public func subscribe(channels: [TickwireChannel]? = nil, symbols: [String]? = nil) throws(TickwireClientError) {
        if let bad = symbols?.first(where: { $0.isEmpty || $0.utf8.count > 64 }) {
            throw .invalidSubscription("symbol '\(bad.prefix(64))' must be 1 to 64 bytes")
        }
        let next = TickwireSubscription(channels: channels.map(Set.init), symbols: symbols)
        subscription = next
        // Not connected (or the socket just went): the next connection's URL carries it.
        guard state == .connected else { return }
        var data: [String: [String]] = ["symbols": next.symbols ?? []]
        if let channels = next.orderedChannels { data["channels"] = channels.map(\.typeName) }
        if (try? send(type: "Subscribe", data: data)) != nil { sync.subscriptionChangeSent() }
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

    // MARK: - Connection lifecycle

    private func send(encoded: [UInt8]) throws(TickwireClientError) {
        guard !isShutDown else { throw .shutDown }
        guard state == .connected, let connection, connection.send(text: encoded) else { throw .notConnected }
    }

    private func openConnection() {
        endConnection(closeWith: .normalClosure, reason: "reopening")
        let gen = generation
        let resume = sync.resumePoint
        sync.connectionStarted(resuming: resume != nil)
        let target = endpoint.target(resume: resume, subscription: subscription)
        setState(.connecting)
        let connection = WebSocketConnection(endpoint: endpoint, target: target, settings: .init(
            connectTimeout: configuration.connectTimeout, closeTimeout: configuration.closeTimeout,
            maxMessageSize: configuration.maxMessageSize))
        self.connection = connection
        let events = connection.events
        readerTask = Task { [weak self] in
            for await event in events {
                guard let self else { return }
                await self.handle(event, generation: gen)
            }
        }
    }

    /// Forgets the current connection: closes it (gracefully with `closeWith`, else at
    /// once), stops its timers, and makes its late events stale.
    private func endConnection(closeWith code: CloseCode?, reason: String) {
        generation += 1
        tickerTask?.cancel()
        tickerTask = nil
        readerTask?.cancel()
        readerTask = nil
        if let connection {
            if let code { connection.close(code: code, reason: reason) } else { connection.abort() }
        }
        connection = nil
        confirmationDeadline = nil
        snapshotToken += 1
        sync.connectionEnded()
    }

    /// The connection of `gen` is gone: reconnect after the backoff delay, or give up.
    private func connectionLost(_ gen: Int, _ diagnostic: TickwireDiagnostic?, closeWith code: CloseCode? = nil) {
        guard gen == generation else { return }
        endConnection(closeWith: code, reason: diagnostic?.kind.rawValue ?? "")
        if let diagnostic { emit(.diagnostic(diagnostic)) }
        guard shouldReconnect else {
            setState(.disconnected)
            return
        }
        let attempt = reconnectAttempt + 1
        guard configuration.reconnect.allows(attempt: attempt) else {
            shouldReconnect = false
            emit(.diagnostic(TickwireDiagnostic(.gaveUp, "gave up after \(reconnectAttempt) reconnection attempts; call connect() to try again")))
            setState(.disconnected)
            return
        }
        reconnectAttempt = attempt
        counters.reconnects += 1
        let delay = configuration.reconnect.delay(forAttempt: attempt)
        setState(.reconnecting)
        emit(.reconnectScheduled(attempt: attempt, delay: delay))
        let due = generation
        reconnectTask = Task { [weak self] in
            try? await Task.sleep(for: delay)
            if Task.isCancelled { return }
            await self?.reconnectDue(due)
        }
    }

    private func reconnectDue(_ gen: Int) {
        guard gen == generation, shouldReconnect, state == .reconnecting else { return }
        reconnectTask = nil
        openConnection()
    }

    private func handle(_ event: WebSocketConnection.Event, generation gen: Int) {
        guard gen == generation else { return }
        switch event {
        case .opened:
            let now = Posix.monotonicNanoseconds()
            lastPingAt = now
            // Connected is the server's first message; without it the stream has no known
            // start, so after a while the client syncs from the snapshot anyway.
            confirmationDeadline = now + Posix.nanoseconds(configuration.confirmTimeout)
            setState(.connected)
            startTicker(gen)
        case .text(let bytes):
            counters.messagesReceived += 1
            switch codec.decodeMessage(bytes) {
            case .failure(let diagnostic):
                counters.invalidMessages += 1
                emit(.diagnostic(diagnostic))
            case .success(let envelope):
                if case .connected(let info) = envelope.payload {
                    serverHeartbeat = info.heartbeatIntervalMs > 0 ? .milliseconds(info.heartbeatIntervalMs) : nil
                    confirmationDeadline = Posix.monotonicNanoseconds() + Posix.nanoseconds(configuration.confirmTimeout)
                }
                perform(sync.receive(envelope), gen)
            }
        case .binary(let count):
            counters.invalidMessages += 1
            emit(.diagnostic(TickwireDiagnostic(.unexpectedBinary, "skipped a \(count)-byte binary message: the stream is JSON text")))
        case .closed(let ending):
            connection = nil
            connectionLost(gen, Self.diagnostic(for: ending, endpoint: endpoint))
        }
    }

    private func perform(_ actions: [StreamSynchronizer.Action], _ gen: Int) {
        for action in actions {
            guard gen == generation else { return }
            switch action {
            case .deliver(let message):
                emit(.message(message))
            case .loadSnapshot:
                confirmationDeadline = nil
                startSnapshotLoad(gen)
            case .deliverSnapshot(let snapshot):
                counters.snapshotsLoaded += 1
                for entry in snapshot.skippedEntries {
                    emit(.diagnostic(TickwireDiagnostic(.invalidMessage, "skipped an invalid snapshot entry \(entry)")))
                }
                emit(.snapshot(snapshot.filtered(by: subscription)))
            case let .synchronized(epoch, seq, source):
                confirmationDeadline = nil
                // Only a connection that got back in step resets the backoff: one that is
                // accepted and then fails at once keeps backing off.
                reconnectAttempt = 0
                emit(.synchronized(epoch: epoch, seq: seq, source: source))
            }
        }
    }

    // MARK: - Heartbeat

    private var heartbeatInterval: Duration {
        configuration.heartbeatInterval ?? serverHeartbeat ?? .seconds(30)
    }

    private var staleTimeout: Duration {
        configuration.staleTimeout ?? heartbeatInterval * 2.5
    }

    /// One ticker per connection sends pings and watches for silence and deadlines.
    private func startTicker(_ gen: Int) {
        tickerTask?.cancel()
        tickerTask = Task { [weak self] in
            while !Task.isCancelled {
                guard let period = await self?.tick(gen) else { return }
                try? await Task.sleep(for: period)
            }
        }
    }

    /// Returns when to tick next, or nil when the connection is gone.
    private func tick(_ gen: Int) -> Duration? {
        guard gen == generation, state == .connected, let connection else { return nil }
        let now = Posix.monotonicNanoseconds()
        let heartbeat = heartbeatInterval
        let stale = staleTimeout
        let last = connection.lastReceived.load(ordering: .relaxed)
        if now > last, now - last > Posix.nanoseconds(stale) {
            let silent = Double(now - last) / 1e9
            connectionLost(gen, TickwireDiagnostic(.stale, "nothing received for \(Self.format(silent)) s (stale timeout \(stale)); reconnecting"),
                           closeWith: CloseCode(rawValue: 4000))
            return nil
        }
        if let deadline = confirmationDeadline, now >= deadline {
            confirmationDeadline = nil
            perform(sync.confirmationTimedOut(), gen)
        }
        if now - lastPingAt >= Posix.nanoseconds(heartbeat) {
            lastPingAt = now
            try? send(type: "Ping")
        }
        let period = Swift.min(heartbeat, stale) / 5
        return Swift.min(Swift.max(period, .milliseconds(50)), .seconds(1))
    }

    // MARK: - Snapshot

    private func startSnapshotLoad(_ gen: Int) {
        snapshotToken += 1
        let token = snapshotToken
        Task { [weak self] in await self?.loadSnapshot(gen, token, attempt: 1) }
    }

    private func loadSnapshot(_ gen: Int, _ token: Int, attempt: Int) async {
        let exchange = HTTPExchange(host: endpoint.host, port: endpoint.port, hostHeader: endpoint.hostHeader,
                                    timeout: configuration.snapshotTimeout, maxBodyBytes: configuration.maxSnapshotBytes)
        let target = configuration.snapshotPath ?? endpoint.defaultSnapshotPath
        let result = await DedicatedThread.run {
            Result { () throws(TransportError) in
                try exchange.perform(method: "GET", target: target, headers: [("Accept", "application/json")])
            }
        } ?? .failure(.io("pthread_create", errno: EAGAIN))
        guard gen == generation, token == snapshotToken else { return }
        let problem: TickwireDiagnostic
        switch result {
        case .failure(let error):
            problem = TickwireDiagnostic(.snapshotFailed, "GET \(target): \(error)")
        case .success(let response) where response.status != 200:
            problem = TickwireDiagnostic(.snapshotFailed, "GET \(target): HTTP \(response.status)")
        case .success(let response):
            do {
                let snapshot = try codec.decodeSnapshot(response.body)
                switch sync.snapshotLoaded(snapshot) {
                case .ignored:
                    return
                case .applied(let actions):
                    perform(actions, gen)
                    return
                case .mismatch(let why):
                    problem = TickwireDiagnostic(.snapshotMismatch, why)
                }
            } catch {
                problem = TickwireDiagnostic(.snapshotFailed, "GET \(target): \(DecodingProblem.describe(error))")
            }
        }
        if attempt < configuration.snapshotRetries {
            try? await Task.sleep(for: .milliseconds(250 * attempt))
            guard gen == generation, token == snapshotToken else { return }
            await loadSnapshot(gen, token, attempt: attempt + 1)
        } else {
            var final = problem
            final.message += " (after \(attempt) tries); reconnecting"
            connectionLost(gen, final, closeWith: CloseCode(rawValue: 4000))
        }
    }

    // MARK: - Events

    private func setState(_ next: ConnectionState) {
        guard next != state else { return }
        state = next
        emit(.state(next))
    }

    private func emit(_ event: TickwireEvent) {
        hub.emit(event)
    }

    static func diagnostic(for ending: WebSocketConnection.Ending, endpoint: TickwireEndpoint) -> TickwireDiagnostic? {
        guard let error = ending.error else {
            guard let code = ending.serverCloseCode else { return nil }
            var why = "the server closed the connection (\(code))"
            switch code {
            case CloseCode.goingAway.rawValue: why += ": going away (shutdown or idle timeout)"
            case CloseCode.tryAgainLater.rawValue: why += ": this client fell too far behind (slow consumer)"
            case CloseCode.messageTooBig.rawValue: why += ": a message was too big"
            default: break
            }
            return TickwireDiagnostic(.connectionLost, why + "; reconnecting", closeCode: code)
        }
        if ending.wasOpen {
            return TickwireDiagnostic(.connectionLost, "\(error); reconnecting", closeCode: ending.serverCloseCode)
        }
        if case .handshake = error { return TickwireDiagnostic(.handshakeFailed, "\(endpoint): \(error)") }
        return TickwireDiagnostic(.connectFailed, "\(endpoint): \(error)")
    }

    static func format(_ seconds: Double) -> String {
        let tenths = Int((seconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    // MARK: - Test hooks

    /// Drops the TCP connection without a closing handshake, as a lost network would.
    func dropConnectionForTesting() {
        connection?.abort()
    }

    /// Replaces the resume point (e.g. with an epoch the server does not know).
    func setResumePointForTesting(epoch: String, seq: UInt64) {
        sync.setResumePointForTesting(epoch: epoch, seq: seq)
    }
}
