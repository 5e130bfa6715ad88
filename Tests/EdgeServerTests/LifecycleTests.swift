import Foundation
import Testing
@testable import EdgeServer

/// The connection lifecycle over real sockets: what `ConnectionLifecycle` promises, seen
/// from the peer's side.
@Suite struct LifecycleTests {
    static func request(_ path: String, _ extra: String = "", method: String = "GET", body: String = "",
                        contentType: String = "application/json") -> String {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: t\r\n\(extra)"
        if !body.isEmpty || method == "POST" { head += "Content-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n" }
        return head + "\r\n" + body
    }

    // MARK: - HTTP/1.1

    @Test func noRequestAfterOneAnsweredWithConnectionClose() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send(Self.request("/health", "Connection: close\r\n")
            + Self.request("/api/publish", method: "POST", body: trade("BTCUSDT", 1))
            + Self.request("/health"))
        let first = try s.readHTTPResponse()
        #expect(first.status == 200 && first.headers["connection"] == "close")
        #expect(try s.readEOF(), "nothing after the Connection: close response")
        // The publish behind it was never processed.
        #expect(server.server.context.queues.headSeq.load(ordering: .acquiring) == 0)
        #expect(server.server.counters().httpRequests == 1)
    }

    @Test func publishWithConnectionCloseEndsThePipeline() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send(Self.request("/api/publish", method: "POST", body: trade("BTCUSDT", 1))
            + Self.request("/api/publish", "Connection: close\r\n", method: "POST", body: trade("BTCUSDT", 2))
            + Self.request("/api/publish", method: "POST", body: trade("BTCUSDT", 3)))
        let a = try s.readHTTPResponse()
        let b = try s.readHTTPResponse()
        #expect(try acceptedSeqs(a) == [1])
        #expect(try acceptedSeqs(b) == [2])
        #expect(b.headers["connection"] == "close")
        #expect(try s.readEOF())
        #expect(server.server.context.queues.headSeq.load(ordering: .acquiring) == 2)
    }

    @Test func pipelinedRequestsAreAnsweredStrictlyInOrder() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        // Answers on the reactor, answers from the edge, and refusals, interleaved in one write.
        try s.send(Self.request("/health")
            + Self.request("/api/snapshot")
            + Self.request("/api/publish", method: "POST", body: trade("BTCUSDT", 1))
            + Self.request("/health")
            + Self.request("/metrics")
            + Self.request("/api/publish", method: "POST", body: "{not json")
            // Refused on the reactor while a batch is with the publisher: it must wait its turn.
            + Self.request("/api/publish", method: "POST", body: "x", contentType: "text/plain")
            + Self.request("/api/publish", method: "POST", body: trade("BTCUSDT", 2))
            + Self.request("/nowhere"))
        let expected: [(Int, String)] = [
            (200, "\"status\":\"ok\""), (200, "\"epoch\""), (202, "\"seqs\":[1]"), (200, "\"status\":\"ok\""),
            (200, "websocket_connections_active"), (400, "not valid JSON"), (415, "Content-Type"), (202, "\"seqs\":[2]"), (404, "no route"),
        ]
        for (i, (status, fragment)) in expected.enumerated() {
            let r = try s.readHTTPResponse()
            #expect(r.status == status, "response \(i): \(r.status) \(r.text.prefix(80))")
            #expect(r.text.contains(fragment), "response \(i) lacks \(fragment): \(r.text.prefix(120))")
        }
    }

    @Test func aReplyAfterShutdownBeganClosesTheConnection() throws {
        let server = try TestServer { $0.shutdownGraceMilliseconds = 2000 }
        let s = try TestSocket(port: server.port)
        try s.send(Self.request("/health"))
        #expect(try s.readHTTPResponse().status == 200)
        server.server.beginShutdown()
        // The idle keep-alive connection is closed by the shutdown.
        #expect(try s.readEOF())
    }

    @Test func anHTTPPeerThatDoesNotReadItsResponseIsDroppedAtTheCloseTimeout() throws {
        let server = try TestServer {
            $0.closeTimeoutMilliseconds = 300
            $0.sendBufferBytes = 4 << 10
        }
        // A small window, and a response far larger than both socket buffers.
        let s = try TestSocket(port: server.port, receiveBuffer: 4096)
        try s.send(Self.request("/tickwire.js", "Connection: close\r\n"))
        try waitUntil("the slot freed although the peer reads nothing") { server.server.counters().socketsOpen == 0 }
    }

    // MARK: - WebSocket closing

    /// A subscriber that stops reading with its socket full, so that nothing the server
    /// queues (not even a Close) can be written.
    static func blockedSubscriber(_ server: TestServer) throws -> StreamClient {
        let client = try StreamClient(port: server.port, query: "channels=trades", receiveBuffer: 4096)
        _ = try client.next("Connected")
        _ = try client.next("SubscriptionConfirmed")
        for round in 0..<4 {
            _ = try acceptedSeqs(publish(server.port, "[" + (0..<100).map { trade("BTCUSDT", round * 100 + $0, pad: 500) }.joined(separator: ",") + "]"))
        }
        try waitUntil("the subscriber's socket to fill up") { server.server.counters().backlogBytes > 0 }
        return client
    }

    static func blockedServer(_ c: inout ServerConfiguration) {
        c.closeTimeoutMilliseconds = 300
        c.sendBufferBytes = 4 << 10
        c.maxBacklogBytes = 16 << 20     // no 1013: the close timeout alone must free it
        c.historySize = 5000
    }

    @Test func aPeerThatSendsCloseAndStopsReadingIsGoneWithinTheCloseTimeout() throws {
        let server = try TestServer(Self.blockedServer)
        let client = try Self.blockedSubscriber(server)
        try client.ws.close(code: 1000)
        try waitUntil("the slot of a peer that sent Close and reads nothing to be freed") { server.server.counters().socketsOpen == 0 }
        #expect(server.server.webSocketCount == 0)
    }

    @Test func aPeerThatStopsReadingWithoutCloseIsGoneWithinIdlePlusCloseTimeout() throws {
        let server = try TestServer {
            Self.blockedServer(&$0)
            $0.pingIntervalMilliseconds = 200
            $0.idleTimeoutMilliseconds = 500
        }
        _ = try Self.blockedSubscriber(server)
        // It sends nothing (no pong): idle timeout, our Close cannot be written, close timeout.
        try waitUntil("the slot of a silent peer with a full socket to be freed") { server.server.counters().socketsOpen == 0 }
    }

    @Test func nothingFollowsOurClose() throws {
        let server = try TestServer {
            $0.pingIntervalMilliseconds = 100
            $0.idleTimeoutMilliseconds = 400
            $0.closeTimeoutMilliseconds = 2000
        }
        let client = try StreamClient(port: server.port, query: "channels=trades")
        _ = try client.next("Connected")
        _ = try client.next("SubscriptionConfirmed")
        // The client never answers pings, so the server closes it as idle (1001).
        var close: WireFrame?
        while close == nil {
            let f = try client.ws.readFrame()
            if f.opcode == 8 { close = f }
        }
        #expect(close?.closeCode == 1001)
        // Published after our Close, and pings due after it: none may follow it.
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<10).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
        try waitUntil("all ten trades published") { server.server.context.queues.headSeq.load(ordering: .acquiring) == 10 }
        try client.ws.close(code: 1001)
        #expect(try client.ws.socket.readEOF(), "a frame followed the server's Close")
    }

    @Test func thePeersCloseIsEchoedThenTheServerClosesFirst() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.close(code: 4321)
        let reply = try ws.readClose()
        #expect(reply.closeCode == 4321)
        // §7.1.1: the server closes the TCP connection first.
        #expect(try ws.socket.readEOF())
        try waitUntil("the server closing the socket") { server.server.counters().socketsOpen == 0 }
    }
}
