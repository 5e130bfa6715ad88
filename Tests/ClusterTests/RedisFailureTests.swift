import Cluster
import Foundation
import Glibc
import Reactor
import Testing

func isDown(_ s: RedisLink.State) -> Bool { if case .down = s { true } else { false } }

@Suite(.serialized) struct RedisFailureTests {
    @Test func linkGoesDownWhenRedisIsKilledAndUpAfterARestartOnThePort() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server)
        let (sub, frames, subStates) = startedSubscriber(server)
        defer { stream.link.close(); sub.close() }
        #expect(waitUntil(5) { states.all == [.up] && subStates.all == [.up] })
        #expect(try publish(stream, "before")?.get().seq == 1)
        #expect(waitUntil(5) { frames.count == 1 })

        server.kill()
        #expect(waitUntil(5) { states.all.count == 2 && subStates.all.count == 2 })
        #expect(isDown(states.all[1]) && isDown(subStates.all[1]))
        // Down, a publish is refused at once, never queued.
        let refused = publish(stream, "refused")
        #expect(refused.map { if case .failure(.linkDown) = $0 { true } else { false } } == true)

        // Several reconnect attempts fail meanwhile; each is not a new report.
        usleep(300_000)  // lets the backoff retry a few times against the closed port
        #expect(states.all.count == 2)

        try server.start()
        #expect(waitUntil(5) { states.all.count == 3 && subStates.all.count == 3 })
        #expect(states.all.last == .up && subStates.all.last == .up)
        #expect(stream.link.connects == 2)
        // The restarted Redis (no persistence) lost the stream: a new epoch from seq 1,
        // and the resubscribed link receives it.
        let p = try #require(try publish(stream, "after")?.get())
        #expect(p.seq == 1)
        #expect(waitUntil(5) { frames.count == 2 })
        #expect(frames.all[1].epoch == p.epoch && frames.all[1].epoch != frames.all[0].epoch)
    }

    @Test func aStoppedRedisTimesCommandsOutAndTheLinkRecoversAfterContinue() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server)
        defer { stream.link.close(); server.resume() }
        #expect(waitUntil(5) { states.all == [.up] })
        #expect(try publish(stream, "a")?.get().seq == 1)

        server.pause()
        let started = monotonicNanoseconds()
        let result = publish(stream, "b")
        let waited = Double(monotonicNanoseconds() - started) / 1e9
        #expect(result.map { if case .failure(.timeout) = $0 { true } else { false } } == true)
        // commandTimeout is 0.3 s: the reply deadline, not a socket error, ended it.
        #expect(waited >= 0.25 && waited < 2, "\(waited) s")
        #expect(states.all.count == 2 && isDown(states.all[1]))
        if case .down(let why) = states.all.last { #expect(why.contains("no reply within")) }

        // Reconnects into the stopped server's backlog time out at the PING; none is "up".
        usleep(800_000)
        #expect(states.all.count == 2)

        server.resume()
        #expect(waitUntil(5) { states.all.last == .up })
        // The timed-out publish had reached Redis before it stopped: its outcome was
        // unknown to us, and it was applied.
        #expect(try publish(stream, "c")?.get().seq == 3)
    }

    @Test func authenticatesAndSelectsTheDatabaseAndReportsABadPassword() throws {
        let server = try RedisServer(arguments: ["--requirepass", "s3cret"])
        let good = RedisLink(endpoint: try RedisEndpoint(url: "redis://:s3cret@127.0.0.1:\(server.port)/5"), settings: quickSettings(), on: redisLoop)
        let goodStates = Recorder<RedisLink.State>()
        good.onStateChange = { goodStates.append($0) }
        good.start()
        let bad = RedisLink(endpoint: try RedisEndpoint(url: "redis://:wrong@127.0.0.1:\(server.port)"), settings: quickSettings(), on: redisLoop)
        let badStates = Recorder<RedisLink.State>()
        bad.onStateChange = { badStates.append($0) }
        bad.start()
        defer { good.close(); bad.close() }

        #expect(waitUntil(5) { goodStates.all == [.up] })
        #expect(try call(good, RedisCommand("SET", "k", "in-db-5"))?.get() == .status("OK"))
        #expect(try server.command(db: 5, ["GET", "k"]) == "in-db-5")
        #expect(try server.command(db: 0, ["EXISTS", "k"]) == "0")
        #expect(waitUntil(5) { badStates.count == 1 })
        #expect(isDown(badStates.all[0]))
        if case .down(let why) = badStates.all.first { #expect(why.hasPrefix("handshake") && why.contains("WRONGPASS"), "\(why)") }
        #expect(!bad.isUp)
    }

    @Test func aStoppedRedisFailsTheFirstConnectByTimeout() throws {
        let server = try RedisServer()
        server.pause()
        defer { server.resume() }
        let started = monotonicNanoseconds()
        let (link, states) = startedLink(server)
        defer { link.close() }
        #expect(waitUntil(5) { states.count == 1 })
        let waited = Double(monotonicNanoseconds() - started) / 1e9
        // TCP connects into the stopped server's backlog; the PING is what never comes.
        if case .down(let why) = states.all.first { #expect(why.contains("timed out"), "\(why)") } else { Issue.record("\(states.all)") }
        #expect(waited >= 0.45 && waited < 3, "\(waited) s")
        server.resume()
        #expect(waitUntil(5) { states.all.last == .up })
    }

    @Test func publishesMissedWhileTheSubscriberWasDisconnectedAreInTheStream() throws {
        let server = try RedisServer()
        let (stream, states) = startedStream(server)
        let (sub, frames, subStates) = startedSubscriber(server)
        defer { stream.link.close(); sub.close() }
        #expect(waitUntil(5) { states.all == [.up] && subStates.all == [.up] })
        for i in 1...3 { #expect(try publish(stream, "m\(i)")?.get().seq == UInt64(i)) }
        #expect(waitUntil(5) { frames.count == 3 })

        // Redis drops the Pub/Sub connection; what is published before it is back is lost
        // to Pub/Sub, and the subscriber reports down then up.
        try server.command("CLIENT", "KILL", "TYPE", "pubsub")
        #expect(waitUntil(5) { subStates.count >= 2 })
        for i in 4...6 { #expect(try publish(stream, "m\(i)")?.get().seq == UInt64(i)) }
        #expect(waitUntil(5) { subStates.all.last == .up && subStates.count == 3 })
        #expect(try publish(stream, "m7")?.get().seq == 7)
        #expect(waitUntil(5) { frames.all.last?.firstSeq == 7 })

        // The seqs jump from 3 to 7 (or to whatever arrived after the resubscribe): the gap
        // is read from the stream, exactly.
        let seen = frames.all.map(\.firstSeq)
        let gapStart = try #require(zip(seen, seen.dropFirst()).first { $0.1 != $0.0 + 1 }).0 + 1
        let gapEnd = try #require(seen.first { $0 > gapStart }) - 1
        #expect(gapStart == 4)
        let fill = try #require(range(stream, from: gapStart, count: Int(gapEnd - gapStart + 1)))
        #expect(fill.starts(at: gapStart))
        #expect(fill.entries.map(\.seq) == Array(gapStart...gapEnd))
        #expect(fill.entries.map { String(decoding: $0.payload, as: UTF8.self) } == (gapStart...gapEnd).map { "m\($0)" })
    }
}
