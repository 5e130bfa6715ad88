/// Why a token was refused: one case per check, each with the stable `code` a client can
/// act on and the HTTP 401 body's message (PROTOCOL.md "Authentication").
public enum TokenFailure: Error, Sendable, Equatable {
    /// No token where `--auth required` needs one.
    case missing
    /// Not three base64url parts of JSON objects, or a claim of the wrong type.
    case malformed(String)
    /// The header names an algorithm this server does not accept (`none`, HS512...).
    case unsupportedAlgorithm(String)
    /// The header's `alg` is not the algorithm of the key that would verify it: the key
    /// decides, never the token (the RS256-key-as-HMAC-secret confusion).
    case algorithmMismatch(token: String, key: String)
    /// The header's `kid` names no configured key.
    case unknownKey(String)
    case badSignature
    case expired
    case notYetValid
    /// No `exp`: a token that never expires cannot be revoked by time.
    case missingExpiry
    case wrongIssuer
    case wrongAudience

    public var code: String {
        switch self {
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

    public var message: String {
        switch self {
        case .missing: return "this server requires a token: send ?token=, 'Authorization: Bearer', or a Sec-WebSocket-Protocol entry 'bearer.<token>'"
        case .malformed(let why): return "token is malformed: \(why)"
        case .unsupportedAlgorithm(let alg): return "token algorithm '\(alg.prefix(16))' is not accepted; use HS256, RS256 or ES256 as the server's key requires"
        case let .algorithmMismatch(token, key): return "token says \(token.prefix(16)) but the server's key is for \(key)"
        case .unknownKey(let kid): return "no key with kid '\(kid.prefix(64))'"
        case .badSignature: return "token signature does not verify"
        case .expired: return "token expired; get a new token"
        case .notYetValid: return "token is not valid yet (nbf)"
        case .missingExpiry: return "token has no 'exp' claim"
        case .wrongIssuer: return "token issuer (iss) is not the one this server accepts"
        case .wrongAudience: return "token audience (aud) does not include this server"
        }
    }
}
