// Over 500 lines, on purpose for now: the lifecycle, token refresh, heartbeat and snapshot
// sections all share the client's private, lock-protected state; moving them to other files
// would make that state module-visible. The planned cut (next session) follows the MARK
// sections: Lifecycle, TokenRefresh, Heartbeat, Snapshot, each an extension in its own file.
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
    private nonisolated let hub = EventHub()
    /// `wss://`: the trust settings, loaded once; nil for `ws://`.
    private nonisolated let tls: Result<TLSClientContext, TransportError>?

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
    /// The token of the current connection (or the newest sent in a `Refresh`): also the
    /// snapshot's `Authorization`.
    private var currentToken: String?
    /// The provider's call for the next connection, while it runs.
    private var tokenTask: Task<Void, Never>?
    /// Whether the last connection was closed with 4001 (token expired).
    private var tokenExpired = false

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

    // MARK: - Connection lifecycle

    private func send(encoded: [UInt8]) throws(TickwireClientError) {
        guard !isShutDown else { throw .shutDown }
        guard state == .connected, let connection, connection.send(text: encoded) else { throw .notConnected }
    }

    private func openConnection() {
        endConnection(closeWith: .normalClosure, reason: "reopening")
        let gen = generation
        setState(.connecting)
        currentToken = nil
        guard let provider = configuration.tokenProvider else {
            startConnection(gen, token: nil)
            return
        }
        // The token first (a new one after 4001), bounded like the rest of an attempt.
        let timeout = configuration.connectTimeout
        let why = tokenExpired ? " after the token expired" : ""
        tokenTask = Task { [weak self] in
            let result = await Self.fetchToken(provider, timeout: timeout)
            await self?.tokenFetched(result, gen, why: why)
        }
    }

    /// Calls the provider; a missing answer after `timeout` is a failure (its late result is
    /// ignored: the attempt has moved on).
    private static func fetchToken(_ provider: @escaping @Sendable () async throws -> String, timeout: Duration) async -> Result<String, TickwireDiagnostic> {
        let answered = FirstAnswer()
        return await withCheckedContinuation { (continuation: CheckedContinuation<Result<String, TickwireDiagnostic>, Never>) in
            // Whichever finishes first answers; the other finds it answered and stays quiet.
            let finish: @Sendable (Result<String, TickwireDiagnostic>) -> Void = { result in
                if answered.claim() { continuation.resume(returning: result) }
            }
            let timer = Task {
                do { try await Task.sleep(for: timeout) } catch { return }
                finish(.failure(TickwireDiagnostic(.tokenFailed, "the token provider did not answer within \(timeout)")))
            }
            Task {
                do {
                    let token = try await provider()
                    finish(Self.checkedToken(token))
                } catch {
                    finish(.failure(TickwireDiagnostic(.tokenFailed, "the token provider failed: \(error)")))
                }
                timer.cancel()
            }
        }
    }

    /// A token must fit a `Sec-WebSocket-Protocol` entry (RFC 7230 tchar; a JWT always does):
    /// anything else could break or inject header lines.
    static func checkedToken(_ token: String) -> Result<String, TickwireDiagnostic> {
        guard !token.isEmpty, token.utf8.count <= 8192 else {
            return .failure(TickwireDiagnostic(.tokenFailed, "the token provider returned \(token.isEmpty ? "an empty token" : "a token over 8 KiB")"))
        }
        let allowed = Set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        guard token.utf8.allSatisfy(allowed.contains) else {
            return .failure(TickwireDiagnostic(.tokenFailed, "the token provider returned a token with characters a JWT never has (spaces, quotes, line breaks...)"))
        }
        return .success(token)
    }

    private func tokenFetched(_ result: Result<String, TickwireDiagnostic>, _ gen: Int, why: String) {
        guard gen == generation, state == .connecting, shouldReconnect else { return }
        tokenTask = nil
        switch result {
        case .success(let token):
            startConnection(gen, token: token)
        case .failure(var diagnostic):
            diagnostic.message += why + "; retrying"
            connectionLost(gen, diagnostic)
        }
    }

    private func startConnection(_ gen: Int, token: String?) {
        guard gen == generation else { return }
        tokenExpired = false
        currentToken = token
        let resume = sync.resumePoint
        sync.connectionStarted(resuming: resume != nil)
        let target = endpoint.target(resume: resume, subscription: subscription)
        // `tickwire` beside the token: the server answers it (PROTOCOL.md "Authentication").
        let protocols = token.map { ["tickwire", "bearer." + $0] } ?? []
        let tlsContext: TLSClientContext?
        if case .success(let context)? = tls { tlsContext = context } else { tlsContext = nil }
        let connection = WebSocketConnection(endpoint: endpoint, target: target, settings: .init(
            connectTimeout: configuration.connectTimeout, closeTimeout: configuration.closeTimeout,
            maxMessageSize: configuration.maxMessageSize, tls: tlsContext, protocols: protocols,
            offersCompression: configuration.compression))
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
        tokenTask?.cancel()
        tokenTask = nil
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
            // The URL carries channels and symbols; the frequency travels in a Subscribe.
            // No snapshot reload follows it: the stream's content is the same, only its pace.
            if subscription.maxFrequency != nil, let connection {
                _ = try? connection.send(text: codec.encodeMessageOrThrow(type: "Subscribe", data: subscription.subscribeData))
            }
            let now = Posix.monotonicNanoseconds()
            lastPingAt = now
            // Connected is the server's first message; without it the stream has no known
            // start, so after a while the client syncs from the snapshot anyway.
            confirmationDeadline = now + Posix.nanoseconds(configuration.confirmTimeout)
            setState(.connected)
            startTicker(gen)
        case .text(let bytes, let compressed):
            counters.messagesReceived += 1
            if compressed { counters.compressedMessagesReceived += 1 }
            switch codec.decodeMessage(bytes) {
            case .failure(let diagnostic):
                counters.invalidMessages += 1
                emit(.diagnostic(diagnostic))
            case .success(let envelope):
                if case .connected(let info) = envelope.payload {
                    serverHeartbeat = info.heartbeatIntervalMs > 0 ? .milliseconds(info.heartbeatIntervalMs) : nil
                    confirmationDeadline = Posix.monotonicNanoseconds() + Posix.nanoseconds(configuration.confirmTimeout)
                }
                // At once, whatever the stream's sync phase: the deadline is the server's.
                if case .refreshToken(let request) = envelope.payload { refreshToken(request, gen) }
                perform(sync.receive(envelope), gen)
            }
        case .binary(let count):
            counters.invalidMessages += 1
            emit(.diagnostic(TickwireDiagnostic(.unexpectedBinary, "skipped a \(count)-byte binary message: the stream is JSON text")))
        case .closed(let ending):
            connection = nil
            if ending.serverCloseCode == Self.tokenExpiredCloseCode { tokenExpired = true }
            connectionLost(gen, Self.diagnostic(for: ending, endpoint: endpoint))
        }
    }

    // MARK: - Token refresh

    /// PROTOCOL.md: "token expired" — get a new token before reconnecting.
    static let tokenExpiredCloseCode: UInt16 = 4001

    /// The server asked for a new token: get one and send `Refresh`. Without a provider the
    /// request goes unanswered, and the connection is closed at `exp` (4001).
    private func refreshToken(_ request: TokenRefreshRequest, _ gen: Int) {
        guard let provider = configuration.tokenProvider else { return }
        let timeout = configuration.connectTimeout
        Task { [weak self] in
            let result = await Self.fetchToken(provider, timeout: timeout)
            await self?.tokenRefreshed(result, request, gen)
        }
    }

    private func tokenRefreshed(_ result: Result<String, TickwireDiagnostic>, _ request: TokenRefreshRequest, _ gen: Int) {
        guard gen == generation, state == .connected else { return }
        switch result {
        case .success(let token):
            struct Refresh: Encodable, Sendable { var token: String }
            guard (try? send(type: "Refresh", data: Refresh(token: token))) != nil else { return }
            currentToken = token
            counters.tokenRefreshes += 1
        case .failure(var diagnostic):
            diagnostic.message += " on the server's refresh request; the connection closes when the token expires (\(request.expiresAt)) and reconnects with a new one"
            emit(.diagnostic(diagnostic))
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
        var tlsContext: TLSClientContext?
        if case .success(let context)? = tls { tlsContext = context }
        let exchange = HTTPExchange(host: endpoint.host, port: endpoint.port, hostHeader: endpoint.hostHeader,
                                    timeout: configuration.snapshotTimeout, maxBodyBytes: configuration.maxSnapshotBytes, tls: tlsContext)
        let target = configuration.snapshotPath ?? endpoint.defaultSnapshotPath
        var headers = [("Accept", "application/json")]
        // The connection's token: the snapshot then holds its accounts' private state.
        if let currentToken { headers.append(("Authorization", "Bearer " + currentToken)) }
        let request = headers
        let result = await DedicatedThread.run {
            Result { () throws(TransportError) in
                try exchange.perform(method: "GET", target: target, headers: request)
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
            case tokenExpiredCloseCode: why += ": the token expired; getting a new token"
            default: break
            }
            return TickwireDiagnostic(.connectionLost, why + "; reconnecting", closeCode: code)
        }
        if ending.wasOpen {
            return TickwireDiagnostic(.connectionLost, "\(error); reconnecting", closeCode: ending.serverCloseCode)
        }
        if case .handshake = error { return TickwireDiagnostic(.handshakeFailed, "\(endpoint): \(error)") }
        if case .tls = error { return TickwireDiagnostic(.tlsFailed, "\(endpoint): \(error)") }
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

/// True for the first `claim()` only: one answer from racing tasks.
private final class FirstAnswer: Sendable {
    private let taken = Atomic<Bool>(false)

    func claim() -> Bool {
        !taken.exchange(true, ordering: .acquiringAndReleasing)
    }
}
