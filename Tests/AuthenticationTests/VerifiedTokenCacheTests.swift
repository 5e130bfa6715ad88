import AccessToken
import Authentication
import Testing

@Suite struct VerifiedTokenCacheTests {
    func stored(_ cache: VerifiedTokenCache, _ token: String, sub: String) {
        var claims = TokenClaims()
        claims.subject = sub
        claims.expiresAt = 2_000_000_000
        Array(token.utf8).withUnsafeBytes { cache.store($0, hash: VerifiedTokenCache.hash($0), claims: claims, grant: AccessGrant(claims)) }
    }

    func found(_ cache: VerifiedTokenCache, _ token: String) -> String? {
        Array(token.utf8).withUnsafeBytes { cache.lookup($0, hash: VerifiedTokenCache.hash($0))?.claims.subject }
    }

    @Test func onlyTheExactBytesHit() {
        let cache = VerifiedTokenCache(capacity: 16)
        stored(cache, "aaa.bbb.ccc", sub: "acc-1")
        #expect(found(cache, "aaa.bbb.ccc") == "acc-1")
        #expect(found(cache, "aaa.bbb.ccd") == nil)
        #expect(found(cache, "aaa.bbb.cc") == nil)
        #expect(found(cache, "aaa.bbb.ccc ") == nil)
        #expect(found(cache, "") == nil)
    }

    @Test func aSlotHoldsOneTokenAndTheNewestWins() {
        // Capacity 1: every token shares the one slot.
        let cache = VerifiedTokenCache(capacity: 1)
        #expect(cache.capacity == 1)
        stored(cache, "first.token.x", sub: "acc-1")
        stored(cache, "second.token.y", sub: "acc-2")
        #expect(found(cache, "first.token.x") == nil)
        #expect(found(cache, "second.token.y") == "acc-2")
    }

    @Test func capacityIsAPowerOfTwoAndBounded() {
        #expect(VerifiedTokenCache(capacity: 1000).capacity == 1024)
        #expect(VerifiedTokenCache(capacity: 0).capacity == 1)
        let cache = VerifiedTokenCache(capacity: 64)
        for i in 0..<10_000 { stored(cache, "t.\(i).s", sub: "acc-\(i)") }
        var hits = 0
        for i in 0..<10_000 where found(cache, "t.\(i).s") == "acc-\(i)" { hits += 1 }
        #expect(hits > 0 && hits <= 64)
    }

    @Test func aTokenLongerThanTheLimitIsNotKept() {
        let cache = VerifiedTokenCache(capacity: 4)
        let long = String(repeating: "a", count: AccessToken.maxLength + 1)
        stored(cache, long, sub: "acc-1")
        #expect(found(cache, long) == nil)
    }
}
