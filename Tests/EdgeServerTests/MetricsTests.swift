import Foundation
import Testing
@testable import EdgeServer

@Suite struct MetricsTests {
    func scrape(_ port: Int) throws -> HTTPResponse {
        let s = try TestSocket(port: port)
        try s.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        return try s.readHTTPResponse()
    }

    /// The value of one sample line (`name{labels} value`).
    func value(_ text: String, _ sample: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Double(line.split(separator: " ").last!)
        }
        return nil
    }

    @Test func exposesTheSpecMetricsAndPassesPromtool() throws {
        let server = try TestServer { $0.workers = 3; $0.maxConnections = 777 }
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send("{broken")
        _ = try client.next("Error")
        try client.send(#"{"type":"Ping"}"#)
        _ = try client.next("Pong")
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<5).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
        for _ in 0..<5 { _ = try client.next("TradeExecuted") }
        _ = try publish(server.port, #"{"type":"Nope","data":{}}"#)
        let resumed = try StreamClient(port: server.port, query: "epoch=\(server.server.epoch)&since=2")
        _ = try resumed.next("SubscriptionConfirmed")

        let r = try scrape(server.port)
        #expect(r.status == 200)
        #expect(r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        let text = r.text
        #expect(value(text, "websocket_connections_active") == 2)
        #expect(value(text, "websocket_connections_total") == 2)
        #expect(value(text, "websocket_messages_received_total") == 2)
        #expect((value(text, "websocket_messages_sent_total") ?? 0) >= 8)
        #expect(value(text, "websocket_errors_parsing_total") == 1)
        #expect(value(text, "websocket_reconnections_total") == 1)
        #expect(value(text, "tickwire_resumes_recovered_total") == 1)
        #expect(value(text, "tickwire_publish_requests_total") == 2)
        #expect(value(text, "tickwire_publish_rejected_total{reason=\"unknown_type\"}") == 1)
        #expect(value(text, "tickwire_messages_published_total{type=\"TradeExecuted\"}") == 5)
        #expect(value(text, "tickwire_connections_limit") == 777)
        #expect(value(text, "tickwire_build_info{version=\"\(TickwireVersion.string)\"}") == 1)
        #expect(value(text, "websocket_message_size_bytes_count") == 5)
        #expect((value(text, "websocket_broadcast_latency_seconds_count") ?? 0) >= 5)
        #expect(value(text, "websocket_broadcast_latency_seconds_bucket{le=\"+Inf\"}") == value(text, "websocket_broadcast_latency_seconds_count"))
        let perWorker = (0..<3).compactMap { value(text, "tickwire_worker_connections{worker=\"\($0)\"}") }
        #expect(perWorker.count == 3 && perWorker.reduce(0, +) == 2)
        for name in ["tickwire_slow_consumer_conflated_total", "tickwire_slow_consumer_disconnects_total", "tickwire_broadcast_failures_total",
                     "tickwire_backlog_bytes", "tickwire_history_messages", "websocket_errors_connection_total", "process_resident_memory_bytes",
                     "tickwire_log_lines_dropped_total"] {
            #expect(value(text, name) != nil, "\(name) missing")
        }
        try promtoolCheck(text)
    }

    func promtoolCheck(_ text: String) throws {
        let candidates = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        guard let promtool = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("promtool is not installed (make test installs it through scripts/validate-deploy.sh)")
            return
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: promtool)
        p.arguments = ["check", "metrics"]
        let input = Pipe()
        let output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = output
        try p.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        p.waitUntilExit()
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0, "promtool check metrics: \(out)")
    }
}
