import CLibEV
import Glibc
import Histogram
import Reactor

/// N clients in a request/response loop on /echo: round trips per second and latency.
final class EchoBenchmark: ClientHandler {
    let engine: ClientEngine
    let clients: Int
    let size: Int
    let warmupSeconds: Double
    let durationSeconds: Double
    let serverPid: Int32?
    private var opened = 0
    private var failed = 0
    private var sentAt: [UInt64]
    private var roundTrips = 0
    private var recording = false
    private var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    private let payload: [UInt8]
    private let timer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var startedAt: UInt64 = 0
    private var window = (start: UInt64(0), end: UInt64(0), trips0: 0, trips1: 0, server0: 0.0, server1: 0.0, own0: 0.0, own1: 0.0)
    private var result: [String: Any] = [:]

    init(engine: ClientEngine, clients: Int, size: Int, warmupSeconds: Double, durationSeconds: Double, serverPid: Int32?) {
        self.engine = engine
        self.clients = clients
        self.size = size
        self.warmupSeconds = warmupSeconds
        self.durationSeconds = durationSeconds
        self.serverPid = serverPid
        sentAt = Array(repeating: 0, count: clients)
        payload = Array(repeating: UInt8(ascii: "x"), count: size)
        engine.handler = self
    }

    func run() -> [String: Any] {
        for _ in 0..<clients { engine.connect(.webSocket(path: "/echo")) }
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        tw_ev_timer_init(timer, { _, w, _ in
            Unmanaged<EchoBenchmark>.fromOpaque(w!.pointee.data!).takeUnretainedValue().tick()
        }, 0.01, 0.01)
        ev_timer_start(engine.loop.raw, timer)
        engine.run()
        return result
    }

    private func serverCPU() -> Double { serverPid.flatMap { ProcessStats.cpuSeconds(pid: $0) } ?? 0 }

    private func tick() {
        let now = monotonicNanoseconds()
        guard opened + failed >= clients, startedAt != 0 else { return }
        let elapsed = Double(now - startedAt) / 1e9
        if !recording && window.start == 0 && elapsed >= warmupSeconds {
            recording = true
            window.start = now
            window.trips0 = roundTrips
            window.server0 = serverCPU()
            window.own0 = ProcessStats.ownCPUSeconds()
        }
        if recording && elapsed >= warmupSeconds + durationSeconds {
            recording = false
            window.end = now
            window.trips1 = roundTrips
            window.server1 = serverCPU()
            window.own1 = ProcessStats.ownCPUSeconds()
            finish()
        }
    }

    private func finish() {
        let seconds = Double(window.end - window.start) / 1e9
        let trips = window.trips1 - window.trips0
        let serverCPU = window.server1 - window.server0
        func us(_ ns: UInt64) -> Double { Double(ns) / 1000 }
        result = [
            "mode": "echo", "clients": clients, "message_bytes": size, "failures": failed,
            "window_s": seconds, "round_trips": trips,
            "round_trips_per_s": seconds > 0 ? Double(trips) / seconds : 0,
            "server_cpu_s": serverCPU,
            "server_cpu_per_round_trip_us": trips > 0 ? serverCPU / Double(trips) * 1e6 : 0,
            "server_cpu_percent": seconds > 0 ? serverCPU / seconds * 100 : 0,
            "generator_cpu_percent": seconds > 0 ? (window.own1 - window.own0) / seconds * 100 : 0,
            "latency_us": ["p50": us(latency.valueAtPercentile(50)), "p90": us(latency.valueAtPercentile(90)),
                           "p99": us(latency.valueAtPercentile(99)), "p99.9": us(latency.valueAtPercentile(99.9)),
                           "max": us(latency.max)] as [String: Any],
        ]
        ev_timer_stop(engine.loop.raw, timer)
        for c in engine.connections where c.state != .closed { engine.close(c) }
        engine.stop()
    }

    private func send(_ c: ClientConnection, now: UInt64) {
        sentAt[c.id] = now
        engine.sendFrame(c, opcode: .text, payload)
    }

    func opened(_ c: ClientConnection) {
        opened += 1
        if opened == clients {
            startedAt = monotonicNanoseconds()
            for conn in engine.connections where conn.state == .open { send(conn, now: startedAt) }
        }
    }

    func frame(_ c: ClientConnection, opcode: UInt8, payload: UnsafeRawBufferPointer, now: UInt64) {
        guard opcode == 1 || opcode == 2 else { return }
        roundTrips += 1
        if recording { _ = latency.record(now - sentAt[c.id]) }
        if result.isEmpty { send(c, now: monotonicNanoseconds()) }
    }

    func response(_ c: ClientConnection, status: Int) {}
    func closed(_ c: ClientConnection, error: String?) { if result.isEmpty && error != nil { failed += 1 } }
}
