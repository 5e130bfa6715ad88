/// Where a client put its token, in the order the server looks (PROTOCOL.md "Authentication"):
/// `Authorization: Bearer`, then a `Sec-WebSocket-Protocol` entry `bearer.<token>` (the
/// one header a browser's WebSocket can set), then `?token=` in the URL.
public enum TokenSource: String, Sendable, Equatable {
    case authorization
    case subprotocol
    case query
}

public struct LocatedToken: Sendable, Equatable {
    public var token: String
    public var source: TokenSource
    /// The subprotocol to answer in `Sec-WebSocket-Protocol`, when the client offered any:
    /// a browser fails the handshake unless the server picks one of its offers.
    public var subprotocol: String?

    public init(token: String, source: TokenSource, subprotocol: String?) {
        self.token = token
        self.source = source
        self.subprotocol = subprotocol
    }
}

public enum TokenLocation {
    /// The subprotocol a `/ws` client offers beside its `bearer.` entry; answered when offered.
    public static let streamSubprotocol = "tickwire"
    static let bearerPrefix = "bearer."

    /// Finds the token among the request's `Authorization` value, `Sec-WebSocket-Protocol`
    /// value and decoded `token` query parameter. `.failure` when a place holds something
    /// that is not a token (a non-Bearer scheme, an empty entry), so a client never has a
    /// bad header silently ignored in favour of another place.
    public static func locate(authorization: String?, subprotocols: String?, query: String?) -> Result<LocatedToken?, TokenFailure> {
        var offered: [Substring] = []
        if let subprotocols {
            offered = subprotocols.split(separator: ",").map { trim($0) }.filter { !$0.isEmpty }
        }
        // Only our own subprotocol is ever chosen: the server speaks no other.
        let answer: String? = offered.contains(where: { $0 == streamSubprotocol }) ? streamSubprotocol : nil
        if let authorization {
            let value = trim(Substring(authorization))
            guard value.utf8.count > 7, hasBearerScheme(value) else {
                return .failure(.malformed("the Authorization header must be 'Bearer <token>'"))
            }
            // "Bearer " is 7 ASCII bytes (checked above): cut on the bytes, not on Characters.
            let afterScheme = value.utf8.index(value.startIndex, offsetBy: 7)
            return .success(LocatedToken(token: String(trim(value[afterScheme...])), source: .authorization, subprotocol: answer))
        }
        if let entry = offered.first(where: { $0.lowercased().hasPrefix(bearerPrefix) }) {
            let token = entry.dropFirst(bearerPrefix.count)
            guard !token.isEmpty else { return .failure(.malformed("the Sec-WebSocket-Protocol entry 'bearer.' carries no token")) }
            // Answer the token entry itself only when nothing else was offered: the browser
            // needs one of its offers back (RFC 6455 §4.1), and a token is better not echoed.
            return .success(LocatedToken(token: String(token), source: .subprotocol, subprotocol: answer ?? String(entry)))
        }
        if let query {
            guard !query.isEmpty else { return .failure(.malformed("'token' in the URL is empty")) }
            return .success(LocatedToken(token: query, source: .query, subprotocol: answer))
        }
        return .success(nil)
    }

    /// `Bearer ` in any case (RFC 7235 §2.1: the scheme is case-insensitive), compared on
    /// the UTF-8 bytes with no lowercased copy.
    static func hasBearerScheme(_ value: Substring) -> Bool {
        var expected = "bearer ".utf8.makeIterator()
        for b in value.utf8.prefix(7) {
            guard let e = expected.next(), b | (b >= 0x41 && b <= 0x5A ? 0x20 : 0) == e else { return false }
        }
        return expected.next() == nil
    }

    /// Spaces and tabs off both ends, found on the UTF-8 bytes (no grapheme breaking).
    private static func trim(_ s: Substring) -> Substring {
        let u = s.utf8
        var start = u.startIndex
        var end = u.endIndex
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start = u.index(after: start) }
        while start < end {
            let last = u.index(before: end)
            guard u[last] == 0x20 || u[last] == 0x09 else { break }
            end = last
        }
        return s[start..<end]
    }
}
