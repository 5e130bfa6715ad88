import Cluster
import Foundation
import Reactor
import Testing

/// The Redis loop (an EdgeLoop's thread lives as long as the process, so all tests share it).
let redisLoop = EdgeLoop.redis

/// Fast limits, so failure tests finish in seconds.
func quickSettings() -> RedisLinkSettings {
    var s = RedisLinkSettings()
    s.connectTimeout = 0.5
    s.commandTimeout = 0.3
    s.reconnectInitialDelay = 0.02
    s.reconnectMaxDelay = 0.2
    return s
}

/// Quick reconnects, but a command timeout a loaded test machine cannot trip: for tests
/// about throughput and order, where a timeout (which drops the link) is not the subject.
func steadySettings() -> RedisLinkSettings {
    var s = quickSettings()
    s.commandTimeout = 10
    return s
}

/// Sends `command` from the test thread and waits for its reply.
func call(_ link: RedisLink, _ command: RedisCommand, wait: Double = 5) -> Result<RedisReply, RedisFailure>? {
    let box = Box<Result<RedisReply, RedisFailure>>()
    let l = UncheckedSendable(link)
    redisLoop.onLoop { l.value.send(command) { box.set($0) } }
    return box.wait(wait)
}

struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// A started link and the states it reported.
func startedLink(_ server: RedisServer, settings: RedisLinkSettings = quickSettings()) -> (RedisLink, Recorder<RedisLink.State>) {
    let link = RedisLink(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), settings: settings, on: redisLoop)
    let states = Recorder<RedisLink.State>()
    link.onStateChange = { states.append($0) }
    link.start()
    return (link, states)
}

@Suite(.serialized) struct RedisLinkTests {
    @Test func connectsAndRunsCommandsInOrder() throws {
        let server = try RedisServer()
        let (link, states) = startedLink(server)
        defer { link.close() }
        #expect(waitUntil(5) { states.all.contains(.up) })
        #expect(try call(link, RedisCommand("SET", "k", "v"))?.get() == .status("OK"))
        #expect(try call(link, RedisCommand("GET", "k"))?.get() == .bulk(Array("v".utf8)))
        #expect(try call(link, RedisCommand("INCRBY", "n", "5"))?.get() == .integer(5))
        #expect(call(link, RedisCommand("LPUSH", "k", "x")).map { if case .failure(.server(let m)) = $0 { m.hasPrefix("WRONGTYPE") } else { false } } == true)
        // 1,000 pipelined commands answer in order.
        let replies = Recorder<Int64>()
        let l = UncheckedSendable(link)
        redisLoop.onLoop {
            for _ in 0..<1000 { l.value.send(RedisCommand("INCR", "c")) { if case .success(.integer(let v)) = $0 { replies.append(v) } } }
        }
        #expect(waitUntil(5) { replies.count == 1000 })
        #expect(replies.all == Array(1...1000))
    }

    @Test func closeInsideAReplyCallbackFailsTheRestAndStops() throws {
        let server = try RedisServer()
        let (link, states) = startedLink(server)
        #expect(waitUntil(5) { states.all == [.up] })
        let results = Recorder<Result<RedisReply, RedisFailure>>()
        do {
            let l = UncheckedSendable(link)
            redisLoop.onLoop {
                for i in 0..<100 {
                    l.value.send(RedisCommand("PING")) { [unowned link = l.value] r in
                        results.append(r)
                        if i == 0 { link.close() }
                    }
                }
            }
        }
        #expect(waitUntil(5) { results.count == 100 && states.all.last == .closed })
        #expect(try results.all[0].get() == .status("PONG"))
        #expect(results.all.dropFirst().allSatisfy { $0 == .failure(.disconnected("link closed")) })
        #expect(states.all == [.up, .closed])
        // A closed link fails at once and reconnects no more.
        #expect(call(link, RedisCommand("PING")) == .failure(.linkDown("closed")))
    }
}
