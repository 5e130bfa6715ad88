import TradingStream

/// A JWS algorithm this server can verify (RFC 7518 §3.1).
public enum SigningAlgorithm: String, Sendable, Equatable, CaseIterable {
    case hs256 = "HS256"
    case rs256 = "RS256"
    case es256 = "ES256"
}

/// What a token grants, read from its claims (RFC 7519 §4 plus Tickwire's own).
public struct TokenClaims: Sendable, Equatable {
    public var subject: String?
    /// `accounts`: further accounts the holder may see (a desk watching several).
    public var extraAccounts: [String] = []
    /// `channels`: channel names the holder may subscribe to; nil: every channel.
    public var channels: [String]?
    /// `symbols`: symbols the holder may subscribe to; nil: every symbol.
    public var symbols: [String]?
    /// Seconds since the epoch.
    public var expiresAt: Int64?
    public var notBefore: Int64?
    public var issuer: String?
    public var audience: [String] = []
    /// `max_bandwidth`: bytes per second this connection may be sent; nil: the server's cap alone.
    public var maxBandwidth: Int?

    /// The range a `max_bandwidth` claim may take: that of `--max-bandwidth` (1 KiB to 16 GiB per second).
    public static let maxBandwidthRange = (1 << 10)...(1 << 34)

    public init() {}

    /// The accounts whose private messages this token may see: `sub` and `accounts`.
    public var accounts: [String] {
        var out: [String] = []
        if let subject, !subject.isEmpty { out.append(subject) }
        for a in extraAccounts where !a.isEmpty && !out.contains(a) { out.append(a) }
        return out
    }
}

/// The header fields that matter for verification (RFC 7515 §4.1).
public struct TokenHeader: Sendable, Equatable {
    public var algorithm: String
    public var keyID: String?

    public init(algorithm: String, keyID: String?) {
        self.algorithm = algorithm
        self.keyID = keyID
    }
}

/// A JWS compact serialization split and decoded, signature not yet checked: the checks
/// of the signature (`Authentication`) and of the claims (`ClaimsPolicy`) come after.
public struct AccessToken: Sendable, Equatable {
    /// Longest token accepted: real ones are a few hundred bytes; this bounds the work a
    /// peer can ask for before any signature is checked.
    public static let maxLength = 8192
    /// Most entries in `accounts`, `channels`, `symbols` or `aud`.
    public static let maxListEntries = 1024

    public let header: TokenHeader
    public let claims: TokenClaims
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    public let signingInput: [UInt8]
    public let signature: [UInt8]

    /// Splits and decodes `text`. Header and payload must be JSON objects with no member
    /// named twice (two parsers reading different values is how claims get smuggled).
    public static func parse<C: Collection<UInt8>>(_ text: C) -> Result<AccessToken, TokenFailure> {
        Array(text).withUnsafeBytes { parse($0) }
    }

    /// The same, on the bytes in place (the server's path: no copy of the token first).
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<AccessToken, TokenFailure> {
        if bytes.isEmpty { return .failure(.missing) }
        if bytes.count > maxLength { return .failure(.malformed("longer than \(maxLength) bytes")) }
        var dots = (first: -1, second: -1)
        for i in 0..<bytes.count where bytes[i] == UInt8(ascii: ".") {
            if dots.first < 0 { dots.first = i }
            else if dots.second < 0 { dots.second = i }
            else { dots.second = -1; break }   // a third dot
        }
        let (firstDot, secondDot) = dots
        guard firstDot >= 0, secondDot >= 0
        else { return .failure(.malformed("expected three dot-separated parts (JWS compact form)")) }
        guard let headerJSON = Base64URL.decode(bytes[..<firstDot]),
              let payloadJSON = Base64URL.decode(bytes[(firstDot + 1)..<secondDot]),
              let signature = Base64URL.decode(bytes[(secondDot + 1)...])
        else { return .failure(.malformed("a part is not unpadded base64url")) }
        let header: TokenHeader
        switch parseHeader(headerJSON) {
        case .success(let h): header = h
        case .failure(let f): return .failure(f)
        }
        let claims: TokenClaims
        switch parseClaims(payloadJSON) {
        case .success(let c): claims = c
        case .failure(let f): return .failure(f)
        }
        return .success(AccessToken(header: header, claims: claims, signingInput: Array(bytes[..<secondDot]), signature: signature))
    }

    static func parseHeader(_ json: [UInt8]) -> Result<TokenHeader, TokenFailure> {
        json.withUnsafeBytes { raw in
            let members: [(String, JSONValue)]
            switch objectMembers(raw, part: "header") {
            case .success(let m): members = m
            case .failure(let f): return .failure(f)
            }
            var alg: String?
            var kid: String?
            for (name, value) in members {
                switch name {
                case "alg":
                    guard let s = JSONScanner.string(value, in: raw) else { return .failure(.malformed("header 'alg' must be a string")) }
                    alg = s
                case "kid":
                    guard let s = JSONScanner.string(value, in: raw) else { return .failure(.malformed("header 'kid' must be a string")) }
                    kid = s
                case "crit":
                    // RFC 7515 §4.1.11: extensions we do not understand must be refused.
                    return .failure(.malformed("header 'crit' extensions are not supported"))
                case "b64":
                    return .failure(.malformed("header 'b64' (unencoded payload) is not supported"))
                default:
                    break
                }
            }
            guard let alg else { return .failure(.malformed("header has no 'alg'")) }
            return .success(TokenHeader(algorithm: alg, keyID: kid))
        }
    }

    static func parseClaims(_ json: [UInt8]) -> Result<TokenClaims, TokenFailure> {
        json.withUnsafeBytes { raw in
            let members: [(String, JSONValue)]
            switch objectMembers(raw, part: "payload") {
            case .success(let m): members = m
            case .failure(let f): return .failure(f)
            }
            var claims = TokenClaims()
            for (name, value) in members {
                switch name {
                case "sub":
                    guard let s = JSONScanner.string(value, in: raw) else { return .failure(.malformed("'sub' must be a string")) }
                    claims.subject = s
                case "iss":
                    guard let s = JSONScanner.string(value, in: raw) else { return .failure(.malformed("'iss' must be a string")) }
                    claims.issuer = s
                case "aud":
                    // RFC 7519 §4.1.3: one string or an array of them.
                    if let s = JSONScanner.string(value, in: raw) { claims.audience = [s]; continue }
                    guard let list = stringList(value, raw) else { return .failure(.malformed("'aud' must be a string or an array of strings")) }
                    claims.audience = list
                case "exp", "nbf":
                    guard let t = numericDate(value, raw) else { return .failure(.malformed("'\(name)' must be a number of seconds since 1970")) }
                    if name == "exp" { claims.expiresAt = t } else { claims.notBefore = t }
                case "accounts":
                    guard let list = stringList(value, raw) else { return .failure(.malformed("'accounts' must be an array of strings")) }
                    claims.extraAccounts = list
                case "channels":
                    guard let list = stringList(value, raw) else { return .failure(.malformed("'channels' must be an array of strings")) }
                    claims.channels = list
                case "symbols":
                    guard let list = stringList(value, raw) else { return .failure(.malformed("'symbols' must be an array of strings")) }
                    claims.symbols = list
                case "max_bandwidth":
                    // A cap out of range is an issuer's mistake: refused, never read as "no cap".
                    guard let n = JSONScanner.integer(value, in: raw), TokenClaims.maxBandwidthRange.contains(Int(n)) else {
                        return .failure(.malformed("'max_bandwidth' must be a whole number of bytes per second from 1024 to 17179869184"))
                    }
                    claims.maxBandwidth = Int(n)
                default:
                    break
                }
            }
            return .success(claims)
        }
    }

    private static func objectMembers(_ raw: UnsafeRawBufferPointer, part: String) -> Result<[(String, JSONValue)], TokenFailure> {
        let root: JSONValue
        do { root = try JSONScanner.parse(raw) } catch { return .failure(.malformed("\(part) is not JSON")) }
        guard root.kind == .object else { return .failure(.malformed("\(part) is not a JSON object")) }
        var out: [(String, JSONValue)] = []
        for (key, value) in JSONScanner.members(of: root, in: raw) {
            guard let name = JSONScanner.string(key, in: raw) else { return .failure(.malformed("\(part) has a bad member name")) }
            if out.contains(where: { $0.0 == name }) { return .failure(.malformed("\(part) names '\(name.prefix(32))' twice")) }
            out.append((name, value))
        }
        return .success(out)
    }

    private static func stringList(_ value: JSONValue, _ raw: UnsafeRawBufferPointer) -> [String]? {
        guard value.kind == .array else { return nil }
        var out: [String] = []
        for element in JSONScanner.elements(of: value, in: raw) {
            guard out.count < maxListEntries, let s = JSONScanner.string(element, in: raw) else { return nil }
            out.append(s)
        }
        return out
    }

    /// RFC 7519 §2 NumericDate: seconds, possibly fractional (truncated here).
    private static func numericDate(_ value: JSONValue, _ raw: UnsafeRawBufferPointer) -> Int64? {
        if let i = JSONScanner.integer(value, in: raw) { return i }
        guard let d = JSONScanner.double(value, in: raw), d.isFinite, abs(d) < 1e15 else { return nil }
        return Int64(d.rounded(.down))
    }
}

/// The claim checks a server configures (`--jwt-issuer`, `--jwt-audience`, `--jwt-leeway`).
public struct ClaimsPolicy: Sendable, Equatable {
    public var issuer: String?
    public var audience: String?
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    public var leewaySeconds: Int64

    public init(issuer: String? = nil, audience: String? = nil, leewaySeconds: Int64 = 30) {
        self.issuer = issuer
        self.audience = audience
        self.leewaySeconds = leewaySeconds
    }

    /// The first check the claims fail at `now` (seconds since the epoch), or nil.
    public func check(_ claims: TokenClaims, now: Int64) -> TokenFailure? {
        guard let exp = claims.expiresAt else { return .missingExpiry }
        // RFC 7519 §4.1.4: the token must not be accepted on or after exp.
        if now >= exp &+ leewaySeconds { return .expired }
        if let nbf = claims.notBefore, now &+ leewaySeconds < nbf { return .notYetValid }
        if let issuer, claims.issuer != issuer { return .wrongIssuer }
        if let audience, !claims.audience.contains(audience) { return .wrongAudience }
        return nil
    }
}
