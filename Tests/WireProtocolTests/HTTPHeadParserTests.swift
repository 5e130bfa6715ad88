import Testing
@testable import WireProtocol

/// Feeds a request to the parser the way a reactor does: bytes accumulate, the parser is
/// called after each chunk, and the first non-incomplete result is returned.
func parseIncrementally(_ request: String, chunk: Int, limits: HTTPLimits = HTTPLimits()) -> (HTTPHeadParser.Result, [UInt8]) {
    let all = Array(request.utf8)
    var seen: [UInt8] = []
    var scanned = 0
    var offset = 0
    while offset < all.count {
        let n = min(chunk, all.count - offset)
        seen += all[offset..<(offset + n)]
        offset += n
        let result = seen.withUnsafeBytes { HTTPHeadParser.parse($0, limits: limits, searchFrom: max(0, scanned - 3)) }
        scanned = seen.count
        if result != .incomplete { return (result, seen) }
    }
    return (.incomplete, seen)
}

@Suite struct HTTPHeadParserTests {
    let upgrade = "GET /ws?since=5 HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n"

    @Test(arguments: [1, 2, 7, 64, 10_000])
    func parsesAnUpgradeInAnyChunking(chunk: Int) throws {
        let (result, buffer) = parseIncrementally(upgrade, chunk: chunk)
        guard case .complete(let head) = result else {
            Issue.record("expected a complete head, got \(result)")
            return
        }
        buffer.withUnsafeBytes { b in
            #expect(head.method == .get)
            #expect(String(decoding: b.slice(head.path), as: UTF8.self) == "/ws")
            #expect(String(decoding: b.slice(head.query!), as: UTF8.self) == "since=5")
            #expect(String(decoding: b.slice(head.host!), as: UTF8.self) == "localhost:8080")
            #expect(String(decoding: b.slice(head.origin!), as: UTF8.self) == "http://example.com")
            #expect(head.upgradeWebSocket && head.connectionUpgrade)
            #expect(head.webSocketKeyCount == 1 && head.webSocketVersionCount == 1)
            #expect(head.headLength == upgrade.utf8.count)
            #expect(head.headerCount == 6)
            #expect(head.keepAlive)
        }
    }

    @Test func pipelinedRequestsParseOneAtATime() {
        let two = "GET /health HTTP/1.1\r\nHost: a\r\n\r\nPOST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        let raw = Array(two.utf8)
        raw.withUnsafeBytes { b in
            guard case .complete(let first) = HTTPHeadParser.parse(b) else { Issue.record("first"); return }
            let rest = UnsafeRawBufferPointer(rebasing: b[first.headLength...])
            guard case .complete(let second) = HTTPHeadParser.parse(rest) else { Issue.record("second"); return }
            #expect(second.method == .post)
            #expect(second.contentLength == 2)
            #expect(rest.count - second.headLength == 2)
        }
    }

    @Test func keepAliveRules() throws {
        /// The parsed head; a request that does not parse fails the test (not a crash).
        func head(_ s: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> HTTPRequestHead {
            let result = Array(s.utf8).withUnsafeBytes { HTTPHeadParser.parse($0) }
            guard case .complete(let h) = result else {
                Issue.record("\(s.debugDescription) did not parse: \(result)", sourceLocation: sourceLocation)
                throw ParseFailed()
            }
            return h
        }
        struct ParseFailed: Error {}
        #expect(try head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keepAlive)
        #expect(try !head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keepAlive)
        #expect(try !head("GET / HTTP/1.0\r\n\r\n").keepAlive)
        #expect(try head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keepAlive)
        #expect(try head("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").contentLength == 5)
        #expect(try head("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").expectContinue)
        #expect(try head("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").method == .options)
        #expect(try head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").chunked)
    }

    func failure(_ s: String, limits: HTTPLimits = HTTPLimits()) -> HTTPParseError? {
        Array(s.utf8).withUnsafeBytes { if case .failure(let e) = HTTPHeadParser.parse($0, limits: limits) { return e } else { return nil } }
    }

    @Test func errorsWithTheirStatuses() {
        let cases: [(String, HTTPParseError, Int)] = [
            ("GET\r\n\r\n", .malformedRequestLine, 400),
            ("GET / HTTP/1.1 extra\r\n\r\n", .malformedRequestLine, 400),
            ("GET  / HTTP/1.1\r\n\r\n", .malformedRequestLine, 400),
            ("GET http://x/ HTTP/1.1\r\n\r\n", .malformedRequestLine, 400),
            ("G(T / HTTP/1.1\r\n\r\n", .malformedRequestLine, 400),
            ("GET / HTTP/2.0\r\n\r\n", .unsupportedVersion, 505),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", .malformedHeader, 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", .malformedHeader, 400),
            ("GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", .malformedHeader, 400),
            ("GET / HTTP/1.1\r\nX: a\u{01}b\r\n\r\n", .malformedHeader, 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .malformedHeader, 400),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", .malformedRequestLine, 400),
            ("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", .invalidContentLength, 400),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", .invalidContentLength, 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n", .invalidContentLength, 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", .conflictingContentLength, 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", .conflictingContentLength, 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", .unsupportedTransferEncoding, 501),
        ]
        for (request, error, status) in cases {
            #expect(failure(request) == error, "\(request.debugDescription)")
            #expect(error.status.code == status)
        }
    }

    @Test func garbageIsRejectedBeforeTheHeadEnds() {
        #expect(failure("\u{16}\u{03}\u{01}\u{02}") == .malformedRequestLine)   // a TLS ClientHello
        // Merely incomplete: not a failure, and not a complete head either.
        #expect(Array("GET / HTTP/1.1\r\nHost".utf8).withUnsafeBytes { HTTPHeadParser.parse($0) } == .incomplete)
    }

    @Test func limits() {
        let limits = HTTPLimits(maxHeadBytes: 512, maxHeaderCount: 8)
        var many = "GET / HTTP/1.1\r\n"
        for i in 0..<9 { many += "X-\(i): v\r\n" }
        #expect(failure(many + "\r\n", limits: limits) == .tooManyHeaders)
        #expect(HTTPParseError.tooManyHeaders.status.code == 431)
        let big = "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 600)
        #expect(failure(big, limits: limits) == .headTooLarge)
        let longLine = "GET /" + String(repeating: "a", count: 600)
        #expect(failure(longLine, limits: limits) == .requestLineTooLong)
        #expect(HTTPParseError.requestLineTooLong.status.code == 414)
        // Exactly at the limit is fine.
        var exact = "GET / HTTP/1.1\r\nX: "
        exact += String(repeating: "a", count: 512 - exact.utf8.count - 4) + "\r\n\r\n"
        #expect(exact.utf8.count == 512)
        let ok = Array(exact.utf8).withUnsafeBytes { HTTPHeadParser.parse($0, limits: limits) }
        if case .complete = ok {} else { Issue.record("head of exactly the limit should parse: \(ok)") }
    }
}
