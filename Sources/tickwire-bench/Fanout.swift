import CLibEV
import Glibc
import Histogram
import Reactor
import WireProtocol

struct FanoutOptions {
    var subscribers = 1000
    var publishers = 1
    /// Messages per second, all publishers together.
    var rate = 200.0
    var warmupSeconds = 3.0
    var durationSeconds = 10.0
    var symbols = 1
    /// Query string for subscribers (`channels=...&symbols=...`), Tickwire only.
    var query = ""
    /// Messages per POST (1: one request per message, as the floor server expects).
    var batch = 1
    /// Publishers post here instead of to the subscribers' server (another node of a cluster).
    var publishPort: Int?
    var serverPid: Int32?
    var label = "server"
}

/// Fan-out: N subscribers, publishers posting timestamped, numbered messages at a fixed
/// rate; every delivery is checked for order, duplicates and gaps, and timed end to end.
final class FanoutBenchmark: ClientHandler {
    let engine: ClientEngine
    let options: FanoutOptions
    private var subscribers: [ClientConnection] = []
    private var publishers: [ClientConnection] = []
    private var opened = 0
    private var failed = 0
    /// Next expected counter per subscriber, per (publisher, symbol).
    private var expected: [UInt32]
    private let streams: Int
    private var sentPerStream: [UInt32]
    private var published = 0
    private var accepted = 0
    private var rejected = 0
    private var delivered = 0
    private var deliveredInWindow = 0
    private var duplicates = 0
    private var gaps = 0
    private var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    private var recording = false
    private var phase = Phase.connecting
    private var phaseStart: UInt64 = 0
    private var publishStart: UInt64 = 0
    private var windowStart = (wall: UInt64(0), server: 0.0, own: 0.0, delivered: 0)
    private var windowEnd = (wall: UInt64(0), server: 0.0, own: 0.0, delivered: 0)
    private let timer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var connectCursor = 0
    private var body: [UInt8] = []

    enum Phase { case connecting, settling, publishing, draining, done }

    init(engine: ClientEngine, options: FanoutOptions) {
        self.engine = engine
        self.options = options
        streams = options.publishers * options.symbols
        expected = Array(repeating: 0, count: options.subscribers * streams)
        sentPerStream = Array(repeating: 0, count: streams)
        engine.handler = self
    }

    func run() -> [String: Any] {
        phaseStart = monotonicNanoseconds()
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        tw_ev_timer_init(timer, { _, w, _ in
            Unmanaged<FanoutBenchmark>.fromOpaque(w!.pointee.data!).takeUnretainedValue().tick()
        }, 0.001, 0.001)
        ev_timer_start(engine.loop.raw, timer)
        for _ in 0..<options.publishers { publishers.append(engine.connect(.http, port: options.publishPort)) }
        engine.run()
        return report()
    }

    // MARK: - Phases

    private func tick() {
        let now = monotonicNanoseconds()
        switch phase {
        case .connecting:
            // Ramp connections up in steps so the accept queue never overflows.
            let step = min(500, options.subscribers - connectCursor)
            let inFlight = connectCursor - opened - failed
            if step > 0 && inFlight < 2000 {
                for _ in 0..<step {
                    let path = "/ws" + (options.query.isEmpty ? "" : "?" + options.query)
                    let c = engine.connect(.webSocket(path: path))
                    c.tag = subscribers.count
                    subscribers.append(c)
                }
                connectCursor += step
            }
            if opened + failed >= options.subscribers + options.publishers {
                phase = .settling
                phaseStart = now
            } else if now - phaseStart > 120_000_000_000 {
                finish()
            }
        case .settling:
            if now - phaseStart > 500_000_000 {
                phase = .publishing
                publishStart = now
                phaseStart = now
            }
        case .publishing:
            let elapsed = Double(now - publishStart) / 1e9
            let due = Int(options.rate * elapsed) - published
            if due > 0 { publish(due, now: now) }
            if !recording && elapsed >= options.warmupSeconds && windowStart.wall == 0 {
                recording = true
                windowStart = (now, serverCPU(), ProcessStats.ownCPUSeconds(), delivered)
            }
            if elapsed >= options.warmupSeconds + options.durationSeconds {
                recording = false
                windowEnd = (now, serverCPU(), ProcessStats.ownCPUSeconds(), delivered)
                phase = .draining
                phaseStart = now
            }
        case .draining:
            if delivered >= expectedDeliveries || now - phaseStart > 10_000_000_000 { finish() }
        case .done:
            break
        }
    }

    private var expectedDeliveries: Int { published * (subscribers.count - failed) }

    private func finish() {
        phase = .done
        ev_timer_stop(engine.loop.raw, timer)
        for c in engine.connections where c.state != .closed { engine.close(c) }
        engine.stop()
    }

    private func serverCPU() -> Double {
        guard let pid = options.serverPid else { return 0 }
        return ProcessStats.cpuSeconds(pid: pid) ?? 0
    }

    // MARK: - Publishing

    private func publish(_ count: Int, now: UInt64) {
        // Spread the due messages over the publishers, one request per `batch` messages.
        var remaining = count
        var p = 0
        while remaining > 0 {
            let n = min(options.batch, remaining)
            let conn = publishers[(published / max(options.batch, 1) + p) % publishers.count]
            body.removeAll(keepingCapacity: true)
            if n > 1 { body.append(UInt8(ascii: "[")) }
            for k in 0..<n {
                if k > 0 { body.append(UInt8(ascii: ",")) }
                let pub = conn.tag
                let symbol = (published + k) % options.symbols
                let stream = pub * options.symbols + symbol
                let counter = sentPerStream[stream]
                sentPerStream[stream] += 1
                body += Array("{\"type\":\"MarketData\",\"data\":{\"symbol\":\"S\(symbol)\",\"t\":\(now),\"n\":\(counter),\"p\":\(pub),\"s\":\(symbol)}}".utf8)
            }
            if n > 1 { body.append(UInt8(ascii: "]")) }
            var request = Array("POST /api/publish HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
            request += body
            engine.send(conn, request)
            published += n
            remaining -= n
            p += 1
        }
    }

    // MARK: - ClientHandler

    func opened(_ c: ClientConnection) {
        opened += 1
        if case .http = c.role { c.tag = publishers.firstIndex { $0 === c } ?? 0 }
    }

    func response(_ c: ClientConnection, status: Int) {
        if status == 202 || status == 200 { accepted += 1 } else { rejected += 1 }
    }

    func closed(_ c: ClientConnection, error: String?) {
        if phase != .done {
            if c.state == .closed && error != nil { failed += 1 }
        }
    }

    @inline(__always)
    func frame(_ c: ClientConnection, opcode: UInt8, payload: UnsafeRawBufferPointer, now: UInt64) {
        guard opcode == 1, let fields = Self.fields(payload) else { return }
        delivered += 1
        if recording {
            deliveredInWindow += 1
            if now > fields.t { _ = latency.record(now - fields.t) }
        }
        let stream = Int(fields.p) * options.symbols + Int(fields.s)
        guard stream < streams else { return }
        let slot = c.tag * streams + stream
        let want = expected[slot]
        if fields.n == want {
            expected[slot] = want + 1
        } else if fields.n > want {
            gaps += Int(fields.n - want)
            expected[slot] = fields.n + 1
        } else {
            duplicates += 1
        }
    }

    /// Finds `"t":T,"n":N,"p":P,"s":S` in a message (the generator's own field order).
    @inline(__always)
    static func fields(_ payload: UnsafeRawBufferPointer) -> (t: UInt64, n: UInt32, p: UInt32, s: UInt32)? {
        guard let base = payload.baseAddress, payload.count > 8 else { return nil }
        let count = payload.count
        // Look for `"t":` (0x22 0x74 0x22 0x3A).
        var i = 0
        while i + 4 < count {
            if base.loadUnaligned(fromByteOffset: i, as: UInt32.self) == 0x3A22_7422 { break }
            i += 1
        }
        if i + 4 >= count { return nil }
        i += 4
        func number(_ i: inout Int) -> UInt64 {
            var v: UInt64 = 0
            while i < count {
                let d = base.load(fromByteOffset: i, as: UInt8.self) &- 48
                if d > 9 { break }
                v = v &* 10 &+ UInt64(d)
                i += 1
            }
            return v
        }
        let t = number(&i)
        i += 5   // ,"n":
        let n = number(&i)
        i += 5   // ,"p":
        let p = number(&i)
        i += 5   // ,"s":
        let s = number(&i)
        return (t, UInt32(truncatingIfNeeded: n), UInt32(truncatingIfNeeded: p), UInt32(truncatingIfNeeded: s))
    }

    // MARK: - Report

    private func report() -> [String: Any] {
        let window = Double(windowEnd.wall &- windowStart.wall) / 1e9
        let deliveries = windowEnd.delivered - windowStart.delivered
        let serverCPU = windowEnd.server - windowStart.server
        let ownCPU = windowEnd.own - windowStart.own
        let loss = max(0, expectedDeliveries - delivered) + gaps
        func us(_ ns: UInt64) -> Double { Double(ns) / 1000 }
        return [
            "mode": "fanout",
            "server": options.label,
            "subscribers": options.subscribers,
            "publishers": options.publishers,
            "rate_msgs_per_s": options.rate,
            "symbols": options.symbols,
            "query": options.query,
            "connect_failures": failed,
            "published": published,
            "publish_rejected": rejected,
            "expected_deliveries": expectedDeliveries,
            "delivered": delivered,
            "loss": loss,
            "duplicates": duplicates,
            "window_s": window,
            "deliveries_per_s": window > 0 ? Double(deliveries) / window : 0,
            "server_cpu_s": serverCPU,
            "server_cpu_per_delivery_us": deliveries > 0 ? serverCPU / Double(deliveries) * 1e6 : 0,
            "server_cpu_percent": window > 0 ? serverCPU / window * 100 : 0,
            "generator_cpu_percent": window > 0 ? ownCPU / window * 100 : 0,
            "latency_us": [
                "p50": us(latency.valueAtPercentile(50)), "p90": us(latency.valueAtPercentile(90)),
                "p99": us(latency.valueAtPercentile(99)), "p99.9": us(latency.valueAtPercentile(99.9)),
                "max": us(latency.max), "samples": Int(latency.totalCount),
            ] as [String: Any],
        ]
    }
}
