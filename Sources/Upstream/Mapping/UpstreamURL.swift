/// An `--upstream` URL: `ws://HOST[:PORT]/PATH[?QUERY]` (Binance's combined streams:
/// `/stream?streams=btcusdt@ticker/btcusdt@kline_1m`; raw: `/ws/btcusdt@ticker`).
public struct UpstreamURL: Sendable, Equatable, CustomStringConvertible {
    public enum Scheme: String, Sendable { case ws, wss }

    public let scheme: Scheme
    /// Without the brackets of an IPv6 literal.
    public let host: String
    public let port: Int
    /// Path and query, as sent in the request line.
    public let target: String
    /// The symbols the URL names (upper case), for staleness from the first second.
    public let symbols: [String]

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public init(_ text: String) throws(Invalid) {
        let schemeEnd = text.firstRange(of: "://")
        guard let schemeEnd, let scheme = Scheme(rawValue: String(text[..<schemeEnd.lowerBound]).lowercased()) else {
            throw Invalid(description: "\(text): an upstream URL starts with ws:// (or wss://)")
        }
        let rest = text[schemeEnd.upperBound...]
        let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<slash]
        var target = String(rest[slash...])
        if target.isEmpty { target = "/" }
        if target.hasPrefix("?") { target = "/" + target }
        guard !authority.contains("@") else { throw Invalid(description: "\(text): credentials in an upstream URL are not supported") }
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw Invalid(description: "\(text): unterminated IPv6 address") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty {
                throw Invalid(description: "\(text): unexpected text after the IPv6 address")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw Invalid(description: "\(text): no host") }
        var port = scheme == .ws ? 80 : 443
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw Invalid(description: "\(text): the port must be 1 to 65535") }
            port = p
        }
        guard target.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw Invalid(description: "\(text): the path may not contain spaces or control characters")
        }
        self.scheme = scheme
        self.host = String(host)
        self.port = port
        self.target = target
        symbols = Self.symbols(in: target)
    }

    /// `streams=a@x/b@y` in the query, or the stream names of a `/ws/a@x/b@y` path.
    static func symbols(in target: String) -> [String] {
        var names: [Substring] = []
        if let q = target.firstIndex(of: "?") {
            for pair in target[target.index(after: q)...].split(separator: "&") where pair.hasPrefix("streams=") {
                names += pair.dropFirst("streams=".count).split(separator: "/")
            }
        } else if target.hasPrefix("/ws/") {
            names = target.dropFirst(4).split(separator: "/")
        }
        var seen: [String] = []
        for name in names {
            guard let at = name.firstIndex(of: "@") else { continue }
            let symbol = name[..<at].uppercased()
            if UpstreamEventMapper.isSymbol(symbol) && !seen.contains(symbol) { seen.append(symbol) }
        }
        return seen
    }

    /// The Host header (RFC 9110 §7.2): the port only when not the scheme's default.
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (scheme == .ws ? 80 : 443) ? h : "\(h):\(port)"
    }

    public var description: String { "\(scheme.rawValue)://\(hostHeader)\(target)" }
}

/// The client side of the opening handshake (RFC 6455 §4.1) with an upstream: the request,
/// and the checks on the answer. Pure.
public struct UpstreamHandshake: Sendable {
    /// Base64 of 16 random bytes.
    public let key: String

    public init(key: String) { self.key = key }

    /// Largest response head accepted: real ones are a few hundred bytes.
    public static let maxResponseHead = 16 << 10

    public func request(for url: UpstreamURL) -> [UInt8] {
        Array(("GET \(url.target) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\nUser-Agent: tickwire-upstream\r\n\r\n").utf8)
    }

    public enum Answer: Equatable, Sendable {
        /// Not all of the head is here yet.
        case incomplete
        /// Upgraded; the frames start at this offset.
        case accepted(headLength: Int)
        case refused(String)
    }

    /// Checks the response in `bytes` (its start).
    public func check(_ bytes: UnsafeRawBufferPointer, expectedAccept: String) -> Answer {
        var end: Int?
        if bytes.count >= 4 {
            for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
                end = i
                break
            }
        }
        guard let end else {
            return bytes.count > Self.maxResponseHead ? .refused("response head larger than \(Self.maxResponseHead) bytes") : .incomplete
        }
        let head = String(decoding: bytes[0..<end], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let status = lines.first?.split(separator: " ", maxSplits: 2) ?? []
        guard status.count >= 2, status[0].hasPrefix("HTTP/1."), let code = Int(status[1]) else {
            return .refused("not an HTTP response")
        }
        guard code == 101 else {
            return .refused("the upstream answered \(code)\(status.count > 2 ? " " + status[2] : "") instead of 101")
        }
        var upgrade = false, connection = false, accept: Substring?, extensions: Substring?
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" })
            let tokens = value.lowercased().split(separator: ",").map { $0.trimmingSpaces() }
            switch name {
            case "upgrade": upgrade = tokens.contains("websocket")
            case "connection": connection = tokens.contains("upgrade")
            case "sec-websocket-accept": accept = Substring(String(value).trimmingSpaces())
            case "sec-websocket-extensions": extensions = value
            default: break
            }
        }
        guard upgrade else { return .refused("no 'Upgrade: websocket' in the response") }
        guard connection else { return .refused("no 'Connection: Upgrade' in the response") }
        guard accept.map(String.init) == expectedAccept else { return .refused("wrong or missing Sec-WebSocket-Accept") }
        // Nothing was offered, so nothing may be chosen (§4.1).
        if let extensions, !extensions.allSatisfy({ $0 == " " }) { return .refused("the upstream chose an extension that was not offered") }
        return .accepted(headLength: end + 4)
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
