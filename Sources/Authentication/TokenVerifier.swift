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
        Array(text).withUnsafeBytes { verify($0, now: now) }
    }

    /// The same, on the bytes in place: what the server calls, once per upgrade or Refresh.
    /// No allocation beyond the parsed token's own on the way to a verdict.
    public func verify(_ text: UnsafeRawBufferPointer, now: Int64) -> Result<TokenClaims, TokenFailure> {
        let token: AccessToken
        switch AccessToken.parse(text) {
        case .success(let t): token = t
        case .failure(let f): return .failure(f)
        }
        guard let algorithm = SigningAlgorithm(rawValue: token.header.algorithm) else {
            return .failure(.unsupportedAlgorithm(token.header.algorithm))
        }
        // A `kid` picks among the named keys, when the set names any.
        let byID = token.header.keyID != nil && keys.keys.contains(where: { $0.id != nil })
        var candidates = 0
        var usable = 0
        for entry in keys.keys where !byID || entry.id == token.header.keyID {
            candidates += 1
            // Only keys of the token's algorithm may verify it.
            guard entry.key.algorithm == algorithm else { continue }
            usable += 1
            let valid = token.signingInput.withUnsafeBytes { entry.key.verifies(token.signature, over: $0) }
            if valid {
                if let failure = policy.check(token.claims, now: now) { return .failure(failure) }
                return .success(token.claims)
            }
        }
        if byID, candidates == 0, let kid = token.header.keyID { return .failure(.unknownKey(kid)) }
        if usable == 0 {
            // The token asked for an algorithm the server's keys (of that kid) do not use.
            let keyAlgorithms = Set(keys.keys.filter { !byID || $0.id == token.header.keyID }.map { $0.key.algorithm.rawValue })
                .sorted().joined(separator: "/")
            return .failure(.algorithmMismatch(token: algorithm.rawValue, key: keyAlgorithms.isEmpty ? "nothing" : keyAlgorithms))
        }
        return .failure(.badSignature)
    }
}
