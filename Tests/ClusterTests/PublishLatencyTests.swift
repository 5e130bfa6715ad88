import Cluster
import Foundation
import Reactor
import Synchronization
import Testing

/// Quick measures of the publish path through a real Redis on loopback, printed for the
/// report (a debug build on a shared machine: the assertions are about correctness, the
/// numbers are indicative).
@Suite(.serialized) struct PublishLatencyTests {
    /// A MarketData-sized body (the 200 bytes).
    static let payload = Array(String(repeating: "x", count: 200).utf8)

    @Test func publishRoundTripOneAtATime() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server, history: 10_000, settings: steadySettings())
        // Arrival time per seq at a subscriber on the same loop: publish-to-delivery.
        let sent = Mutex<[UInt64]>(Array(repeating: 0, count: 10_001))
        let delivered = Mutex<[UInt64]>([])
        let sub = RedisSubscriber(
            endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), settings: steadySettings(), on: redisLoop,
            channels: [StreamKeys().channel]
        ) { _, bytes in
            let now = monotonicNanoseconds()
            if let f = ClusterFrame(bytes), f.firstSeq <= 10_000 {
                let t0 = sent.withLock { $0[Int(f.firstSeq)] }
                delivered.withLock { $0.append(now - t0) }
            }
        }
        let subStates = Recorder<RedisLink.State>()
        sub.onStateChange = { subStates.append($0) }
        sub.start()
        defer { stream.link.close(); sub.close() }
        #expect(waitUntil(5) { states.all.contains(.up) && subStates.all.contains(.up) })

        let n = 10_000
        let samples = Mutex<[UInt64]>([])
        let done = Box<Int>()
        let s = UncheckedSendable(stream)
        @Sendable func next(_ i: Int) {
            guard i < n else { done.set(i); return }
            let start = monotonicNanoseconds()
            sent.withLock { $0[i + 1] = start }
            s.value.publish(Self.payload) { result in
                guard case .success(let p) = result, p.seq == UInt64(i + 1) else { done.set(-1); return }
                let t = monotonicNanoseconds() - start
                samples.withLock { $0.append(t) }
                next(i + 1)
            }
        }
        redisLoop.onLoop { next(0) }
        #expect(done.wait(60) == n)
        let sorted = samples.withLock { $0 }.sorted()
        let q = { (f: Double) in Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * f))]) / 1000 }
        print("cluster publish round trip over \(n) sequential publishes: p50 \(q(0.5)) us, p99 \(q(0.99)) us, max \(q(1)) us")
        #expect(waitUntil(10) { delivered.withLock { $0.count } == n })
        let d = delivered.withLock { $0 }.sorted()
        let dq = { (f: Double) in Double(d[min(d.count - 1, Int(Double(d.count) * f))]) / 1000 }
        print("cluster publish to Pub/Sub delivery: p50 \(dq(0.5)) us, p99 \(dq(0.99)) us")
    }

    @Test func batchedPipelinedPublishesReachASubscriberInOrderWithNoLoss() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server, history: 10_000, settings: steadySettings())
        let (sub, frames, subStates) = startedSubscriber(server, settings: steadySettings())
        defer { stream.link.close(); sub.close() }
        #expect(waitUntil(5) { states.all.contains(.up) && subStates.all.contains(.up) })

        // 200,000 messages, 100 per script call, up to 8 calls in flight.
        let total = 200_000, batch = 100, window = 8
        let batchPayloads = Array(repeating: Self.payload, count: batch)
        let acked = Box<Int>()
        let s = UncheckedSendable(stream)
        let state = UncheckedSendable(Counter())
        @Sendable func fill() {
            let c = state.value
            while c.sent < total && c.inFlight < window {
                c.sent += batch
                c.inFlight += 1
                s.value.publish(batch: batchPayloads) { result in
                    c.inFlight -= 1
                    guard case .success = result else { acked.set(-1); return }
                    c.acked += batch
                    if c.acked == total { acked.set(total) } else { fill() }
                }
            }
        }
        let start = monotonicNanoseconds()
        redisLoop.onLoop { fill() }
        #expect(acked.wait(60) == total)
        #expect(waitUntil(30) { frames.all.last?.lastSeq == UInt64(total) })
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        var expected: UInt64 = 1
        for f in frames.all {
            #expect(f.firstSeq == expected)
            expected = f.lastSeq + 1
        }
        #expect(expected == UInt64(total) + 1)
        print("cluster batched publish: \(total) messages (batches of \(batch), \(window) in flight) acked and delivered in \(seconds) s: \(Int(Double(total) / seconds)) msg/s")
    }

    final class Counter {
        var sent = 0, inFlight = 0, acked = 0
    }
}

@Suite(.serialized) struct ClusterPublisherTests {
    @Test func fourThreadsPublishThroughOnePublisherInBatchesWithNoLossAndTheirOwnOrder() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server, history: 10_000, settings: steadySettings())
        let (sub, frames, subStates) = startedSubscriber(server, settings: steadySettings())
        defer { stream.link.close(); sub.close() }
        let calls = Recorder<Int>()
        let s = UncheckedSendable(stream)
        redisLoop.onLoop { s.value.onPublishAcknowledged = { _, n in calls.append(n) } }
        #expect(waitUntil(5) { states.all.contains(.up) && subStates.all.contains(.up) })
        let publisher = ClusterPublisher(stream: stream)

        let threads = 4, each = 25_000, total = threads * each
        let acks = (0..<threads).map { _ in Recorder<UInt64>() }
        let failures = Recorder<RedisFailure>()
        let start = monotonicNanoseconds()
        let producers = (0..<threads).map { t in
            Thread {
                for i in 0..<each {
                    var payload = Array(String(repeating: "x", count: 180).utf8)
                    payload.append(contentsOf: "t\(t)i\(i)".utf8)
                    publisher.publish(payload) { r in
                        switch r {
                        case .success(let p): acks[t].append(p.seq)
                        case .failure(let f): failures.append(f)
                        }
                    }
                }
            }
        }
        producers.forEach { $0.start() }
        try #require(waitUntil(60) { acks.reduce(0) { $0 + $1.count } + failures.count == total })
        #expect(waitUntil(30) { frames.all.last?.lastSeq == UInt64(total) })
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        #expect(failures.count == 0)
        let all = acks.flatMap(\.all)
        #expect(Set(all).count == total && all.min() == 1 && all.max() == UInt64(total))
        for a in acks { #expect(a.all == a.all.sorted()) }  // each thread's own order
        var expected: UInt64 = 1
        var delivered = 0
        for f in frames.all {
            #expect(f.firstSeq == expected)
            expected = f.lastSeq + 1
            delivered += f.payloads.count
        }
        #expect(delivered == total)
        let c = calls.all
        #expect(c.reduce(0, +) == total && (c.max() ?? .max) <= publisher.maxBatch)
        print("cluster publisher: \(total) messages from \(threads) threads acked and delivered in \(seconds) s: \(Int(Double(total) / seconds)) msg/s, \(c.count) script calls (mean batch \(total / c.count))")
    }
}
