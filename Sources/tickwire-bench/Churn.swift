import CLibEV
import Glibc
import Reactor
import WireProtocol

/// Connect, subscribe, receive a broadcast, disconnect, in a loop with bounded concurrency;
/// checks that the server's memory returns to its baseline (no leak per connection).
final class ChurnBenchmark: ClientHandler {
    let engine: ClientEngine
    let cycles: Int
    let concurrency: Int
    let serverPid: Int32?
    let publishRate: Double
    /// Cycles run before the baseline is taken, so that pools, tables and caches have
    /// reached their working size: growth after that is what a leak would look like.
    let warmupCycles: Int
    private var warmupDone = false
    private var settleUntil: UInt64 = 0
    private var measuredStartCompleted = 0
    private var started = 0
    private var completed = 0
    private var failed = 0
    private var publisher: ClientConnection?
    private var publishedCount = 0
    private var publishStart: UInt64 = 0
    private var baseline = (rss: 0, anon: 0)
    private var warmBaseline = (rss: 0, anon: 0)
    private let timer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var startedAt: UInt64 = 0
    private var finishedAt: UInt64 = 0
    private var result: [String: Any] = [:]
    private var firstError = ""
    /// Per connection: 0 connecting, 1 subscribed (waiting for a broadcast), 2 done.
    private var stage: [Int: Int] = [:]

    init(engine: ClientEngine, cycles: Int, concurrency: Int, serverPid: Int32?, publishRate: Double, warmupCycles: Int = 5_000) {
        self.engine = engine
        self.warmupCycles = warmupCycles
        self.cycles = cycles
        self.concurrency = concurrency
        self.serverPid = serverPid
        self.publishRate = publishRate
        engine.handler = self
    }

    private func rss() -> (rss: Int, anon: Int) {
        guard let pid = serverPid else { return (0, 0) }
        return (ProcessStats.rssBytes(pid: pid) ?? 0, ProcessStats.rssBytes(pid: pid, anonymousOnly: true) ?? 0)
    }

    func run() -> [String: Any] {
        baseline = rss()
        publisher = engine.connect(.http)
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        tw_ev_timer_init(timer, { _, w, _ in
            Unmanaged<ChurnBenchmark>.fromOpaque(w!.pointee.data!).takeUnretainedValue().tick()
        }, 0.001, 0.001)
        ev_timer_start(engine.loop.raw, timer)
        startedAt = monotonicNanoseconds()
        publishStart = startedAt
        engine.run()
        return result
    }

    private func tick() {
        let now = monotonicNanoseconds()
        // Background traffic for subscribers to receive.
        if let p = publisher, p.state == .open, finishedAt == 0 {
            let due = Int(publishRate * Double(now - publishStart) / 1e9) - publishedCount
            if due > 0 {
                var request: [UInt8] = []
                for _ in 0..<min(due, 100) {
                    let body = "{\"type\":\"MarketData\",\"data\":{\"symbol\":\"CHURN\",\"price\":1.0,\"n\":\(publishedCount)}}"
                    request += Array("POST /api/publish HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
                    publishedCount += 1
                }
                engine.send(p, request)
            }
        }
        let total = warmupCycles + cycles
        // Warm-up: run `warmupCycles`, let every connection close and the server settle,
        // then take the baseline.
        if !warmupDone {
            if started < warmupCycles {
                while started < warmupCycles && started - completed - failed < concurrency { startCycle() }
            } else if completed + failed >= warmupCycles {
                if settleUntil == 0 { settleUntil = now + 2_000_000_000 }
                if now >= settleUntil {
                    warmBaseline = rss()
                    warmupDone = true
                    measuredStartCompleted = completed
                    startedAt = now
                }
            }
            return
        }
        while started < total && started - completed - failed < concurrency { startCycle() }
        if finishedAt == 0 && completed + failed >= total {
            finishedAt = now
        }
        // Let the server free the last slots and return memory, then measure.
        if finishedAt != 0 && now - finishedAt > 2_000_000_000 {
            let after = rss()
            let seconds = Double(finishedAt - startedAt) / 1e9
            let measured = completed - measuredStartCompleted
            func pct(_ a: Int, _ b: Int) -> Double { b > 0 ? Double(a - b) / Double(b) * 100 : 0 }
            result = [
                "mode": "churn", "cycles": cycles, "warmup_cycles": warmupCycles, "concurrency": concurrency,
                "completed": measured, "failures": failed,
                "first_error": firstError, "seconds": seconds, "cycles_per_s": seconds > 0 ? Double(measured) / seconds : 0,
                "server_rss_cold_bytes": baseline.rss, "server_rss_baseline_bytes": warmBaseline.rss, "server_rss_after_bytes": after.rss,
                "rss_growth_percent": pct(after.rss, warmBaseline.rss),
                "rss_growth_percent_vs_cold_start": pct(after.rss, baseline.rss),
                "server_anon_baseline_bytes": warmBaseline.anon, "server_anon_after_bytes": after.anon,
                "anon_growth_percent": pct(after.anon, warmBaseline.anon),
            ]
            ev_timer_stop(engine.loop.raw, timer)
            for c in engine.connections where c.state != .closed { engine.close(c) }
            engine.stop()
        }
    }

    private func startCycle() {
        let c = engine.connect(.webSocket(path: "/ws"))
        stage[c.id] = 0
        started += 1
    }

    func opened(_ c: ClientConnection) {
        if case .http = c.role { return }
        engine.sendFrame(c, opcode: .text, Array("{\"type\":\"Subscribe\",\"data\":{\"channels\":[\"prices\"],\"symbols\":[\"CHURN\"]}}".utf8))
        stage[c.id] = 1
    }

    func frame(_ c: ClientConnection, opcode: UInt8, payload: UnsafeRawBufferPointer, now: UInt64) {
        guard opcode == 1, stage[c.id] == 1 else { return }
        // The first broadcast after subscribing: done; close cleanly.
        if payload.count > 20 && payload.starts(with: Array("{\"type\":\"MarketData\"".utf8)) {
            stage[c.id] = 2
            engine.sendFrame(c, opcode: .close, [0x03, 0xE8])
            engine.close(c)
        }
    }

    func response(_ c: ClientConnection, status: Int) {}

    func closed(_ c: ClientConnection, error: String?) {
        if case .http = c.role { return }
        if stage[c.id] == 2 { completed += 1 } else if result.isEmpty {
            failed += 1
            if firstError.isEmpty { firstError = error ?? "closed early" }
        }
        stage[c.id] = nil
        engine.forget(c)
    }
}
