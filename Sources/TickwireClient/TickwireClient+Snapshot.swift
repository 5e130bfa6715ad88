// Loading GET /api/snapshot when the server cannot replay.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

extension TickwireClient {
    // MARK: - Snapshot

    func startSnapshotLoad(_ gen: Int) {
        snapshotToken += 1
        let token = snapshotToken
        Task { [weak self] in await self?.loadSnapshot(gen, token, attempt: 1) }
    }

    func loadSnapshot(_ gen: Int, _ token: Int, attempt: Int) async {
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
}
