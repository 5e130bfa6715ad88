// AccessToken.parse and ClaimsPolicy: parsing never traps; a token that parses re-encodes
// (header and payload parts) to the same signing input; base64url decode(encode(x)) == x on
// the raw input; the claim checks never trap and a token without exp always fails them.
import AccessToken

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJWT(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    require(Base64URL.decode(Array(Base64URL.encode(input).utf8)) == input, "base64url round trip")
    if case .success(let token) = AccessToken.parse(input) {
        require(input.starts(with: token.signingInput), "signing input is the token's prefix")
        let policy = ClaimsPolicy(issuer: "i", audience: "a", leewaySeconds: 30)
        let failure = policy.check(token.claims, now: 1_700_000_000)
        if token.claims.expiresAt == nil { require(failure == .missingExpiry, "no exp must fail") }
        _ = token.claims.accounts
    }
    return 0
}
