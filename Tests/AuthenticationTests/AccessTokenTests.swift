import AccessToken
import Testing

@Suite struct Base64URLTests {
    @Test func roundTripsEveryLength() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let text = Base64URL.encode(bytes)
            #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
            #expect(Base64URL.decode(Array(text.utf8)) == bytes)
        }
    }

    @Test func refusesNonCanonicalText() {
        #expect(Base64URL.decode(Array("QQ==".utf8)) == nil)      // padding
        #expect(Base64URL.decode(Array("Q".utf8)) == nil)         // impossible length
        #expect(Base64URL.decode(Array("QR".utf8)) == nil)        // spare bits set
        #expect(Base64URL.decode(Array("QQ".utf8)) == [0x41])
        #expect(Base64URL.decode(Array("a+b/".utf8)) == nil)      // base64, not base64url
    }
}

@Suite struct AccessTokenParsingTests {
    func token(_ header: String, _ payload: String, _ sig: String = "c2ln") -> [UInt8] {
        Array((Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(Array(payload.utf8)) + "." + sig).utf8)
    }

    @Test func readsClaims() throws {
        let t = try AccessToken.parse(token(#"{"alg":"HS256","kid":"k1"}"#,
            #"{"sub":"acc-1","accounts":["acc-2","acc-1"],"exp":1700000000.9,"nbf":10,"iss":"me","aud":"tickwire","channels":["MarketData"],"symbols":["BTCUSDT"]}"#)).get()
        #expect(t.header == TokenHeader(algorithm: "HS256", keyID: "k1"))
        #expect(t.claims.accounts == ["acc-1", "acc-2"])
        #expect(t.claims.expiresAt == 1_700_000_000)
        #expect(t.claims.notBefore == 10)
        #expect(t.claims.audience == ["tickwire"])
        #expect(t.claims.channels == ["MarketData"])
        #expect(t.claims.symbols == ["BTCUSDT"])
        #expect(t.signature == Array("sig".utf8))
        #expect(String(decoding: t.signingInput, as: UTF8.self).split(separator: ".").count == 2)
    }

    @Test func audienceArray() throws {
        let t = try AccessToken.parse(token(#"{"alg":"ES256"}"#, #"{"aud":["a","b"]}"#)).get()
        #expect(t.claims.audience == ["a", "b"])
        #expect(t.claims.channels == nil && t.claims.symbols == nil)
    }

    @Test(arguments: [
        ("", "token_missing"),
        ("abc", "malformed"),
        ("a.b.c.d", "malformed"),
        ("a.b", "malformed"),
        ("!!.e30.c2ln", "malformed"),
    ])
    func refusesBadShapes(_ text: String, _ code: String) {
        guard case .failure(let f) = AccessToken.parse(Array(text.utf8)) else { Issue.record("accepted \(text)"); return }
        #expect(f.code == code)
    }

    @Test(arguments: [
        (#"{"alg":"HS256"}"#, #"[1]"#),
        (#"[]"#, #"{}"#),
        (#"{}"#, #"{}"#),
        (#"{"alg":1}"#, #"{}"#),
        (#"{"alg":"HS256","crit":["x"]}"#, #"{}"#),
        (#"{"alg":"HS256"}"#, #"{"sub":1}"#),
        (#"{"alg":"HS256"}"#, #"{"exp":"soon"}"#),
        (#"{"alg":"HS256"}"#, #"{"accounts":"acc-1"}"#),
        (#"{"alg":"HS256"}"#, #"{"sub":"a","sub":"b"}"#),
        (#"{"alg":"HS256","alg":"none"}"#, #"{}"#),
        (#"{"alg":"HS256"}"#, #"{"exp":1e400}"#),
        (#"{"alg":"HS256"}"#, #"not json"#),
    ])
    func refusesBadJSON(_ header: String, _ payload: String) {
        guard case .failure(let f) = AccessToken.parse(token(header, payload)) else { Issue.record("accepted \(header) \(payload)"); return }
        #expect(f.code == "malformed")
    }

    @Test func refusesOverlongTokens() {
        let long = token(#"{"alg":"HS256"}"#, "{\"x\":\"" + String(repeating: "a", count: AccessToken.maxLength) + "\"}")
        guard case .failure(let f) = AccessToken.parse(long) else { Issue.record("accepted"); return }
        #expect(f.code == "malformed")
    }
}

@Suite struct ClaimsPolicyTests {
    func claims(exp: Int64? = 1000, nbf: Int64? = nil, iss: String? = nil, aud: [String] = []) -> TokenClaims {
        var c = TokenClaims()
        c.expiresAt = exp
        c.notBefore = nbf
        c.issuer = iss
        c.audience = aud
        return c
    }

    @Test func expiryWithLeeway() {
        let p = ClaimsPolicy(leewaySeconds: 30)
        #expect(p.check(claims(), now: 900) == nil)
        #expect(p.check(claims(), now: 1029) == nil)
        #expect(p.check(claims(), now: 1030) == .expired)
        #expect(p.check(claims(exp: nil), now: 0) == .missingExpiry)
        #expect(ClaimsPolicy(leewaySeconds: 0).check(claims(), now: 1000) == .expired)
    }

    @Test func notBeforeWithLeeway() {
        let p = ClaimsPolicy(leewaySeconds: 5)
        #expect(p.check(claims(nbf: 100), now: 95) == nil)
        #expect(p.check(claims(nbf: 100), now: 94) == .notYetValid)
    }

    @Test func issuerAndAudience() {
        let p = ClaimsPolicy(issuer: "auth.example", audience: "tickwire")
        #expect(p.check(claims(iss: "auth.example", aud: ["x", "tickwire"]), now: 0) == nil)
        #expect(p.check(claims(iss: "evil", aud: ["tickwire"]), now: 0) == .wrongIssuer)
        #expect(p.check(claims(iss: nil, aud: ["tickwire"]), now: 0) == .wrongIssuer)
        #expect(p.check(claims(iss: "auth.example", aud: ["other"]), now: 0) == .wrongAudience)
        #expect(ClaimsPolicy().check(claims(iss: "any", aud: ["any"]), now: 0) == nil)
    }
}
