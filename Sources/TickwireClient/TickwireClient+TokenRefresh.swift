// Token refresh when the server asks for it, and the synchronizer's actions.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

extension TickwireClient {
    // MARK: - Token refresh

    /// PROTOCOL.md: "token expired" — get a new token before reconnecting.
    static let tokenExpiredCloseCode: UInt16 = 4001

    /// The server asked for a new token: get one and send `Refresh`. Without a provider the
    /// request goes unanswered, and the connection is closed at `exp` (4001).
    func refreshToken(_ request: TokenRefreshRequest, _ gen: Int) {
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

    func perform(_ actions: [StreamSynchronizer.Action], _ gen: Int) {
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
}
