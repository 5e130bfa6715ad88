import AccessToken
import Authentication
import Crypto
import _CryptoExtras
import Foundation
import Testing

@Suite struct TokenVerifierTests {
    let now = Int64(Date().timeIntervalSince1970)
    var hsVerifier: TokenVerifier { TokenVerifier(keys: KeySet([(nil, try! VerificationKey.secret(TokenMinter.secret))]), policy: ClaimsPolicy()) }

    func failure(_ v: TokenVerifier, _ token: String) -> String? {
        if case .failure(let f) = v.verify(Array(token.utf8), now: now) { return f.code }
        return nil
    }

    @Test func hs256AcceptsAndReturnsClaims() throws {
        let claims = try hsVerifier.verify(Array(TokenMinter.hs256(TokenMinter.claims(sub: "acc-9"), secret: TokenMinter.secret).utf8), now: now).get()
        #expect(claims.accounts == ["acc-9"])
    }

    @Test func wrongKeyIsBadSignature() {
        let other = Array("another-test-only-secret-0123456789abc".utf8)
        #expect(failure(hsVerifier, TokenMinter.hs256(TokenMinter.claims(), secret: other)) == "bad_signature")
    }

    @Test func tamperedPayloadIsBadSignature() {
        let good = TokenMinter.hs256(TokenMinter.claims(sub: "acc-1"), secret: TokenMinter.secret)
        let parts = good.split(separator: ".").map(String.init)
        let forged = TokenMinter.encode(TokenMinter.claims(sub: "acc-2"))
        #expect(failure(hsVerifier, parts[0] + "." + forged + "." + parts[2]) == "bad_signature")
        #expect(failure(hsVerifier, parts[0] + "." + parts[1] + ".") == "bad_signature")
    }

    @Test func expiredAndMissingExp() {
        #expect(failure(hsVerifier, TokenMinter.hs256(TokenMinter.claims(exp: now - 3600), secret: TokenMinter.secret)) == "expired")
        var noExp = TokenMinter.claims()
        noExp.removeValue(forKey: "exp")
        #expect(failure(hsVerifier, TokenMinter.hs256(noExp, secret: TokenMinter.secret)) == "missing_exp")
    }

    @Test func algNoneAndOtherAlgorithmsAreRefused() {
        let none = TokenMinter.input(TokenMinter.header("none"), TokenMinter.claims()) + "."
        #expect(failure(hsVerifier, none) == "unsupported_algorithm")
        #expect(failure(hsVerifier, TokenMinter.hs256(TokenMinter.claims(), secret: TokenMinter.secret, alg: "HS512")) == "unsupported_algorithm")
    }

    @Test func keyDecidesTheAlgorithm() throws {
        // The classic confusion: an HS256 token "signed" with the server's public key as
        // the HMAC secret must not pass an RS256/ES256 server.
        let ec = P256.Signing.PrivateKey()
        let pem = ec.publicKey.pemRepresentation
        let verifier = TokenVerifier(keys: KeySet([(nil, try VerificationKey.publicKey(pem: pem))]), policy: ClaimsPolicy())
        let confused = TokenMinter.hs256(TokenMinter.claims(), secret: Array(pem.utf8))
        #expect(failure(verifier, confused) == "algorithm_mismatch")
        #expect(failure(verifier, TokenMinter.es256(TokenMinter.claims(), key: ec)) == nil)
        #expect(failure(verifier, TokenMinter.es256(TokenMinter.claims(), key: P256.Signing.PrivateKey())) == "bad_signature")
        // And an HS256 server refuses an ES256 token outright.
        #expect(failure(hsVerifier, TokenMinter.es256(TokenMinter.claims(), key: ec)) == "algorithm_mismatch")
    }

    @Test func rs256FromPEM() throws {
        let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let verifier = TokenVerifier(keys: KeySet([(nil, try VerificationKey.publicKey(pem: rsa.publicKey.pemRepresentation))]), policy: ClaimsPolicy())
        #expect(failure(verifier, TokenMinter.rs256(TokenMinter.claims(), key: rsa)) == nil)
        #expect(failure(verifier, TokenMinter.rs256(TokenMinter.claims(), key: try _RSA.Signing.PrivateKey(keySize: .bits2048))) == "bad_signature")
    }

    @Test func refusesPrivateAndShortKeys() {
        #expect(throws: KeyLoadingError.self) { try VerificationKey.publicKey(pem: P256.Signing.PrivateKey().pemRepresentation) }
        #expect(throws: KeyLoadingError.self) { try VerificationKey.secret(Array("short".utf8)) }
        #expect(throws: KeyLoadingError.self) { try VerificationKey.publicKey(pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") }
    }

    /// A PEM that is neither EC nor RSA (an Ed25519 key, a corrupt body) is refused, every
    /// time: swift-crypto 3.12.3 freed the half-built RSA key twice on this path, which
    /// aborted a test run now and then and would have aborted a server at start.
    @Test func aPublicKeyOfAnotherKindIsRefusedEveryTime() {
        let ed25519 = Curve25519.Signing.PrivateKey().publicKey.rawRepresentation
        // SubjectPublicKeyInfo for id-Ed25519 (1.3.101.112) around the raw key.
        let spki = [0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00] + Array(ed25519)
        let pems = [
            "-----BEGIN PUBLIC KEY-----\n\(Data(spki).base64EncodedString())\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n",
        ]
        for _ in 0..<500 {
            for pem in pems {
                #expect(throws: KeyLoadingError.self) { try VerificationKey.publicKey(pem: pem) }
            }
        }
    }

    @Test func jwksSelectsByKid() throws {
        let a = P256.Signing.PrivateKey()
        let b = P256.Signing.PrivateKey()
        func jwk(_ k: P256.Signing.PrivateKey, _ kid: String) -> String {
            let raw = Array(k.publicKey.rawRepresentation)
            return #"{"kty":"EC","crv":"P-256","kid":"\#(kid)","use":"sig","x":"\#(Base64URL.encode(raw[0..<32]))","y":"\#(Base64URL.encode(raw[32...]))"}"#
        }
        let oct = #"{"kty":"oct","kid":"h","k":"\#(Base64URL.encode(TokenMinter.secret))"}"#
        let set = try JWKS.parse(Array(#"{"keys":[\#(jwk(a, "a")),\#(jwk(b, "b")),\#(oct)]}"#.utf8))
        #expect(set.keys.count == 3)
        let verifier = TokenVerifier(keys: set, policy: ClaimsPolicy())
        #expect(failure(verifier, TokenMinter.es256(TokenMinter.claims(), key: b, kid: "b")) == nil)
        #expect(failure(verifier, TokenMinter.es256(TokenMinter.claims(), key: b, kid: "a")) == "bad_signature")
        #expect(failure(verifier, TokenMinter.es256(TokenMinter.claims(), key: b, kid: "zz")) == "unknown_key")
        #expect(failure(verifier, TokenMinter.hs256(TokenMinter.claims(), secret: TokenMinter.secret, kid: "h")) == nil)
        #expect(failure(verifier, TokenMinter.hs256(TokenMinter.claims(), secret: TokenMinter.secret, kid: "a")) == "algorithm_mismatch")
        #expect(throws: KeyLoadingError.self) { try JWKS.parse(Array(#"{"keys":[{"kty":"EC","crv":"P-256","d":"x"}]}"#.utf8)) }
        #expect(throws: KeyLoadingError.self) { try JWKS.parse(Array(#"{"keys":[]}"#.utf8)) }
    }

    @Test func issuerAudienceThroughVerifier() {
        let v = TokenVerifier(keys: hsVerifier.keys, policy: ClaimsPolicy(issuer: "auth", audience: "tickwire"))
        #expect(failure(v, TokenMinter.hs256(TokenMinter.claims(extra: ["iss": "auth", "aud": "tickwire"]), secret: TokenMinter.secret)) == nil)
        #expect(failure(v, TokenMinter.hs256(TokenMinter.claims(extra: ["iss": "auth", "aud": "other"]), secret: TokenMinter.secret)) == "wrong_audience")
        #expect(failure(v, TokenMinter.hs256(TokenMinter.claims(extra: ["iss": "x", "aud": "tickwire"]), secret: TokenMinter.secret)) == "wrong_issuer")
    }
}
