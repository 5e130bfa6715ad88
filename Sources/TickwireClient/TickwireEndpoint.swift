/// Errors thrown by the client's API (problems on the connection are events instead).
public enum TickwireClientError: Error, Hashable, CustomStringConvertible {
    /// The URL could not be parsed.
    case invalidURL(String)
    /// Only `ws://` and `wss://` (or `http://` and `https://`) are supported.
    case unsupportedScheme(String)
    /// `send` while no connection is open.
    case notConnected
    /// A subscription change the server would reject.
    case invalidSubscription(String)
    /// A client message could not be encoded as JSON.
    case encodingFailed(String)
    /// The client was shut down.
    case shutDown
    /// The TLS settings cannot be used (e.g. `tls.caFile` is missing or holds no certificate).
    case tlsSetup(String)

    public var description: String {
        switch self {
        case .invalidURL(let why): return "invalid URL: \(why)"
        case .unsupportedScheme(let scheme):
            return "unsupported scheme '\(scheme)': use ws:// or wss:// (http:// and https:// mean the same)"
        case .notConnected: return "not connected"
        case .invalidSubscription(let why): return "invalid subscription: \(why)"
        case .encodingFailed(let why): return "cannot encode the message: \(why)"
        case .shutDown: return "the client was shut down"
        case .tlsSetup(let why): return "cannot set up TLS: \(why)"
        }
    }
}

/// Where the server is: `ws://host:port/path`, or `wss://` for TLS (the server's
/// `--tls-cert`, or a TLS-terminating proxy), whose certificate is verified for `host`.
public struct TickwireEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// A name or an IP address (IPv6 without brackets). Under TLS it is also the name the
    /// certificate must be for, and the SNI sent (names only: RFC 6066 §3).
    public var host: String
    public var port: Int
    /// The WebSocket path, `/ws` on Tickwire.
    public var path: String
    /// Query parameters kept from the URL (e.g. a token for a proxy), already encoded.
    public var query: String?
    /// `wss://`: TLS 1.2 or 1.3, the snapshot over `https://` too.
    public var secure: Bool

    public init(host: String, port: Int? = nil, path: String = "/ws", query: String? = nil, secure: Bool = false) {
        self.host = host
        self.port = port ?? (secure ? 443 : 80)
        self.path = path.hasPrefix("/") ? path : "/" + path
        self.query = query.flatMap { $0.isEmpty ? nil : $0 }
        self.secure = secure
    }

    /// Parses `ws[s]://host[:port][/path][?query]` (`http://` and `https://` are accepted as
    /// synonyms). A missing path means `/ws`; a missing port, 80 (443 for `wss://`).
    public init(url: String) throws(TickwireClientError) {
        guard let colon = url.firstIndex(of: ":"), url[colon...].hasPrefix("://") else {
            throw .invalidURL("'\(url)' has no scheme (ws://host:port/ws)")
        }
        let scheme = url[..<colon].lowercased()
        let secure: Bool
        switch scheme {
        case "ws", "http": secure = false
        case "wss", "https": secure = true
        default: throw .unsupportedScheme(scheme)
        }
        var rest = url[url.index(colon, offsetBy: 3)...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var pathAndQuery = rest[authorityEnd...]
        guard !authority.isEmpty else { throw .invalidURL("'\(url)' has no host") }
        guard !authority.contains("@") else { throw .invalidURL("user information in the URL is not supported") }
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw .invalidURL("unclosed '[' in '\(authority)'") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .invalidURL("unexpected '\(after)' after the IPv6 address") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw .invalidURL("'\(url)' has no host") }
        var port = secure ? 443 : 80
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw .invalidURL("bad port '\(portText)'") }
            port = p
        }
        var query: String?
        if let q = pathAndQuery.firstIndex(of: "?") {
            query = String(pathAndQuery[pathAndQuery.index(after: q)...])
            pathAndQuery = pathAndQuery[..<q]
        }
        self.init(host: String(host), port: port, path: pathAndQuery.isEmpty ? "/ws" : String(pathAndQuery), query: query, secure: secure)
    }

    public var description: String { "\(secure ? "wss" : "ws")://\(hostHeader)\(path)\(query.map { "?" + $0 } ?? "")" }

    /// The `Host` header value (RFC 9110 §7.2): the port only when it is not the scheme's.
    package var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? h : "\(h):\(port)"
    }

    /// `/api/snapshot` beside the WebSocket path (`/edge/ws` -> `/edge/api/snapshot`).
    package var defaultSnapshotPath: String {
        let base = path.lastIndex(of: "/").map { path[...$0] } ?? "/"
        return base + "api/snapshot"
    }

    /// The request target for a connection: the path, the URL's own query, then the
    /// resume point and the subscription (PROTOCOL.md "Resume").
    package func target(resume: (epoch: String, since: UInt64)?, subscription: TickwireSubscription) -> String {
        var parameters: [String] = query.map { [$0] } ?? []
        if let resume {
            parameters.append("epoch=" + Self.percentEncoded(resume.epoch))
            parameters.append("since=\(resume.since)")
        }
        if let channels = subscription.orderedChannels {
            parameters.append("channels=" + channels.map(\.typeName).joined(separator: ","))
        }
        if let symbols = subscription.symbols {
            parameters.append("symbols=" + symbols.map(Self.percentEncoded).joined(separator: ","))
        }
        return parameters.isEmpty ? path : path + "?" + parameters.joined(separator: "&")
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters.
    package static func percentEncoded(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }
}
