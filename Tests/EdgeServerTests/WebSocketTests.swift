import Glibc
import Testing
@testable import EdgeServer

@Suite struct WebSocketTests {
    @Test func echoTextAndBinary() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.sendText("hello ✓")
        #expect(try ws.readMessage() == WireFrame(fin: true, opcode: 1, payload: Array("hello ✓".utf8)))
        let blob = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 * 13) }
        try ws.send(opcode: 2, blob)
        let back = try ws.readMessage()
        #expect(back.opcode == 2 && back.payload == blob)
    }

    @Test func fragmentedMessageWithPingInBetween() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.send(opcode: 1, Array("frag".utf8), fin: false)
        try ws.send(opcode: 9, Array("mid".utf8))
        try ws.send(opcode: 0, Array("mented".utf8), fin: true)
        #expect(try ws.readFrame() == WireFrame(fin: true, opcode: 10, payload: Array("mid".utf8)))
        #expect(try ws.readFrame().text == "fragmented")
    }

    @Test func manyMessagesInOneWrite() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        var batch: [UInt8] = []
        for i in 0..<500 { batch += TestWebSocket.frame(opcode: 1, Array("m\(i)".utf8)) }
        try ws.socket.send(batch)
        for i in 0..<500 { #expect(try ws.readMessage().text == "m\(i)") }
    }

    @Test func framesRightBehindTheUpgradeRequest() throws {
        // A client may send frames without waiting for the 101.
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send(Array("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8)
            + TestWebSocket.frame(opcode: 1, Array("early".utf8)))
        #expect(try s.readHTTPResponse().status == 101)
        let h = try s.read(2)
        #expect(h == [0x81, 5])
        #expect(try s.read(5) == Array("early".utf8))
    }

    @Test func streamEndpointGreetsWithConnected() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port, path: "/ws")
        let hello = try ws.readMessage()
        #expect(hello.opcode == 1)
        #expect(hello.text.hasPrefix(#"{"type":"Connected","#))
        #expect(hello.text.contains(#""message":"WebSocket connection established""#))
        #expect(hello.text.contains(#""timestamp":"20"#))
    }

    @Test func pingGetsPong() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.send(opcode: 9, Array("are you there".utf8))
        #expect(try ws.readFrame() == WireFrame(fin: true, opcode: 10, payload: Array("are you there".utf8)))
    }

    @Test func clientInitiatedCloseHandshake() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.close(code: 4001)
        let close = try ws.readFrame()
        #expect(close.opcode == 8)
        #expect(close.closeCode == 4001)
        #expect(try ws.socket.readEOF())
        try waitUntil("no WebSocket left") { server.server.webSocketCount == 0 }
    }

    @Test func unmaskedFrameFailsWith1002() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.send(opcode: 1, Array("x".utf8), masked: false)
        let close = try ws.readClose()
        #expect(close.closeCode == 1002)
        #expect(close.closeReason == "client frames must be masked")
        #expect(try ws.socket.readEOF())
    }

    @Test func reservedOpcodeAndRSVFailWith1002() throws {
        let server = try TestServer()
        let a = try TestWebSocket(port: server.port)
        try a.send(opcode: 5, [])
        #expect(try a.readClose().closeCode == 1002)
        let b = try TestWebSocket(port: server.port)
        try b.sendText("first")
        try b.send(opcode: 1, Array("x".utf8), rsv: 2)
        #expect(try b.readMessage().text == "first")   // what came before is still answered
        #expect(try b.readClose().closeCode == 1002)
    }

    @Test func invalidUTF8FailsWith1007() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.send(opcode: 1, [0x68, 0x69, 0xC0, 0xAF], fin: false)
        let close = try ws.readClose()
        #expect(close.closeCode == 1007)
    }

    @Test func oversizeMessageFailsWith1009() throws {
        let server = try TestServer { $0.maxMessageSize = 1000 }
        let ws = try TestWebSocket(port: server.port)
        try ws.send(opcode: 2, [UInt8](repeating: 0, count: 800), fin: false)
        try ws.send(opcode: 0, [UInt8](repeating: 0, count: 800), fin: true)
        let close = try ws.readClose()
        #expect(close.closeCode == 1009)
        #expect(close.closeReason == "message larger than 1000 bytes")
    }

    @Test func badHandshakes() throws {
        let server = try TestServer()
        func attempt(_ request: String) throws -> HTTPResponse {
            let s = try TestSocket(port: server.port)
            try s.send(request)
            return try s.readHTTPResponse()
        }
        let base = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        let version = try attempt(base.replacingOccurrences("Version: 13", "Version: 8"))
        #expect(version.status == 426)
        #expect(version.headers["sec-websocket-version"] == "13")
        #expect(version.text.contains("version 13"))
        let noKey = try attempt(base.replacingOccurrences("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""))
        #expect(noKey.status == 400)
        #expect(noKey.text.contains("missing Sec-WebSocket-Key"))
        #expect(try attempt(base.replacingOccurrences("dGhlIHNhbXBsZSBub25jZQ==", "short")).status == 400)
        #expect(try attempt(base.replacingOccurrences("Connection: Upgrade", "Connection: keep-alive")).status == 400)
        #expect(try attempt(base.replacingOccurrences("Host: x\r\n", "")).status == 400)
        #expect(try attempt(base.replacingOccurrences("GET /ws", "POST /ws")).status == 405)
        let plain = try attempt("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(plain.status == 426)
        #expect(plain.headers["upgrade"] == "websocket")
        #expect(server.server.webSocketCount == 0)
    }

    @Test func maxConnectionsGives503BeforeUpgrading() throws {
        let server = try TestServer { $0.maxConnections = 2 }
        let a = try TestWebSocket(port: server.port)
        let b = try TestWebSocket(port: server.port)
        let s = try TestSocket(port: server.port)
        try s.send("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let r = try s.readHTTPResponse()
        #expect(r.status == 503)
        #expect(r.text.contains("connection limit of 2 reached"))
        // A slot frees up once a client leaves.
        try a.close()
        _ = try a.readClose()
        try waitUntil("one WebSocket left") { server.server.webSocketCount == 1 }
        _ = try TestWebSocket(port: server.port)
        _ = b
    }

    @Test func serverPingsAndClosesIdleClients() throws {
        let server = try TestServer { $0.pingIntervalMilliseconds = 150; $0.idleTimeoutMilliseconds = 600 }
        let ws = try TestWebSocket(port: server.port)
        let start = monotonicNow()
        let ping = try ws.readFrame()
        #expect(ping.opcode == 9)
        // This client never answers: after the idle timeout it gets Close 1001.
        let close = try ws.readClose()
        let elapsed = monotonicNow() - start
        #expect(close.closeCode == 1001)
        #expect(close.closeReason == "idle timeout")
        #expect(elapsed > 0.45 && elapsed < 3)
    }

    @Test func clientsThatAnswerPingsStay() throws {
        let server = try TestServer { $0.pingIntervalMilliseconds = 100; $0.idleTimeoutMilliseconds = 400 }
        let ws = try TestWebSocket(port: server.port)
        let start = monotonicNow()
        var pongs = 0
        while monotonicNow() - start < 1.2 {
            let f = try ws.readFrame()
            #expect(f.opcode == 9, "unexpected frame \(f)")
            try ws.send(opcode: 10, f.payload)
            pongs += 1
        }
        #expect(pongs >= 8)
        try ws.sendText("still here")
        #expect(try ws.readMessage().text == "still here")
    }

    @Test func gracefulShutdownSends1001() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port)
        try ws.sendText("before")
        #expect(try ws.readMessage().text == "before")
        server.server.beginShutdown()
        let close = try ws.readClose()
        #expect(close.closeCode == 1001)
        #expect(close.closeReason == "server shutting down")
        try ws.close(code: 1001)
        #expect(try ws.socket.readEOF())
        try waitUntil("the server to stop") { server.server.isStopped }
        #expect(throws: (any Error).self) { try TestSocket(port: server.port) }
    }

    @Test func abruptDisconnectIsCleanedUp() throws {
        let server = try TestServer()
        do {
            let ws = try TestWebSocket(port: server.port)
            try ws.send(opcode: 1, Array("partial".utf8), fin: false)
        }
        try waitUntil("no WebSocket left") { server.server.webSocketCount == 0 }
    }
}
