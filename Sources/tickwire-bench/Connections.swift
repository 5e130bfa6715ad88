import ArgumentParser
import CLibEV
import Glibc
import Reactor

/// How the connections end in the mass-disconnect phase.
enum DisconnectMode: String, ExpressibleByArgument {
    case tcp
    case closeFrame = "close-frame"
    case server
}

/// Opens N WebSocket connections as fast as the server accepts them and holds them:
/// upgrades per second, failures, and (with the server's PID) resident memory per connection.
/// Then all of them disconnect at once (a load balancer failing over, a deploy), and the
/// server's RSS is sampled every millisecond: a mass disconnect must not cost more memory
/// than holding the connections did.
final class ConnectionsBenchmark: ClientHandler {
    let engine: ClientEngine
    let count: Int
    let holdSeconds: Double
    let serverPid: Int32?
    let path: String
    let disconnectWatchSeconds: Double
    let disconnectMode: DisconnectMode
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

    private var heldRSS = 0
    private var disconnectedAt: UInt64 = 0
    private var peakRSS = 0
    private var peakAt: UInt64 = 0
    private var lastRSS = 0

    init(engine: ClientEngine, count: Int, holdSeconds: Double, serverPid: Int32?, path: String, disconnectWatchSeconds: Double,
         disconnectMode: DisconnectMode = .tcp) {
        self.engine = engine
        self.disconnectWatchSeconds = disconnectWatchSeconds
        self.disconnectMode = disconnectMode
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
        if disconnectedAt != 0 {
            watchDisconnect(now)
            return
        }
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
            if serverPid == nil || disconnectWatchSeconds <= 0 {
                for c in engine.connections where c.state != .closed { engine.close(c) }
                ev_timer_stop(engine.loop.raw, timer)
                engine.stop()
                return
            }
            heldRSS = rss
            peakRSS = rss
            disconnectedAt = monotonicNanoseconds()
            switch disconnectMode {
            case .tcp:
                for c in engine.connections where c.state != .closed { engine.close(c) }
            case .closeFrame:
                for c in engine.connections where c.state != .closed { engine.sendFrame(c, opcode: .close, [0x03, 0xE9]) }
            case .server:
                kill(serverPid!, SIGTERM)
            }
        }
    }

    /// Every millisecond after the mass disconnect: the server's RSS, and its peak.
    private func watchDisconnect(_ now: UInt64) {
        // Once the server has exited (a deploy), its last sample stands.
        let rss = ProcessStats.rssBytes(pid: serverPid!) ?? lastRSS
        lastRSS = rss
        if rss > peakRSS {
            peakRSS = rss
            peakAt = now
        }
        guard now - disconnectedAt >= UInt64(disconnectWatchSeconds * 1e9) else { return }
        let connections = max(opened, 1)
        result["disconnect_mode"] = disconnectMode.rawValue
        result["disconnect_watch_s"] = disconnectWatchSeconds
        result["server_rss_held_bytes"] = heldRSS
        result["server_rss_disconnect_peak_bytes"] = peakRSS
        result["disconnect_peak_ms_after"] = peakAt == 0 ? 0 : Double(peakAt - disconnectedAt) / 1e6
        result["server_rss_after_disconnect_bytes"] = rss
        result["disconnect_peak_rise_bytes_per_connection"] = Double(peakRSS - heldRSS) / Double(connections)
        ev_timer_stop(engine.loop.raw, timer)
        for c in engine.connections where c.state != .closed { engine.close(c) }
        engine.stop()
    }

    func opened(_ c: ClientConnection) { opened += 1 }
    func frame(_ c: ClientConnection, opcode: UInt8, payload: UnsafeRawBufferPointer, now: UInt64) {
        // Answer server pings so that long holds do not time out.
        if opcode == 9 { engine.sendFrame(c, opcode: .pong, Array(payload)) }
        if opcode == 8 {
            // The closing handshake: answer the server's Close (a deploy), or take its answer
            // to ours; either way the server then closes first and we close on its FIN.
            if disconnectMode == .server { engine.sendFrame(c, opcode: .close, Array(payload.prefix(2))) }
        }
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
