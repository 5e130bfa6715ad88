import AccessToken
import Authentication
import Glibc
import WireProtocol

/// Checks the token of a `/ws` upgrade, a snapshot request or an in-band `Refresh`
/// (PROTOCOL.md "Authentication"). Every reactor has its own, with its own cache of the
/// tokens it verified (`--jwt-cache-size`); verifying is pure CPU work on the reactor (HS256
/// a few microseconds), with no lock and no I/O.
struct Authenticator {
    let mode: AuthMode
    let verifier: TokenVerifier?
    /// nil: every token is parsed and its signature checked each time.
    let cache: VerifiedTokenCache?
    /// Where the tokens the cache answered are counted (the reactor's own counters).
    private let stats: WorkerStats?

    init(config: ServerConfiguration, stats: WorkerStats? = nil) {
        mode = config.auth
        verifier = config.tokenVerifier
        cache = config.tokenVerifier != nil && config.tokenCacheSize > 0 ? VerifiedTokenCache(capacity: config.tokenCacheSize) : nil
        self.stats = stats
    }

    enum Outcome {
        /// No token, and none needed: public data only (or everything, with auth off).
        case anonymous(subprotocol: String?)
        case granted(AccessGrant, subprotocol: String?)
        case refused(TokenFailure)
    }

    /// The outcome for a request's token places (the decoded `token` query parameter).
    func check(authorization: String?, subprotocols: String?, queryToken: String?) -> Outcome {
        if mode == .off {
            // Tokens are not read at all; the subprotocol is still answered.
            let answer = TokenLocation.locate(authorization: nil, subprotocols: subprotocols, query: nil)
            if case .success(let t) = answer, let t { return .anonymous(subprotocol: t.subprotocol) }
            return .anonymous(subprotocol: Self.ownSubprotocol(subprotocols))
        }
        let located: LocatedToken?
        switch TokenLocation.locate(authorization: authorization, subprotocols: subprotocols, query: queryToken) {
        case .success(let t): located = t
        case .failure(let f): return .refused(f)
        }
        guard let located else {
            return mode == .required ? .refused(.missing) : .anonymous(subprotocol: Self.ownSubprotocol(subprotocols))
        }
        switch verify(located.token) {
        case .success(let grant): return .granted(grant, subprotocol: located.subprotocol)
        case .failure(let f): return .refused(f)
        }
    }

    /// Verifies one token against the configured keys and claim rules, at the wall clock's now.
    /// A token this reactor verified before skips the parse and the signature; its claims
    /// are checked again, so an expired one is refused as `expired` all the same.
    func verify(_ token: String) -> Result<AccessGrant, TokenFailure> {
        guard let verifier else { return .failure(.missing) }
        var token = token
        let now = Int64(time(nil))
        return token.withUTF8 { utf8 in
            let bytes = UnsafeRawBufferPointer(utf8)
            guard let cache else { return verifier.verify(bytes, now: now).map { AccessGrant($0) } }
            let hash = VerifiedTokenCache.hash(bytes)
            if let hit = cache.lookup(bytes, hash: hash) {
                stats?.tokenCacheHits.bump()
                if let failure = verifier.policy.check(hit.claims, now: now) { return .failure(failure) }
                return .success(hit.grant)
            }
            return verifier.verify(bytes, now: now).map { claims in
                let grant = AccessGrant(claims)
                cache.store(bytes, hash: hash, claims: claims, grant: grant)
                return grant
            }
        }
    }

    private static func ownSubprotocol(_ offered: String?) -> String? {
        guard let offered else { return nil }
        return offered.split(separator: ",").contains { $0.trimmingSpaces == TokenLocation.streamSubprotocol }
            ? TokenLocation.streamSubprotocol : nil
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return s
    }
}

/// Authentication results, the metrics label `result` of `tickwire_auth_total`.
enum AuthResult: Int, CaseIterable {
    case accepted, anonymous
    case missing, malformed, unsupportedAlgorithm, algorithmMismatch, unknownKey, badSignature
    case expired, notYetValid, missingExpiry, wrongIssuer, wrongAudience

    init(_ failure: TokenFailure) {
        switch failure {
        case .missing: self = .missing
        case .malformed: self = .malformed
        case .unsupportedAlgorithm: self = .unsupportedAlgorithm
        case .algorithmMismatch: self = .algorithmMismatch
        case .unknownKey: self = .unknownKey
        case .badSignature: self = .badSignature
        case .expired: self = .expired
        case .notYetValid: self = .notYetValid
        case .missingExpiry: self = .missingExpiry
        case .wrongIssuer: self = .wrongIssuer
        case .wrongAudience: self = .wrongAudience
        }
    }

    var label: String {
        switch self {
        case .accepted: return "accepted"
        case .anonymous: return "anonymous"
        case .missing: return "token_missing"
        case .malformed: return "malformed"
        case .unsupportedAlgorithm: return "unsupported_algorithm"
        case .algorithmMismatch: return "algorithm_mismatch"
        case .unknownKey: return "unknown_key"
        case .badSignature: return "bad_signature"
        case .expired: return "expired"
        case .notYetValid: return "not_yet_valid"
        case .missingExpiry: return "missing_exp"
        case .wrongIssuer: return "wrong_issuer"
        case .wrongAudience: return "wrong_audience"
        }
    }
}

extension CloseCode {
    /// The token expired and no `Refresh` came: get a new token before reconnecting
    /// (PROTOCOL.md "Token refresh"). In the private range RFC 6455 §7.4.2 leaves to applications.
    static let tokenExpired = CloseCode(rawValue: 4001)
}
