import Testing
@testable import EdgeServer

@Suite struct HTTPTests {
    @Test func healthIsJSONWithCORS() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try s.readHTTPResponse()
        #expect(r.status == 200)
        #expect(r.headers["content-type"] == "application/json")
        #expect(r.headers["access-control-allow-origin"] == "*")
        #expect(r.headers["date"]?.hasSuffix("GMT") == true)
        #expect(r.text.contains("\"status\":\"ok\""))
        #expect(r.text.contains("\"workers\":2"))
        #expect(r.text.contains("\"connections\":0"))
        #expect(r.text.contains("\"uptime_s\":"))
    }

    @Test func healthCountsWebSockets() throws {
        let server = try TestServer()
        let ws = try TestWebSocket(port: server.port, path: "/echo")
        let s = try TestSocket(port: server.port)
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try s.readHTTPResponse().text.contains("\"connections\":1"))
        _ = ws
    }

    @Test func notFoundAndMethodNotAllowedAreJSON() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = try s.readHTTPResponse()
        #expect(r.status == 404)
        #expect(r.text == #"{"status":404,"error":"Not Found","message":"no route for GET /nope"}"#)
        try s.send("DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n")
        let m = try s.readHTTPResponse()
        #expect(m.status == 405)
        #expect(m.headers["allow"] == "GET, HEAD, OPTIONS")
        #expect(m.text.contains("DELETE is not allowed on /health"))
    }

    @Test func keepAliveAndPipelining() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        // Three requests in one write, one of them with a body that must be skipped.
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\nPOST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try s.readHTTPResponse().status == 200)
        #expect(try s.readHTTPResponse().status == 405)
        #expect(try s.readHTTPResponse().status == 404)
        // And the connection is still usable afterwards.
        try s.send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        let head = try s.readHTTPResponse(headRequest: true)
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try s.readHTTPResponse().status == 200)
    }

    @Test func requestSplitByteByByte() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        for byte in Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8) {
            try s.send([byte])
        }
        #expect(try s.readHTTPResponse().status == 200)
    }

    @Test func http10ClosesAfterTheResponse() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send("GET /health HTTP/1.0\r\n\r\n")
        let r = try s.readHTTPResponse()
        #expect(r.status == 200)
        #expect(r.headers["connection"] == "close")
        #expect(try s.readEOF())
    }

    @Test func preflight() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send("OPTIONS /api/publish HTTP/1.1\r\nHost: x\r\nOrigin: http://dash.example\r\nAccess-Control-Request-Method: POST\r\n\r\n")
        let r = try s.readHTTPResponse()
        #expect(r.status == 204)
        #expect(r.headers["access-control-allow-methods"] == "GET, POST, OPTIONS")
        #expect(r.headers["access-control-allow-headers"] == "authorization, content-type")
        #expect(r.headers["access-control-allow-origin"] == "*")
    }

    @Test func corsAllowList() throws {
        let server = try TestServer { $0.corsOrigins = ["https://a.example", "https://b.example"] }
        let s = try TestSocket(port: server.port)
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\nOrigin: https://b.example\r\n\r\n")
        let allowed = try s.readHTTPResponse()
        #expect(allowed.headers["access-control-allow-origin"] == "https://b.example")
        #expect(allowed.headers["vary"] == "Origin")
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n")
        #expect(try s.readHTTPResponse().headers["access-control-allow-origin"] == nil)
    }

    @Test func malformedRequestGets400AndClose() throws {
        let server = try TestServer()
        let s = try TestSocket(port: server.port)
        try s.send("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n")
        let r = try s.readHTTPResponse()
        #expect(r.status == 400)
        #expect(r.text.contains("malformed header field"))
        #expect(r.headers["connection"] == "close")
        #expect(try s.readEOF())
    }

    @Test func limitsGive431And413And505() throws {
        let server = try TestServer { $0.httpLimits.maxHeadBytes = 1024; $0.maxRequestBodyBytes = 100 }
        let a = try TestSocket(port: server.port)
        try a.send("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 2000) + "\r\n\r\n")
        #expect(try a.readHTTPResponse().status == 431)
        let b = try TestSocket(port: server.port)
        try b.send("POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        let tooLarge = try b.readHTTPResponse()
        #expect(tooLarge.status == 413)
        #expect(tooLarge.text.contains("over the 100-byte limit"))
        let c = try TestSocket(port: server.port)
        try c.send("GET /health HTTP/2.0\r\n\r\n")
        #expect(try c.readHTTPResponse().status == 505)
        let d = try TestSocket(port: server.port)
        try d.send("POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(try d.readHTTPResponse().status == 411)
    }

    @Test func echoEndpointOnlyWhenEnabled() throws {
        let server = try TestServer { $0.echo = false }
        let s = try TestSocket(port: server.port)
        try s.send("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        #expect(try s.readHTTPResponse().status == 404)
    }

    @Test func handshakeTimeoutClosesSilentConnections() throws {
        let server = try TestServer { $0.handshakeTimeoutMilliseconds = 300 }
        let s = try TestSocket(port: server.port)
        try s.send("GET /health HTTP/1.1\r\nHo")       // slow-loris: never finishes
        let start = monotonicNow()
        #expect(try s.readEOF())
        let elapsed = monotonicNow() - start
        #expect(elapsed > 0.2 && elapsed < 3)
    }

    @Test func keepAliveConnectionsTimeOutWhenIdle() throws {
        let server = try TestServer { $0.handshakeTimeoutMilliseconds = 300 }
        let s = try TestSocket(port: server.port)
        try s.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try s.readHTTPResponse().status == 200)
        #expect(try s.readEOF())
    }
}
