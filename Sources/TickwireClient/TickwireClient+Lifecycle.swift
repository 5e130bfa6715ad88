// Opening, running and ending a connection: token fetch, handshake, reconnect with backoff,
// and the WebSocket events of the current generation.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

extension TickwireClient {
    // MARK: - Connection lifecycle

    func send(encoded: [UInt8]) throws(TickwireClientError) {
        guard !isShutDown else { throw .shutDown }
        guard state == .connected, let connection, connection.send(text: encoded) else { throw .notConnected }
    }

    func openConnection() {
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
    static func fetchToken(_ provider: @escaping @Sendable () async throws -> String, timeout: Duration) async -> Result<String, TickwireDiagnostic> {
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
    func endConnection(closeWith code: CloseCode?, reason: String) {
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
    func connectionLost(_ gen: Int, _ diagnostic: TickwireDiagnostic?, closeWith code: CloseCode? = nil) {
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
}

/// True for the first `claim()` only: one answer from racing tasks.
private final class FirstAnswer: Sendable {
    private let taken = Atomic<Bool>(false)

    func claim() -> Bool {
        !taken.exchange(true, ordering: .acquiringAndReleasing)
    }
}
