/// Where the cluster's Redis is: `redis://[[user]:password@]HOST[:PORT][/DB]`.
///
/// HOST is a name, an IPv4 address or a bracketed IPv6 address (`[::1]`); PORT defaults to
/// 6379 and DB to 0. The password may be percent-encoded (`%40` for `@`). A name is
/// resolved by hiredis at each connect, on the Redis loop's thread (blocking that loop, never
/// a reactor): give an address where a slow resolver matters.
public struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// ACL user for `AUTH user password` (Redis 6+); nil sends `AUTH password`.
    public var user: String?
    public var password: String?
    public var database: Int

    public init(host: String, port: Int = 6379, user: String? = nil, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses a `redis://` URL, with an error that names what is wrong.
    public init(url: String) throws(RedisEndpointError) {
        let scheme = "redis://"
        guard url.hasPrefix(scheme) else {
            if url.hasPrefix("rediss://") { throw .unsupported("TLS to Redis (rediss://) is not supported") }
            throw .notRedisURL
        }
        var rest = Substring(url.dropFirst(scheme.count))
        if rest.contains("?") || rest.contains("#") { throw .unsupported("a query or fragment in the URL") }

        // Credentials end at the last `@`: a password may itself hold `@` only when encoded,
        // but be lenient and split at the last one.
        var user: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard let colon = credentials.firstIndex(of: ":") else {
                throw .badCredentials("expected [user]:password before @")
            }
            let u = credentials[..<colon]
            user = u.isEmpty ? nil : try Self.percentDecoded(u)
            password = try Self.percentDecoded(credentials[credentials.index(after: colon)...])
        }

        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0, n < 1 << 16 else { throw .badDatabase(String(db)) }
                database = n
            }
        }

        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw .badHost(String(rest)) }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .badHost(String(rest)) }
                portText = after.dropFirst()
            }
        } else if let colon = rest.firstIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw .missingHost }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" })
        else { throw .badHost(String(host)) }

        var port = 6379
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw .badPort(String(portText)) }
            port = p
        }
        self.init(host: String(host), port: port, user: user, password: password, database: database)
    }

    private static func percentDecoded(_ s: Substring) throws(RedisEndpointError) -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else {
                throw .badCredentials("bad percent-encoding")
            }
            out.append(v)
            bytes = bytes.dropFirst(2)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The URL without its password, for logs and metrics.
    public var description: String {
        let credentials = password == nil ? "" : "\(user ?? ""):***@"
        let h = host.contains(":") ? "[\(host)]" : host
        return "redis://\(credentials)\(h):\(port)/\(database)"
    }
}

public enum RedisEndpointError: Error, Equatable, CustomStringConvertible {
    // No case repeats the whole URL: it may hold a password.
    case notRedisURL
    case missingHost
    case badHost(String)
    case badPort(String)
    case badDatabase(String)
    case badCredentials(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .notRedisURL: "not a redis:// URL (expected redis://[:password@]HOST:PORT[/DB])"
        case .missingHost: "no host in the redis:// URL"
        case .badHost(let h): "bad host \(h)"
        case .badPort(let p): "bad port \(p) (expected 1-65535)"
        case .badDatabase(let d): "bad database \(d) (expected a number from 0)"
        case .badCredentials(let why): "bad credentials: \(why)"
        case .unsupported(let what): "unsupported: \(what)"
        }
    }
}
