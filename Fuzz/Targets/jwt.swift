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
        // On the bytes: the token is cut on bytes, and Character comparison would see a
        // combining mark after the scheme's space as part of that space.
        let token = Array(located.token.utf8), bytes = Array(header.utf8)
        let within = token.count <= bytes.count && (0...(bytes.count - token.count)).contains { bytes[$0..<($0 + token.count)].elementsEqual(token) }
        require(!token.isEmpty && within, "the located token is in the header")
        require(token.first != 0x20 && token.first != 0x09 && token.last != 0x20 && token.last != 0x09, "the token is trimmed")
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
