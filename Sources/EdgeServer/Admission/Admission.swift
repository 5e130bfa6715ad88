import Glibc
import Reactor
import WireProtocol

/// The abuse limits of a WebSocket upgrade (PROTOCOL.md "Limits"): Origin, connections and
/// new connections per client address, connections per account. Every count is shared by
/// all reactors through `SharedCounts` (atomics, no lock). A refusal says which limit and
/// is counted in `tickwire_limit_refusals_total{limit}`.
enum LimitKind: Int, CaseIterable {
    case origin, addressConnections, addressRate, accountConnections, messageRate

    var label: String {
        switch self {
        case .origin: return "origin"
        case .addressConnections: return "connections_per_ip"
        case .addressRate: return "new_connections_per_ip"
        case .accountConnections: return "connections_per_account"
        case .messageRate: return "messages_per_second"
        }
    }
}

/// What one reactor needs to apply the limits; the counts themselves are the server's.
struct Admission {
    let config: ServerConfiguration
    let addresses: SharedCounts
    let addressRates: SharedCounts
    let accounts: SharedCounts

    struct Refusal {
        let kind: LimitKind
        let status: HTTPStatus
        let message: String
        let retryAfter: Int?
    }

    /// Origin check against cross-site WebSocket hijacking: a browser always sends Origin;
    /// a request without one is not from a browser page and is let through.
    func checkOrigin(_ origin: String?) -> Refusal? {
        guard !config.allowedOrigins.isEmpty, let origin else { return nil }
        if config.allowedOrigins.contains(origin) { return nil }
        return Refusal(kind: .origin, status: .forbidden,
                       message: "WebSocket connections from origin '\(origin.prefix(128))' are not allowed (--allowed-origin)", retryAfter: nil)
    }

    /// Counts the client address's new connection and open connection; on success the
    /// caller keeps `cells` to release the open one when the connection closes.
    func admitAddress(_ cells: UInt32, second: UInt32) -> Refusal? {
        if config.maxNewConnectionsPerAddressPerSecond > 0,
           !addressRates.tick(cells, second: second, limit: config.maxNewConnectionsPerAddressPerSecond) {
            return Refusal(kind: .addressRate, status: .tooManyRequests,
                           message: "more than \(config.maxNewConnectionsPerAddressPerSecond) new connections per second from your address; slow down",
                           retryAfter: 1)
        }
        if config.maxConnectionsPerAddress > 0, !addresses.acquire(cells, limit: config.maxConnectionsPerAddress) {
            return Refusal(kind: .addressConnections, status: .tooManyRequests,
                           message: "your address already has \(config.maxConnectionsPerAddress) connections open (--max-connections-per-ip)",
                           retryAfter: 5)
        }
        return nil
    }

    func admitAccount(_ cells: UInt32, account: String) -> Refusal? {
        guard config.maxConnectionsPerAccount > 0 else { return nil }
        if accounts.acquire(cells, limit: config.maxConnectionsPerAccount) { return nil }
        return Refusal(kind: .accountConnections, status: .tooManyRequests,
                       message: "account '\(account.prefix(64))' already has \(config.maxConnectionsPerAccount) connections open (--max-connections-per-account)",
                       retryAfter: 5)
    }

    /// The address a client is counted under: the peer, or behind a proxy on this host (a
    /// loopback peer) the last `X-Forwarded-For` hop it added.
    static func clientKey(peer: PeerAddress, forwardedFor: String?) -> (UInt64, UInt64) {
        if peer.isLoopback, let forwardedFor, let last = forwardedFor.split(separator: ",").last {
            let text = String(last.trimmingSpaces)
            var v4 = in_addr()
            if inet_pton(AF_INET, text, &v4) == 1 { return (UInt64(v4.s_addr), 0) }
            var v6 = in6_addr()
            if inet_pton(AF_INET6, text, &v6) == 1 {
                return withUnsafeBytes(of: &v6) { ($0.loadUnaligned(fromByteOffset: 0, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
            }
        }
        return peer.bytes
    }
}
