import Foundation
import Synchronization
import Testing

/// The `tickwire` binary next to the test bundle (`make test` builds it first).
func tickwireBinary() throws -> String {
    let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    let path = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("tickwire").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw TestError("no tickwire binary at \(path); run `swift build` first")
    }
    return path
}

/// A `tickwire` process whose stdout and stderr are read as they come, on a thread of
/// their own, so a test can wait for a line while the process runs; or, with
/// `readOutput: false`, left unread (a full pipe) until `startReading()`.
final class ServerProcess {
    let process = Process()
    private let pipe = Pipe()
    private let captured = Captured()
    private var reader: TestThread?

    final class Captured: @unchecked Sendable {
        // @unchecked: `bytes` is only touched under `lock`.
        let lock = Mutex(())
        var bytes: [UInt8] = []
        let ended = Atomic<Bool>(false)
    }

    init(_ arguments: [String], environment: [String: String] = [:], readOutput: Bool = true) throws {
        process.executableURL = URL(fileURLWithPath: try tickwireBinary())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardError = pipe
        process.standardOutput = pipe
        try process.run()
        if readOutput { startReading() }
    }

    deinit {
        kill()
        reader?.join()
    }

    func startReading() {
        guard reader == nil else { return }
        let fd = pipe.fileHandleForReading.fileDescriptor
        let captured = self.captured
        reader = TestThread {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                captured.lock.withLock { _ in captured.bytes += chunk[0..<n] }
            }
            captured.ended.store(true, ordering: .releasing)
        }
    }

    /// The port the server bound. Started with `--port 0`, it logs `tickwire listening …
    /// port=N` (`"port":"N"` in JSON). Asking the server, rather than picking a free port
    /// first, leaves no window in which a parallel test's socket takes the port and this
    /// test talks to someone else's server.
    func listeningPort(timeout: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
        if reader == nil {
            // Output left unread on purpose: read just up to the listening line, by hand.
            let fd = pipe.fileHandleForReading.fileDescriptor
            let deadline = monotonicNow() + timeout
            var chunk = [UInt8](repeating: 0, count: 4096)
            while Self.port(in: output) == nil {
                let left = deadline - monotonicNow()
                if left <= 0 { break }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, Int32(left * 1000) + 1) <= 0 { continue }
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                captured.lock.withLock { _ in captured.bytes += chunk[0..<n] }
            }
        } else {
            try waitUntil("the listening line; got: \(output.suffix(500))", timeout: timeout, sourceLocation: sourceLocation) {
                Self.port(in: output) != nil
            }
        }
        guard let port = Self.port(in: output) else {
            throw TestError("no listening line within \(timeout) s; got: \(output.suffix(500))")
        }
        return port
    }

    private static func port(in output: String) -> Int? {
        guard let line = output.split(separator: "\n").first(where: { $0.contains("tickwire listening") }) else { return nil }
        for key in ["port=", "\"port\":\""] {
            guard let range = line.range(of: key) else { continue }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        return nil
    }

    /// Everything the process wrote so far.
    var output: String { captured.lock.withLock { _ in String(decoding: captured.bytes, as: UTF8.self) } }

    func waitForOutput(_ fragment: String, timeout: Double = 5, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try waitUntil("\"\(fragment)\" in the output; got: \(output.suffix(500))", timeout: timeout, sourceLocation: sourceLocation) {
            output.contains(fragment)
        }
    }

    /// Waits for the process to exit and its output to end; its exit status.
    func waitForExit(_ seconds: Double, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int32 {
        startReading()
        try waitUntil("the process to exit", timeout: seconds, sourceLocation: sourceLocation) { !process.isRunning }
        try waitUntil("the end of its output", timeout: seconds, sourceLocation: sourceLocation) { captured.ended.load(ordering: .acquiring) }
        return process.terminationStatus
    }

    func kill() { if process.isRunning { process.terminate() } }
}

@Suite(.serialized) struct ProcessTests {
    @Test func sigtermClosesClientsWith1001AndExitsZero() throws {
        let server = try ServerProcess(["--host", "127.0.0.1", "--port", "0", "--workers", "2", "--echo", "--shutdown-grace", "3s"])
        defer { server.kill() }
        let port = try server.listeningPort()
        let clients = try (0..<4).map { _ in try TestWebSocket(port: port, path: "/ws") }
        for c in clients { _ = try c.readMessage() }     // Connected
        kill(server.process.processIdentifier, SIGTERM)
        for c in clients {
            let close = try c.readClose()
            #expect(close.closeCode == 1001)
            try c.close(code: 1001)
        }
        #expect(try server.waitForExit(5) == 0)
        #expect(server.output.contains("SIGTERM received"))
        #expect(server.output.contains("WebSocket client connected from 127.0.0.1"))
        #expect(server.output.contains("WebSocket client disconnected, duration:"))
        #expect(server.output.contains("shutdown complete"))
    }

    @Test func shutdownGraceBoundsUnresponsiveClients() throws {
        let server = try ServerProcess(["--host", "127.0.0.1", "--port", "0", "--workers", "1", "--shutdown-grace", "500ms"])
        defer { server.kill() }
        let port = try server.listeningPort()
        let stubborn = try TestWebSocket(port: port, path: "/ws")
        let start = Date()
        kill(server.process.processIdentifier, SIGINT)
        #expect(try stubborn.readClose().closeCode == 1001)
        // It never answers; the server exits anyway once the grace is up.
        #expect(try server.waitForExit(5) == 0)
        #expect(Date().timeIntervalSince(start) < 3)
    }

    @Test func portInUseIsAClearError() throws {
        let first = try ServerProcess(["--host", "127.0.0.1", "--port", "0", "--workers", "1"])
        defer { first.kill() }
        let port = try first.listeningPort()
        let second = try ServerProcess(["--host", "127.0.0.1", "--port", "\(port)", "--workers", "1"])
        #expect(try second.waitForExit(5) != 0)
        #expect(second.output.contains("port \(port) on 127.0.0.1 is already in use"))
    }

    @Test(arguments: [
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--workers", "0"], "--workers must be between 1 and 1024"),
        (["--ping-interval", "soon"], "--ping-interval"),
        (["--idle-timeout", "10s", "--ping-interval", "30s"], "must be longer than --ping-interval"),
        (["--log-format", "xml"], "--log-format must be text or json"),
        (["--bogus"], "Unknown option '--bogus'"),
    ])
    func invalidArgumentsExit64WithOneLine(args: [String], message: String) throws {
        let p = try ServerProcess(args)
        defer { p.kill() }
        #expect(try p.waitForExit(5) == 64)
        let lines = p.output.split(separator: "\n")
        #expect(lines.count == 1, "\(p.output)")
        #expect(p.output.contains(message), "\(p.output)")
    }

    @Test func environmentVariablesConfigure() throws {
        let server = try ServerProcess([], environment: ["TICKWIRE_PORT": "0", "TICKWIRE_HOST": "127.0.0.1", "TICKWIRE_WORKERS": "3", "TICKWIRE_ECHO": "true"])
        defer { server.kill() }
        let port = try server.listeningPort()
        let s = try TestSocket(port: port)
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try s.readHTTPResponse().text.contains("\"workers\":3"))
        let ws = try TestWebSocket(port: port, path: "/echo")
        try ws.sendText("env")
        #expect(try ws.readMessage().text == "env")
    }

    @Test func helpAndVersion() throws {
        let help = try ServerProcess(["--help"])
        #expect(try help.waitForExit(5) == 0)
        #expect(help.output.contains("--max-message-size"))
        #expect(help.output.contains("TICKWIRE_"))
        let version = try ServerProcess(["--version"])
        #expect(try version.waitForExit(5) == 0)
        #expect(version.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0.1.0")
    }
}

@Suite(.serialized) struct LogTests {
    @Test func jsonLinesCarryTheSpecEventsWithConnectionAndPeer() throws {
        let server = try ServerProcess(["--host", "127.0.0.1", "--port", "0", "--workers", "1", "--no-simulator",
                                        "--log-format", "json", "--log-level", "debug"])
        defer { server.kill() }
        let port = try server.listeningPort()
        let client = try StreamClient(port: port)
        _ = try client.next("Connected")
        _ = try acceptedSeqs(publish(port, trade("BTCUSDT", 1)))
        _ = try client.next("TradeExecuted")
        try client.send("{not json")
        _ = try client.next("Error")
        try client.ws.send(opcode: 1, [0x61], masked: false)   // a protocol error
        _ = try client.ws.readClose()
        #expect(try client.ws.socket.readEOF())
        try server.waitForOutput("WebSocket client disconnected, duration: ")
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try server.waitForExit(5) == 0)
        var events: [[String: Any]] = []
        for line in server.output.split(separator: "\n") {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object != nil, "not a JSON line: \(line)")
            if let object { events.append(object) }
        }
        func find(_ prefix: String, _ level: String) -> [String: Any]? {
            events.first { ($0["msg"] as? String)?.hasPrefix(prefix) == true && $0["level"] as? String == level }
        }
        let connected = find("WebSocket client connected from 127.0.0.1", "info")
        #expect(connected?["conn"] != nil && (connected?["peer"] as? String)?.hasPrefix("127.0.0.1:") == true)
        let disconnected = find("WebSocket client disconnected, duration: ", "info")
        #expect(disconnected?["conn"] as? String == connected?["conn"] as? String)
        #expect(disconnected?["close_code"] as? String == "1002")
        #expect(find("Broadcasting TradeExecuted message to 1 clients", "debug") != nil)
        #expect(find("Invalid message format: {not json", "warning")?["peer"] != nil)
        #expect(find("WebSocket connection error: client frames must be masked", "error")?["conn"] != nil)
        #expect(!events.isEmpty && events.allSatisfy { ($0["ts"] as? String)?.hasSuffix("Z") == true })
        // The last line, queued just before exit, was flushed.
        #expect(find("shutdown complete", "info") != nil)
    }

    /// stderr is a pipe nobody reads (a stuck journald): the reactor that logs must go on
    /// serving; lines past the log's bound are dropped, counted, and reported once the
    /// output drains.
    @Test func aStderrNobodyReadsStallsNoReactor() throws {
        let server = try ServerProcess(["--host", "127.0.0.1", "--port", "0", "--workers", "1", "--no-simulator",
                                        "--log-level", "debug"], readOutput: false)
        defer { server.kill() }
        let port = try server.listeningPort()
        // Each broadcast frame is a DEBUG line (~80 bytes) logged on the one reactor:
        // 10,000 of them fill the pipe (64 KiB) and the log's queue (4096 lines) twice over.
        for round in 0..<10 {
            let batch = "[" + (0..<1000).map { trade("BTCUSDT", round * 1000 + $0) }.joined(separator: ",") + "]"
            _ = try acceptedSeqs(publish(port, batch))
        }
        // The reactor still answers (a blocking log write would hold it, and this times out).
        let s = try TestSocket(port: port)
        try s.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        let metrics = try s.readHTTPResponse()
        #expect(metrics.status == 200)
        let dropped = metrics.text.split(separator: "\n").first { $0.hasPrefix("tickwire_log_lines_dropped_total ") }
        #expect(dropped.flatMap { Double($0.split(separator: " ")[1]) }.map { $0 > 0 } == true, "\(dropped ?? "no metric")")
        // Someone reads again: the drop notice arrives, and the shutdown lines are not lost.
        server.startReading()
        try server.waitForOutput("log lines dropped: log output too slow", timeout: 20)
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try server.waitForExit(10) == 0)
        #expect(server.output.contains("SIGTERM received"))
        #expect(server.output.contains("shutdown complete"))
    }
}
