// AccessToken.parse and ClaimsPolicy: parsing never traps; a token that parses re-encodes
// (header and payload parts) to the same signing input; base64url decode(encode(x)) == x on
// the raw input; parsing in place (the server's path) agrees with parsing a copy; the claim
// checks never trap and a token without exp always fails them; locating a token in an
// Authorization header never traps and yields a token from within the header.
import AccessToken

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJWT(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    require(Base64URL.decode(Array(Base64URL.encode(input).utf8)) == input, "base64url round trip")
    let parsed = AccessToken.parse(input)
    require(AccessToken.parse(UnsafeRawBufferPointer(start: data, count: size)) == parsed, "in place and copied parses agree")
    let header = String(decoding: input, as: UTF8.self)
    if case .success(let located?) = TokenLocation.locate(authorization: header, subprotocols: nil, query: nil) {
        require(!located.token.isEmpty && header.contains(located.token), "the located token is in the header")
    }
    if case .success(let token) = parsed {
        require(input.starts(with: token.signingInput), "signing input is the token's prefix")
        let policy = ClaimsPolicy(issuer: "i", audience: "a", leewaySeconds: 30)
        let failure = policy.check(token.claims, now: 1_700_000_000)
        if token.claims.expiresAt == nil { require(failure == .missingExpiry, "no exp must fail") }
        _ = token.claims.accounts
    }
    return 0
}
