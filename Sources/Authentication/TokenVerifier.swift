import AccessToken

/// Checks a token end to end: parse, pick the key (by `kid` when the token has one), check
/// that the header's algorithm is the key's, verify the signature, then the claims.
/// A value type with no state: any thread may use it.
public struct TokenVerifier: Sendable {
    public let keys: KeySet
    public let policy: ClaimsPolicy

    public init(keys: KeySet, policy: ClaimsPolicy) {
        self.keys = keys
        self.policy = policy
    }

    /// The claims of a token that passes every check, or the first check it fails.
    /// `now`: seconds since the epoch.
    public func verify<C: Collection<UInt8>>(_ text: C, now: Int64) -> Result<TokenClaims, TokenFailure> {
        let token: AccessToken
        switch AccessToken.parse(text) {
        case .success(let t): token = t
        case .failure(let f): return .failure(f)
        }
        guard let algorithm = SigningAlgorithm(rawValue: token.header.algorithm) else {
            return .failure(.unsupportedAlgorithm(token.header.algorithm))
        }
        var candidates = keys.keys
        if let kid = token.header.keyID, keys.keys.contains(where: { $0.id != nil }) {
            candidates = keys.keys.filter { $0.id == kid }
            if candidates.isEmpty { return .failure(.unknownKey(kid)) }
        }
        // Only keys of the token's algorithm may verify it; if there are none the token
        // asked for an algorithm the server's keys do not use.
        let usable = candidates.filter { $0.key.algorithm == algorithm }
        if usable.isEmpty {
            let keyAlgorithms = Set(candidates.map { $0.key.algorithm.rawValue }).sorted().joined(separator: "/")
            return .failure(.algorithmMismatch(token: algorithm.rawValue, key: keyAlgorithms.isEmpty ? "nothing" : keyAlgorithms))
        }
        guard usable.contains(where: { $0.key.verifies(token.signature, over: token.signingInput) }) else {
            return .failure(.badSignature)
        }
        if let failure = policy.check(token.claims, now: now) { return .failure(failure) }
        return .success(token.claims)
    }
}
