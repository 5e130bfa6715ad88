import AccessToken
import Crypto
import _CryptoExtras
import Foundation

/// Signs test tokens with keys made at test time (never committed).
enum TokenMinter {
    static func header(_ alg: String, kid: String? = nil) -> [String: Any] {
        var h: [String: Any] = ["alg": alg, "typ": "JWT"]
        if let kid { h["kid"] = kid }
        return h
    }

    static func encode(_ object: [String: Any]) -> String {
        Base64URL.encode(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    static func input(_ header: [String: Any], _ claims: [String: Any]) -> String {
        encode(header) + "." + encode(claims)
    }

    static func hs256(_ claims: [String: Any], secret: [UInt8], kid: String? = nil, alg: String = "HS256") -> String {
        let signingInput = input(header(alg, kid: kid), claims)
        let mac = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: SymmetricKey(data: secret))
        return signingInput + "." + Base64URL.encode(Array(mac))
    }

    static func es256(_ claims: [String: Any], key: P256.Signing.PrivateKey, kid: String? = nil) -> String {
        let signingInput = input(header("ES256", kid: kid), claims)
        let sig = try! key.signature(for: Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(Array(sig.rawRepresentation))
    }

    static func rs256(_ claims: [String: Any], key: _RSA.Signing.PrivateKey, kid: String? = nil) -> String {
        let signingInput = input(header("RS256", kid: kid), claims)
        let sig = try! key.signature(for: SHA256.hash(data: Array(signingInput.utf8)), padding: .insecurePKCS1v1_5)
        return signingInput + "." + Base64URL.encode(Array(sig.rawRepresentation))
    }

    static func claims(sub: String = "acc-1", exp: Int64? = nil, extra: [String: Any] = [:]) -> [String: Any] {
        var c: [String: Any] = ["sub": sub]
        c["exp"] = exp ?? (Int64(Date().timeIntervalSince1970) + 300)
        for (k, v) in extra { c[k] = v }
        return c
    }

    static let secret = Array("test-only-hs256-secret-0123456789abcdef".utf8)
}
