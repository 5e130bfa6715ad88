import Cluster
import Foundation
import Reactor
import Testing

/// A lease on its own link, with the events it reported ("acquired", "lost: why").
func startedLease(_ server: RedisServer, key: String = "tickwire:lease:test", ttl: Double = 0.6, id: String) -> (LeaderLease, RedisLink, Recorder<String>) {
    let (link, _) = startedLink(server)
    let events = Recorder<String>()
    let lease = LeaderLease(link: link, key: key, ttl: ttl, nodeID: id,
                            onAcquired: { events.append("acquired") }, onLost: { events.append("lost: \($0)") })
    lease.start()
    return (lease, link, events)
}

@Suite(.serialized) struct LeaderLeaseTests {
    @Test func exactlyOneOfTwoHoldsItAndTheOtherTakesOverAfterARelease() throws {
        let server = try RedisServer()
        let (a, linkA, eventsA) = startedLease(server, id: "node-a")
        defer { linkA.close() }
        #expect(waitUntil(5) { a.isLeader })
        let (b, linkB, eventsB) = startedLease(server, id: "node-b")
        defer { linkB.close() }
        // Over several ttls (each renewed every ttl/3), b never gets it while a renews.
        let until = Date().addingTimeInterval(2)
        var overlaps = 0
        while Date() < until {
            if a.isLeader == b.isLeader { overlaps += 1 }
            usleep(5_000)
        }
        #expect(overlaps == 0)
        #expect(try server.command("GET", "tickwire:lease:test") == "node-a")
        let released = Box<Bool>()
        a.stop { released.set(true) }
        #expect(released.wait(5) == true)
        #expect(eventsA.all == ["acquired", "lost: released"])
        // The key was deleted, so b's next try (within ttl/3) wins, not one after the ttl.
        #expect(waitUntil(0.6 / 3 + 1) { b.isLeader })
        #expect(eventsB.all == ["acquired"])
        #expect(try server.command("GET", "tickwire:lease:test") == "node-b")
        b.stop()
    }

    @Test func aLeaderCutOffFromRedisStopsBeforeTheKeyCouldExpire() throws {
        let server = try RedisServer()
        let ttl = 0.9
        let (a, link, events) = startedLease(server, ttl: ttl, id: "node-a")
        defer { link.close() }
        #expect(waitUntil(5) { a.isLeader })
        server.pause()
        let paused = Date()
        #expect(waitUntil(ttl + 1) { !a.isLeader })
        let gaveUp = Date().timeIntervalSince(paused)
        // The last renew was sent at most ttl/3 before the pause; the lease is given up
        // at 80% of the ttl after it, so before Redis would let the key go (a correctness
        // bound, with slack for a loaded test machine's scheduling).
        #expect(gaveUp < ttl * LeaderLease.safeFraction + 0.25)
        #expect(events.all.last?.hasPrefix("lost: no renew") == true)
        server.resume()
        // Still ours in Redis until it expires; then this node may take it again.
        #expect(waitUntil(ttl + 3) { a.isLeader })
        #expect(events.all.filter { $0 == "acquired" }.count == 2)
        a.stop()
    }

    @Test func aTakenKeyIsLostAtTheNextRenew() throws {
        let server = try RedisServer()
        let (a, link, events) = startedLease(server, id: "node-a")
        defer { link.close() }
        #expect(waitUntil(5) { a.isLeader })
        try server.command("SET", "tickwire:lease:test", "intruder", "PX", "60000")
        #expect(waitUntil(2) { !a.isLeader })
        #expect(events.all.last?.hasPrefix("lost: the key no longer holds") == true)
        // Stopping does not delete another node's key.
        let released = Box<Bool>()
        a.stop { released.set(true) }
        #expect(released.wait(5) == true)
        #expect(try server.command("GET", "tickwire:lease:test") == "intruder")
    }

    @Test func ttlsOutsideTheRangeAreRefusedWithTheReason() {
        #expect(LeaderLease.validate(ttl: 5) == nil)
        #expect(LeaderLease.validate(ttl: 0.1)?.contains("between 0.3 s and 300 s") == true)
        #expect(LeaderLease.validate(ttl: 301) != nil)
    }
}
