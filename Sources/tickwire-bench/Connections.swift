import CLibEV
import Glibc
import Reactor

/// Opens N WebSocket connections as fast as the server accepts them and holds them:
/// upgrades per second, failures, and (with the server's PID) resident memory per connection.
final class ConnectionsBenchmark: ClientHandler {
    let engine: ClientEngine
    let count: Int
    let holdSeconds: Double
    let serverPid: Int32?
    let path: String
    private var opened = 0
    private var failed = 0
    private var closedAfterOpen = 0
    private var cursor = 0
    private var started: UInt64 = 0
    private var allOpenAt: UInt64 = 0
    private var baselineRSS = 0
    private var baselineAnon = 0
    private let timer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var firstError = ""

    init(engine: ClientEngine, count: Int, holdSeconds: Double, serverPid: Int32?, path: String) {
        self.engine = engine
        self.count = count
        self.holdSeconds = holdSeconds
        self.serverPid = serverPid
        self.path = path
        engine.handler = self
    }

    func run() -> [String: Any] {
        if let pid = serverPid {
            baselineRSS = ProcessStats.rssBytes(pid: pid) ?? 0
            baselineAnon = ProcessStats.rssBytes(pid: pid, anonymousOnly: true) ?? 0
        }
        started = monotonicNanoseconds()
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        tw_ev_timer_init(timer, { _, w, _ in
            Unmanaged<ConnectionsBenchmark>.fromOpaque(w!.pointee.data!).takeUnretainedValue().tick()
        }, 0.001, 0.001)
        ev_timer_start(engine.loop.raw, timer)
        engine.run()
        return result
    }

    private var result: [String: Any] = [:]

    private func tick() {
        let now = monotonicNanoseconds()
        // Keep up to 1000 handshakes in flight.
        while cursor < count && cursor - opened - failed < 1000 {
            engine.connect(.webSocket(path: path))
            cursor += 1
        }
        if allOpenAt == 0 && opened + failed >= count {
            allOpenAt = now
        }
        let timedOut = now - started > 300_000_000_000
        if (allOpenAt != 0 && now - allOpenAt >= UInt64(holdSeconds * 1e9)) || timedOut {
            var rss = 0
            var anon = 0
            if let pid = serverPid {
                rss = ProcessStats.rssBytes(pid: pid) ?? 0
                anon = ProcessStats.rssBytes(pid: pid, anonymousOnly: true) ?? 0
            }
            let seconds = Double((allOpenAt == 0 ? now : allOpenAt) - started) / 1e9
            result = [
                "mode": "connections",
                "connections": count,
                "opened": opened,
                "failures": failed,
                "closed_while_held": closedAfterOpen,
                "first_error": firstError,
                "seconds_to_open_all": seconds,
                "upgrades_per_s": seconds > 0 ? Double(opened) / seconds : 0,
                "server_rss_before_bytes": baselineRSS,
                "server_rss_after_bytes": rss,
                "server_rss_anon_before_bytes": baselineAnon,
                "server_rss_anon_after_bytes": anon,
                "rss_bytes_per_connection": opened > 0 ? Double(rss - baselineRSS) / Double(opened) : 0,
                "anon_bytes_per_connection": opened > 0 ? Double(anon - baselineAnon) / Double(opened) : 0,
            ]
            ev_timer_stop(engine.loop.raw, timer)
            for c in engine.connections where c.state != .closed { engine.close(c) }
            engine.stop()
        }
    }

    func opened(_ c: ClientConnection) { opened += 1 }
    func frame(_ c: ClientConnection, opcode: UInt8, payload: UnsafeRawBufferPointer, now: UInt64) {
        // Answer server pings so that long holds do not time out.
        if opcode == 9 { engine.sendFrame(c, opcode: .pong, Array(payload)) }
    }
    func response(_ c: ClientConnection, status: Int) {}
    func closed(_ c: ClientConnection, error: String?) {
        guard result.isEmpty else { return }
        if c.state == .closed && error != nil {
            if allOpenAt != 0 || opened > c.id { closedAfterOpen += 1 } else { failed += 1 }
            if firstError.isEmpty { firstError = error ?? "" }
        }
    }
}
