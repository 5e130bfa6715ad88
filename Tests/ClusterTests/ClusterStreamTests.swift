import Cluster
import Foundation
import Reactor
import Testing

/// A started link with a stream on it (the stream must exist before the link starts).
func startedStream(_ server: RedisServer, history: Int = 1000, settings: RedisLinkSettings = quickSettings())
    -> (ClusterStream, Recorder<RedisLink.State>)
{
    let link = RedisLink(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), settings: settings, on: redisLoop)
    let stream = ClusterStream(link: link, history: history)
    let states = Recorder<RedisLink.State>()
    link.onStateChange = { states.append($0) }
    link.start()
    return (stream, states)
}

/// A started subscriber recording every frame it receives.
func startedSubscriber(_ server: RedisServer, settings: RedisLinkSettings = quickSettings())
    -> (RedisSubscriber, Recorder<ClusterFrame>, Recorder<RedisLink.State>)
{
    let frames = Recorder<ClusterFrame>()
    let states = Recorder<RedisLink.State>()
    let sub = RedisSubscriber(
        endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), settings: settings, on: redisLoop,
        channels: [StreamKeys().channel]
    ) { _, payload in
        if let f = ClusterFrame(payload) { frames.append(f) }
    }
    sub.onStateChange = { states.append($0) }
    sub.start()
    return (sub, frames, states)
}

func publish(_ stream: ClusterStream, _ payload: String) -> Result<StreamPosition, RedisFailure>? {
    let box = Box<Result<StreamPosition, RedisFailure>>()
    let s = UncheckedSendable(stream)
    redisLoop.onLoop { s.value.publish(Array(payload.utf8)) { box.set($0) } }
    return box.wait()
}

func head(_ stream: ClusterStream) -> StreamPosition? {
    let box = Box<Result<StreamPosition, RedisFailure>>()
    let s = UncheckedSendable(stream)
    redisLoop.onLoop { s.value.head { box.set($0) } }
    return try? box.wait()?.get()
}

func range(_ stream: ClusterStream, from: UInt64, count: Int) -> StreamRange? {
    let box = Box<Result<StreamRange, RedisFailure>>()
    let s = UncheckedSendable(stream)
    redisLoop.onLoop { s.value.range(from: from, count: count) { box.set($0) } }
    return try? box.wait()?.get()
}

@Suite(.serialized) struct ClusterStreamTests {
    @Test func publishesFromTwoLinksTakeOneGaplessOrderThatEverySubscriberSees() throws {
        let server = try RedisServer()
        let (a, aStates) = startedStream(server, settings: steadySettings())
        let (b, bStates) = startedStream(server, settings: steadySettings())
        let (s1, frames1, s1States) = startedSubscriber(server, settings: steadySettings())
        let (s2, frames2, s2States) = startedSubscriber(server, settings: steadySettings())
        defer { [a.link, b.link, s1.link, s2.link].forEach { $0.close() } }
        #expect(waitUntil(5) { [aStates, bStates, s1States, s2States].allSatisfy { $0.all.contains(.up) } })

        // Both links publish at once, interleaved on the loop, with many in flight.
        let n = 2000
        let acks = Recorder<(String, StreamPosition)>()
        let streams = UncheckedSendable((a, b))
        redisLoop.onLoop {
            for i in 0..<n {
                let stream = i % 2 == 0 ? streams.value.0 : streams.value.1
                let payload = "m\(i)"
                stream.publish(Array(payload.utf8)) { if case .success(let p) = $0 { acks.append((payload, p)) } }
            }
        }
        // A deadline for a loaded machine; what follows needs every ack, so stop here without.
        try #require(waitUntil(30) { acks.count == n }, "\(acks.count) of \(n) publishes acknowledged")
        let epochs = Set(acks.all.map(\.1.epoch))
        #expect(epochs.count == 1)
        #expect(acks.all.map(\.1.seq).sorted() == (1...UInt64(n)).map { $0 })
        // Each link's own publishes keep their order too.
        let seqOfPayload = Dictionary(uniqueKeysWithValues: acks.all.map { ($0.0, $0.1.seq) })
        for parity in 0..<2 {
            let mine = stride(from: parity, to: n, by: 2).compactMap { seqOfPayload["m\($0)"] }
            #expect(mine.count == n / 2)
            #expect(mine == mine.sorted())
        }

        for frames in [frames1, frames2] {
            #expect(waitUntil(30) { frames.all.reduce(0) { $0 + $1.payloads.count } == n })
            var expected: UInt64 = 1
            for f in frames.all {
                #expect(f.firstSeq == expected && f.epoch == epochs.first)
                for p in f.payloads {
                    #expect(seqOfPayload[String(decoding: p, as: UTF8.self)] == expected)
                    expected += 1
                }
            }
            #expect(expected == UInt64(n) + 1)
        }
    }

    @Test func epochIsSetOnceAndChangesWhenRedisLosesTheStream() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server)
        defer { stream.link.close() }
        #expect(waitUntil(5) { states.all.contains(.up) })

        // The head creates the epoch; publishes keep it.
        let h0 = try #require(head(stream))
        #expect(h0.seq == 0 && h0.epoch.count == 16)
        #expect(try publish(stream, "a")?.get() == StreamPosition(epoch: h0.epoch, seq: 1))
        #expect(try publish(stream, "b")?.get() == StreamPosition(epoch: h0.epoch, seq: 2))
        #expect(head(stream) == StreamPosition(epoch: h0.epoch, seq: 2))

        try server.command("FLUSHALL")
        let p = try #require(try publish(stream, "c")?.get())
        #expect(p.epoch != h0.epoch && p.seq == 1)
        #expect(head(stream) == p)
        let r = try #require(range(stream, from: 1, count: 10))
        #expect(r.entries == [StreamEntry(seq: 1, payload: Array("c".utf8))])

        // A stream lost while its meta hash survived (evicted alone) is a loss too.
        try server.command("DEL", StreamKeys().stream)
        let q = try #require(try publish(stream, "d")?.get())
        #expect(q.epoch != p.epoch && q.seq == 1)
    }

    @Test func rangeAfterTrimmingAndAtTheHead() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server, history: 100)
        defer { stream.link.close() }
        #expect(waitUntil(5) { states.all.contains(.up) })

        let done = Box<StreamPosition>()
        let s = UncheckedSendable(stream)
        redisLoop.onLoop {
            // 1,000 messages in batches of 50, all in flight at once.
            for batch in 0..<20 {
                let payloads = (0..<50).map { Array("p\(batch * 50 + $0 + 1)".utf8) }
                s.value.publish(batch: payloads) { if case .success(let p) = $0, p.seq == 1000 { done.set(p) } }
            }
        }
        let last = try #require(done.wait())
        let all = try #require(range(stream, from: 1, count: 5000))
        #expect(all.head == last)
        #expect(all.entries.count >= 100 && all.entries.count < 1000)
        #expect(!all.starts(at: 1))
        #expect(all.entries.map(\.seq) == Array((1001 - UInt64(all.entries.count))...1000))
        #expect(all.entries.last?.payload == Array("p1000".utf8))

        let some = try #require(range(stream, from: 990, count: 5))
        #expect(some.starts(at: 990) && some.entries.map(\.seq) == [990, 991, 992, 993, 994])
        #expect(some.entries[0].payload == Array("p990".utf8))
        let none = try #require(range(stream, from: 1001, count: 5))
        #expect(none.entries.isEmpty && none.starts(at: 1001))
    }

    @Test func scriptFlushedWhileConnectedFallsBackToEval() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server)
        defer { stream.link.close() }
        #expect(waitUntil(5) { states.all.contains(.up) })
        #expect(try publish(stream, "a")?.get().seq == 1)
        try server.command("SCRIPT", "FLUSH")
        #expect(try publish(stream, "b")?.get().seq == 2)
        #expect(try publish(stream, "c")?.get().seq == 3)
    }
}

@Suite struct ClusterFrameTests {
    @Test func roundTripsAndRejectsMalformedFrames() {
        let f = ClusterFrame(epoch: "0a1b2c3d4e5f6789", firstSeq: 41, payloads: [Array("hello".utf8)[...], [][...], [0, 10, 32, 255][...]])
        let bytes = f.encoded()
        #expect(String(decoding: bytes.prefix(22), as: UTF8.self) == "0a1b2c3d4e5f6789 41 3\n")
        #expect(ClusterFrame(bytes) == f)
        #expect(ClusterFrame(bytes)?.lastSeq == 43)
        for bad in ["", "e 1 1\n", "e 1 1\n2\nabc", "e 1 1\n4\nabc", "e 0 1\n1\na", "e 1 0\n", "e- 1 1\n1\na",
                    "e 1 2\n1\na", "e x 1\n1\na", " 1 1\n1\na", "e 99999999999999999999 1\n1\na"] {
            #expect(ClusterFrame(Array(bad.utf8)) == nil, "\(bad.debugDescription)")
        }
        // Every truncation of a good frame is rejected, never a trap.
        for n in 0..<bytes.count { #expect(ClusterFrame(Array(bytes.prefix(n))) == nil) }
    }
}
