import Foundation
import Glibc
import Logging
import Reactor
import Synchronization
import Testing
import TradingStream
import WireProtocol
@testable import EdgeServer

/// The output path's partial-write bookkeeping, driven without a network: a reactor that
/// never runs its loop, one connection on a socketpair (so libev has a real descriptor),
/// and an injected `send` that accepts exactly as many bytes as the test allows. Whatever
/// the schedule of partial writes, the bytes on the "wire" must be the same stream.
@Suite struct FlusherTests {
    /// A reactor part-assembly with one connection and a wire that records what is sent.
    final class Rig: @unchecked Sendable {
        // @unchecked: each rig is driven by the one test that made it; the registry only finds it.
        let context: ServerContext
        let worker: Worker
        let c: UnsafeMutablePointer<Connection>
        var fds: [Int32] = [-1, -1]
        /// Bytes the fake socket accepted, in order.
        var wire: [UInt8] = []
        /// How many bytes the next send calls accept (nil: everything); consumed in order,
        /// the last value repeating.
        var schedule: [Int?] = [nil] { didSet { step = 0 } }
        var step = 0
        var frames: [BroadcastFrame] = []
        var nextSeq: UInt64 = 1

        init(endpoint path: String = "/ws", _ configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
            var config = ServerConfiguration()
            config.echo = true
            config.historySize = 10_000
            config.maxBacklogBytes = 64 << 20
            configure(&config)
            var logger = Logger(label: "flusher-test")
            logger.logLevel = .critical
            context = ServerContext(config: config, logger: logger)
            worker = try Worker(index: 0, context: context, listenFd: -1)
            context.workers = [worker]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
            let slot = worker.table.allocate()!
            worker.acceptor.admit(fd: fds[0], peer: PeerAddress(), slot: slot)
            c = worker.table.pointer(slot)
            Self.rigs.withLock { $0[fds[0]] = self }
            // A C function pointer cannot capture: it finds its rig by the descriptor.
            worker.output.send = { fd, iovecs, count in
                let rig = Rig.rigs.withLock { $0[fd] }!
                return rig.accept(iovecs!, count)
            }
            let upgrade = "GET \(path) HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            var bytes = Array(upgrade.utf8)
            let used = bytes.withUnsafeMutableBytes { worker.http.process(c, $0, from: 0) }
            #expect(used == bytes.count && c.pointee.lifecycle.state == .open)
        }

        deinit {
            Self.rigs.withLock { $0[fds[0]] = nil }
            // The worker closed the connection's end itself if the test closed it (fd -1):
            // closing it again could close another test's descriptor of that number.
            if c.pointee.fd == fds[0] { close(fds[0]) }
            close(fds[1])
        }

        /// Live rigs by their connection's descriptor (tests run in parallel).
        nonisolated(unsafe) static let rigs = Mutex<[Int32: Rig]>([:])

        fileprivate func accept(_ iovecs: UnsafeMutablePointer<iovec>, _ count: Int) -> Int {
            let allowance = schedule[min(step, schedule.count - 1)]
            step += 1
            var budget = allowance ?? Int.max
            if budget == 0 {
                errno = EAGAIN
                return -1
            }
            var written = 0
            for i in 0..<count where budget > 0 {
                let take = min(budget, iovecs[i].iov_len)
                let p = iovecs[i].iov_base!.assumingMemoryBound(to: UInt8.self)
                wire.append(contentsOf: UnsafeBufferPointer(start: p, count: take))
                written += take
                budget -= take
            }
            return written
        }

        /// Publishes trades as the per-core queue would deliver them.
        func publish(_ n: Int, channel: Channel = .tradeExecuted, pad: Int = 0) {
            let first = worker.broadcast.log.end
            for _ in 0..<n {
                let json = "{\"type\":\"\(channel.typeName)\",\"seq\":\(nextSeq),\"data\":{\"symbol\":\"BTCUSDT\",\"pad\":\"\(String(repeating: "x", count: pad))\"}}"
                let frame = Array(json.utf8).withUnsafeBytes {
                    BroadcastFrame(json: $0, seq: nextSeq, channel: channel, symbolHash: SymbolHash.hash("BTCUSDT"),
                                   conflationKey: channel.isConflatable ? 42 : 0, acceptedAt: monotonicNanoseconds())
                }
                frames.append(frame)
                worker.broadcast.log.append(Unmanaged.passRetained(frame))
                nextSeq += 1
            }
            worker.broadcast.received(from: first)
        }

        /// The client sends a `Ping` message; the server answers `Pong` in stream order.
        func clientPing() {
            let text = Array("{\"type\":\"Ping\"}".utf8)
            text.withUnsafeBytes { worker.stream.onClientMessage(c, .text, $0) }
        }

        /// One end-of-pass flush (what the loop does after each pass).
        func flush() { worker.output.flushDirty() }

        /// Flushes until nothing is pending, as EV_WRITE readiness would (bounded).
        func flushAll() {
            var rounds = 0
            while worker.output.hasPendingOutput(c) && c.pointee.isLive && rounds < 100_000 {
                worker.output.flush(c)
                rounds += 1
            }
        }

        /// The wire parsed: the HTTP response head, then each server frame.
        func parsed() throws -> (head: String, frames: [WireFrame]) {
            guard let end = wire.firstRange(of: [13, 10, 13, 10]) else { throw TestError("no HTTP head on the wire") }
            let head = String(decoding: wire[0..<end.lowerBound], as: UTF8.self)
            var out: [WireFrame] = []
            var i = end.upperBound
            while i < wire.count {
                guard wire.count - i >= 2 else { throw TestError("truncated frame header at \(i)") }
                var length = Int(wire[i + 1] & 0x7F)
                var header = 2
                if length == 126 { length = Int(wire[i + 2]) << 8 | Int(wire[i + 3]); header = 4 }
                if length == 127 { length = wire[(i + 2)..<(i + 10)].reduce(0) { $0 << 8 | Int($1) }; header = 10 }
                guard wire.count - i >= header + length else { throw TestError("truncated frame at \(i)") }
                out.append(WireFrame(fin: wire[i] & 0x80 != 0, opcode: wire[i] & 0x0F, payload: Array(wire[(i + header)..<(i + header + length)])))
                i += header + length
            }
            return (head, out)
        }
    }

    static func describe(_ frames: [WireFrame]) -> [String] {
        frames.map { f in
            guard f.opcode == 1, let m = try? JSONSerialization.jsonObject(with: Data(f.payload)) as? [String: Any] else {
                return "op\(f.opcode)"
            }
            return "\(m["type"] as? String ?? "?")#\((m["seq"] as? NSNumber)?.intValue ?? -1)"
        }
    }

    /// A session that mixes broadcast frames and the connection's own messages, with the
    /// wire accepting `schedule` bytes per call: returns the wire and the rig.
    static func session(schedule: [Int?]) throws -> Rig {
        let rig = try Rig()
        rig.schedule = schedule
        rig.flush()                       // the 101 and Connected
        rig.publish(3, pad: 40)
        rig.flush()
        rig.clientPing()                  // Pong: after trades 1-3
        rig.publish(2, pad: 300)
        rig.flush()
        rig.clientPing()                  // Pong: after trade 5
        rig.publish(40, pad: 10)
        rig.flush()
        rig.flushAll()
        return rig
    }

    /// What must hold whatever the partial writes: every frame whole; every broadcast
    /// frame exactly once, in order, byte for byte as it was framed; every message of the
    /// connection's own, in its order; and seqs that never go backwards, so that a
    /// connection's own message is never stamped behind a frame it follows. (Its own
    /// messages may go out earlier relative to broadcasts when earlier ones of its own are
    /// still unsent: they join that block, stamped with its seq.)
    static func checkStream(_ rig: Rig, broadcasts: Int, own: [String], _ label: String) throws {
        let frames = try rig.parsed().frames
        let described = describe(frames)
        var seqs: [Int] = []
        var broadcastFrames: [WireFrame] = []
        var ownTypes: [String] = []
        for (frame, text) in zip(frames, described) {
            let parts = text.split(separator: "#")
            seqs.append(Int(parts.last!) ?? -1)
            if parts.first == "TradeExecuted" { broadcastFrames.append(frame) } else { ownTypes.append(String(parts.first!)) }
        }
        #expect(seqs == seqs.sorted(), "\(label): seqs go backwards: \(described)")
        #expect(ownTypes == own, "\(label): own messages \(ownTypes)")
        #expect(broadcastFrames.count == broadcasts, "\(label): \(broadcastFrames.count) broadcast frames")
        let framedOnce = rig.frames.prefix(broadcastFrames.count).map { Array($0.json) }
        let intact = broadcastFrames.map(\.payload) == framedOnce
        #expect(intact, "\(label): a broadcast frame differs from what was framed")
    }

    @Test func everyPartialWriteScheduleGivesAnExactStream() throws {
        let reference = try Self.session(schedule: [nil])
        let expected = ["Connected#0"] + (1...3).map { "TradeExecuted#\($0)" } + ["Pong#3"]
            + (4...5).map { "TradeExecuted#\($0)" } + ["Pong#5"] + (6...45).map { "TradeExecuted#\($0)" }
        #expect(Self.describe(try reference.parsed().frames) == expected, "with no partial writes, production order")
        #expect(try reference.parsed().head.hasPrefix("HTTP/1.1 101"))
        let referenceSent = reference.worker.stats.messagesSent.load(ordering: .relaxed)
        for schedule: [Int?] in [[1], [2], [3], [7], [13], [64], [1000], [0, 5, 0, 17], [100, 1, 0, 4096, 2],
                                 (0..<64).map { i in (i * 7919) % 301 }] {
            let rig = try Self.session(schedule: schedule)
            let label = "schedule \(schedule.prefix(6))"
            try Self.checkStream(rig, broadcasts: 45, own: ["Connected", "Pong", "Pong"], label)
            #expect(rig.worker.stats.messagesSent.load(ordering: .relaxed) == referenceSent, "\(label): counted once each")
            #expect(!rig.c.pointee.flags.contains(.broadcastPending) && rig.c.pointee.output.isEmpty, "\(label)")
            #expect(!rig.c.pointee.flags.contains(.writeBlocked) && rig.worker.broadcast.blocked.isEmpty, "\(label)")
        }
    }

    @Test func aBlockedWriteWatchesTheSocketAndCatchesUp() throws {
        let rig = try Rig()
        rig.schedule = [nil]
        rig.flush()
        rig.schedule = [10, 0]             // ten bytes, then the socket is full
        rig.publish(5)
        rig.flush()
        #expect(rig.c.pointee.flags.contains(.writeBlocked))
        #expect(rig.worker.broadcast.blocked == [rig.c.pointee.slot])
        #expect(rig.c.pointee.cursorOffset == 10, "ten bytes of the first frame are out")
        rig.schedule = [nil]
        rig.flushAll()
        #expect(!rig.c.pointee.flags.contains(.writeBlocked) && rig.worker.broadcast.blocked.isEmpty)
        #expect(Self.describe(try rig.parsed().frames) == ["Connected#0"] + (1...5).map { "TradeExecuted#\($0)" })
    }

    @Test func theSlowConsumerQueueKeepsTheStreamExactAcrossPartialWrites() throws {
        for schedule: [Int?] in [[1], [9], [333], [0, 50, 0, 7]] {
            let rig = try Rig()
            rig.schedule = [nil]
            rig.flush()
            rig.schedule = schedule
            rig.publish(4, pad: 20)
            rig.flush()
            // Moved to its own queue mid-frame (as the backlog policy does), then more arrives.
            rig.worker.slowConsumers.moveToQueue(rig.c)
            #expect(BroadcastPath.slowQueue(rig.c) != nil)
            rig.clientPing()
            rig.publish(6, pad: 20)
            rig.flush()
            rig.flushAll()
            try Self.checkStream(rig, broadcasts: 10, own: ["Connected", "Pong"], "schedule \(schedule)")
            // Caught up: back on the shared log.
            #expect(BroadcastPath.slowQueue(rig.c) == nil)
        }
    }

    @Test func plainOutputSurvivesPartialWrites() throws {
        for schedule: [Int?] in [[1], [5], [0, 3], [nil]] {
            let rig = try Rig(endpoint: "/echo")
            rig.schedule = schedule
            // Three echoes of different sizes, written out in pieces.
            for (i, size) in [5, 300, 70_000].enumerated() {
                let payload = [UInt8](repeating: UInt8(65 + i), count: size)
                rig.worker.output.enqueueFrame(rig.c, .text, UnsafeRawBufferPointer(start: payload, count: payload.count))
            }
            rig.flushAll()
            let frames = try rig.parsed().frames
            #expect(frames.map(\.payload.count) == [5, 300, 70_000], "schedule \(schedule)")
            #expect(frames.map { $0.payload.first } == [65, 66, 67])
        }
    }
}
