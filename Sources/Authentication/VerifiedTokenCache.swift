import AccessToken
import Glibc

/// The tokens one reactor verified last, found by their exact bytes. A dashboard that
/// reconnects, or opens a second tab, presents the token it already used: a hit skips the
/// parse and the signature, and only the claim checks (exp, nbf, iss, aud) run again, at
/// the new `now`. Only a byte-for-byte equal token hits, so every hit is a token whose
/// signature was checked. Keys are read once at start-up and never change, so no entry
/// goes stale. Not thread-safe: one per reactor.
///
/// Direct-mapped (the slot is a hash of the bytes): a lookup is one hash and one compare,
/// and a new token simply takes its slot's place. Bounded: `capacity` entries of at most
/// `AccessToken.maxLength` bytes each, plus their claims.
public final class VerifiedTokenCache {
    private struct Entry {
        var hash: UInt64
        var token: [UInt8]
        var claims: TokenClaims
        var grant: AccessGrant
    }

    private var entries: [Entry?]
    private let mask: Int
    public var capacity: Int { entries.count }

    /// `capacity` is rounded up to a power of two (at least 1).
    public init(capacity: Int) {
        var n = 1
        while n < capacity { n <<= 1 }
        entries = Array(repeating: nil, count: n)
        mask = n - 1
    }

    /// FNV-1a, 64 bits: the slot and a first filter before the byte compare.
    @inline(__always)
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return h
    }

    /// The claims and grant of `token` if it was verified before.
    public func lookup(_ token: UnsafeRawBufferPointer, hash: UInt64) -> (claims: TokenClaims, grant: AccessGrant)? {
        guard !token.isEmpty, let e = entries[Int(truncatingIfNeeded: hash) & mask], e.hash == hash, e.token.count == token.count else { return nil }
        let same = e.token.withUnsafeBytes { memcmp($0.baseAddress!, token.baseAddress!, token.count) == 0 }
        return same ? (e.claims, e.grant) : nil
    }

    /// Remembers a token whose signature verified.
    public func store(_ token: UnsafeRawBufferPointer, hash: UInt64, claims: TokenClaims, grant: AccessGrant) {
        guard !token.isEmpty, token.count <= AccessToken.maxLength else { return }
        entries[Int(truncatingIfNeeded: hash) & mask] = Entry(hash: hash, token: Array(token), claims: claims, grant: grant)
    }
}
