import AccessToken
import Crypto
import _CryptoExtras
import Glibc
import TradingStream

/// A key that verifies tokens, and with it the one algorithm it verifies: the key decides
/// the algorithm, the token's header only has to agree (RFC 8725 §3.1).
public enum VerificationKey: @unchecked Sendable {
    // @unchecked: the swift-crypto key types are immutable values; the keyed HMAC is only
    // ever copied (its hash states are copy-on-write), never mutated in place.
    /// The HMAC with its key already folded into the inner and outer hash states: each
    /// verification copies it instead of padding and hashing the key again.
    case hmac(HMAC<SHA256>)
    case rsa(_RSA.Signing.PublicKey)
    case p256(P256.Signing.PublicKey)

    public var algorithm: SigningAlgorithm {
        switch self {
        case .hmac: return .hs256
        case .rsa: return .rs256
        case .p256: return .es256
        }
    }

    /// Whether `signature` is this key's over `input`. The comparisons are swift-crypto's
    /// (constant time for HMAC).
    public func verifies(_ signature: [UInt8], over input: [UInt8]) -> Bool {
        input.withUnsafeBytes { verifies(signature, over: $0) }
    }

    public func verifies(_ signature: [UInt8], over input: UnsafeRawBufferPointer) -> Bool {
        switch self {
        case .hmac(let keyed):
            var mac = keyed
            mac.update(data: input)
            return mac.finalize() == signature   // swift-crypto's constant-time comparison
        case .rsa(let key):
            let sig = _RSA.Signing.RSASignature(rawRepresentation: signature)
            return key.isValidSignature(sig, for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5)
        case .p256(let key):
            // JWS ES256 signatures are r || s, 32 bytes each (RFC 7518 §3.4), not DER.
            guard signature.count == 64, let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: SHA256.hash(data: input))
        }
    }

    /// Shortest HS256 secret: RFC 7518 §3.2 wants a key at least as long as the hash.
    public static let minimumSecretBytes = 32
    /// Smallest RSA modulus accepted (RFC 7518 §3.3).
    public static let minimumRSABits = 2048

    /// An HS256 secret: the file's bytes, less one trailing newline (editors add one).
    public static func secret(_ bytes: [UInt8]) throws(KeyLoadingError) -> VerificationKey {
        var b = bytes
        if b.last == 0x0A { b.removeLast(); if b.last == 0x0D { b.removeLast() } }
        guard b.count >= minimumSecretBytes else {
            throw KeyLoadingError("an HS256 secret must be at least \(minimumSecretBytes) bytes (got \(b.count)); generate one with `openssl rand -base64 48`")
        }
        return .hmac(HMAC<SHA256>(key: SymmetricKey(data: b)))
    }

    /// A PEM public key: RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`) or EC P-256.
    public static func publicKey(pem: String) throws(KeyLoadingError) -> VerificationKey {
        if pem.contains("PRIVATE KEY") {
            throw KeyLoadingError("the file holds a private key; give the server the public key only (`openssl pkey -pubout`)")
        }
        if let ec = try? P256.Signing.PublicKey(pemRepresentation: pem) { return .p256(ec) }
        if let rsa = try? _RSA.Signing.PublicKey(unsafePEMRepresentation: pem) {
            guard rsa.keySizeInBits >= minimumRSABits else {
                throw KeyLoadingError("RSA keys must be at least \(minimumRSABits) bits (got \(rsa.keySizeInBits))")
            }
            return .rsa(rsa)
        }
        throw KeyLoadingError("not a PEM RSA or EC P-256 public key")
    }
}

/// Why a key file could not be used, phrased as what to fix.
public struct KeyLoadingError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The keys a server verifies tokens with, each optionally named by a `kid`.
public struct KeySet: Sendable {
    public var keys: [(id: String?, key: VerificationKey)]

    public init(_ keys: [(id: String?, key: VerificationKey)] = []) { self.keys = keys }

    public var isEmpty: Bool { keys.isEmpty }

    /// Loads the configured files; each one named must exist and hold a usable key.
    public static func load(secretFile: String?, publicKeyFile: String?, jwksFile: String?) throws(KeyLoadingError) -> KeySet {
        var set = KeySet()
        if let secretFile {
            do { set.keys.append((nil, try VerificationKey.secret(try readFile(secretFile)))) }
            catch { throw KeyLoadingError("--jwt-secret-file \(secretFile): \(error)") }
        }
        if let publicKeyFile {
            do { set.keys.append((nil, try VerificationKey.publicKey(pem: String(decoding: try readFile(publicKeyFile), as: UTF8.self)))) }
            catch { throw KeyLoadingError("--jwt-public-key-file \(publicKeyFile): \(error)") }
        }
        if let jwksFile {
            do { set.keys += try JWKS.parse(try readFile(jwksFile)).keys }
            catch { throw KeyLoadingError("--jwks-file \(jwksFile): \(error)") }
        }
        return set
    }

    static func readFile(_ path: String) throws(KeyLoadingError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw KeyLoadingError("cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw KeyLoadingError("cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            out += chunk[..<n]
            // Key files are small; a huge one is a mistake (a wrong path).
            if out.count > 1 << 20 { throw KeyLoadingError("larger than 1 MiB; is this the right file?") }
        }
        return out
    }
}

/// A JSON Web Key Set file (RFC 7517 §5): `{"keys":[...]}` with `oct`, `RSA` and `EC`
/// (P-256) keys. Keys for other uses (`use` other than `sig`) and private members are refused.
public enum JWKS {
    public static func parse(_ bytes: [UInt8]) throws(KeyLoadingError) -> KeySet {
        var out = KeySet()
        let problem: String? = bytes.withUnsafeBytes { raw -> String? in
            guard let root = try? JSONScanner.parse(raw), root.kind == .object,
                  let keys = JSONScanner.member("keys", of: root, in: raw), keys.kind == .array
            else { return "not a JWK Set: expected {\"keys\": [...]}" }
            for (i, jwk) in JSONScanner.elements(of: keys, in: raw).enumerated() {
                func field(_ name: StaticString) -> String? {
                    JSONScanner.member(name, of: jwk, in: raw).flatMap { JSONScanner.string($0, in: raw) }
                }
                func bytesField(_ name: StaticString) -> [UInt8]? { field(name).flatMap { Base64URL.decode(Array($0.utf8)) } }
                guard jwk.kind == .object, let kty = field("kty") else { return "key \(i) has no 'kty'" }
                if let use = field("use"), use != "sig" { continue }
                if JSONScanner.member("d", of: jwk, in: raw) != nil { return "key \(i) is a private key; publish public keys only" }
                let key: VerificationKey
                switch kty {
                case "oct":
                    guard let k = bytesField("k") else { return "key \(i) (oct) needs 'k'" }
                    guard let made = try? VerificationKey.secret(k) else { return "key \(i) (oct) is shorter than \(VerificationKey.minimumSecretBytes) bytes" }
                    key = made
                case "RSA":
                    guard let n = bytesField("n"), let e = bytesField("e"), let rsa = try? _RSA.Signing.PublicKey(n: n, e: e) else {
                        return "key \(i) (RSA) needs base64url 'n' and 'e'"
                    }
                    guard rsa.keySizeInBits >= VerificationKey.minimumRSABits else { return "key \(i) (RSA) is under \(VerificationKey.minimumRSABits) bits" }
                    key = .rsa(rsa)
                case "EC":
                    guard field("crv") == "P-256" else { return "key \(i) (EC) must be on curve P-256 (ES256)" }
                    guard let x = bytesField("x"), let y = bytesField("y"), x.count == 32, y.count == 32,
                          let ec = try? P256.Signing.PublicKey(rawRepresentation: x + y)
                    else { return "key \(i) (EC) needs 32-byte base64url 'x' and 'y' on P-256" }
                    key = .p256(ec)
                default:
                    return "key \(i) has kty '\(kty.prefix(16))'; use oct, RSA or EC"
                }
                if let alg = field("alg"), alg != key.algorithm.rawValue {
                    return "key \(i) says alg \(alg.prefix(16)) but is a \(key.algorithm.rawValue) key"
                }
                out.keys.append((field("kid"), key))
            }
            return out.keys.isEmpty ? "the set holds no signing key" : nil
        }
        if let problem { throw KeyLoadingError(problem) }
        return out
    }
}
