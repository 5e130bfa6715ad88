/// Parses an HTTP/1.1 request head (RFC 9112 §2-§6) from the front of a buffer.
///
/// Strict where leniency has been a security problem: CRLF line endings only, no space
/// before a header's colon, no obsolete line folding, one Content-Length value, and never
/// both Content-Length and Transfer-Encoding (request smuggling, RFC 9112 §6.3).
public enum HTTPHeadParser {
    public enum Result: Equatable, Sendable {
        /// No complete head yet; call again with more bytes.
        case incomplete
        case complete(HTTPRequestHead)
        case failure(HTTPParseError)
    }

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let space = UInt8(ascii: " ")
    private static let tab = UInt8(ascii: "\t")

    /// Parses the head at the start of `buffer`. `searchFrom` lets a caller that already
    /// searched a prefix for the blank line skip it (pass the previous length minus 3).
    public static func parse(_ buffer: UnsafeRawBufferPointer, limits: HTTPLimits = HTTPLimits(), searchFrom: Int = 0) -> Result {
        let window = min(buffer.count, limits.maxHeadBytes)
        guard let end = findHeadEnd(buffer, from: max(0, searchFrom), to: window) else {
            // Reject garbage early rather than waiting for 8 KiB of it. Checked before the
            // size limit, so that the verdict does not depend on how the bytes were split
            // into reads: a malformed request line is a 400 whether it came in one read or many.
            let lineEnd = firstLineEnd(buffer, to: window)
            if let lineEnd {
                var scratch = HTTPRequestHead()
                if let error = parseRequestLine(buffer, 0, lineEnd, &scratch) { return .failure(error) }
            } else if let error = invalidRequestLinePrefix(buffer, window) {
                return .failure(error)
            }
            if buffer.count >= limits.maxHeadBytes {
                // Tell "request line too long" apart from "too many header bytes".
                return .failure(lineEnd == nil ? .requestLineTooLong : .headTooLarge)
            }
            return .incomplete
        }
        var head = HTTPRequestHead()
        head.headLength = end
        guard let lineEnd = firstLineEnd(buffer, to: end) else { return .failure(.malformedRequestLine) }
        if let error = parseRequestLine(buffer, 0, lineEnd, &head) { return .failure(error) }
        var lineStart = lineEnd + 2
        while lineStart < end - 2 {
            guard let eol = lineEndIndex(buffer, from: lineStart, to: end) else { return .failure(.malformedHeader) }
            head.headerCount += 1
            if head.headerCount > limits.maxHeaderCount { return .failure(.tooManyHeaders) }
            if let error = parseHeader(buffer, lineStart, eol, &head) { return .failure(error) }
            lineStart = eol + 2
        }
        return .complete(head)
    }

    /// Index just past the first CRLFCRLF in buffer[from..<to], or nil.
    static func findHeadEnd(_ b: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
        var i = from
        while i + 3 < to {
            if b[i + 3] != lf { i += b[i + 3] == cr ? 1 : 4; continue }
            if b[i] == cr && b[i + 1] == lf && b[i + 2] == cr { return i + 4 }
            i += 1
        }
        return nil
    }

    /// Index of the CR of the first CRLF, or nil.
    static func firstLineEnd(_ b: UnsafeRawBufferPointer, to: Int) -> Int? {
        lineEndIndex(b, from: 0, to: to)
    }

    static func lineEndIndex(_ b: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
        var i = from
        while i + 1 < to {
            if b[i] == cr {
                return b[i + 1] == lf ? i : nil
            }
            if b[i] == lf { return nil }
            i += 1
        }
        return nil
    }

    /// A quick check of an incomplete first line: a method must be a token.
    static func invalidRequestLinePrefix(_ b: UnsafeRawBufferPointer, _ count: Int) -> HTTPParseError? {
        var i = 0
        while i < count {
            let c = b[i]
            if c == space { return i == 0 ? .malformedRequestLine : nil }
            if !isTokenChar(c) { return .malformedRequestLine }
            i += 1
        }
        return nil
    }

    static func parseRequestLine(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ head: inout HTTPRequestHead) -> HTTPParseError? {
        var i = start
        while i < end && isTokenChar(b[i]) { i += 1 }
        guard i > start, i < end, b[i] == space else { return .malformedRequestLine }
        head.methodRange = start..<i
        head.method = method(b, start..<i)
        i += 1
        let targetStart = i
        while i < end && b[i] > space && b[i] != 0x7F { i += 1 }
        guard i > targetStart, i < end, b[i] == space else { return .malformedRequestLine }
        head.target = targetStart..<i
        i += 1
        // "HTTP/1.x" and nothing after it.
        guard end - i == 8,
              b[i] == UInt8(ascii: "H"), b[i + 1] == UInt8(ascii: "T"), b[i + 2] == UInt8(ascii: "T"),
              b[i + 3] == UInt8(ascii: "P"), b[i + 4] == UInt8(ascii: "/"), b[i + 6] == UInt8(ascii: "."),
              isDigit(b[i + 5]), isDigit(b[i + 7])
        else { return .malformedRequestLine }
        if b[i + 5] != UInt8(ascii: "1") { return .unsupportedVersion }
        head.versionMinor = b[i + 7] - UInt8(ascii: "0")
        // Split the target into path and query; only origin-form and "*" are served.
        let t = head.target
        if b[t.lowerBound] == UInt8(ascii: "/") {
            var q = t.lowerBound
            while q < t.upperBound && b[q] != UInt8(ascii: "?") { q += 1 }
            head.path = t.lowerBound..<q
            head.query = q < t.upperBound ? (q + 1)..<t.upperBound : nil
        } else if t.count == 1 && b[t.lowerBound] == UInt8(ascii: "*") {
            head.path = t
        } else {
            return .malformedRequestLine
        }
        return nil
    }

    static func method(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> HTTPMethod {
        let s = UnsafeRawBufferPointer(rebasing: b[r])
        switch s.count {
        case 3:
            if s.elementsEqual("GET".utf8) { return .get }
            if s.elementsEqual("PUT".utf8) { return .put }
        case 4:
            if s.elementsEqual("POST".utf8) { return .post }
            if s.elementsEqual("HEAD".utf8) { return .head }
        case 5:
            if s.elementsEqual("PATCH".utf8) { return .patch }
        case 6:
            if s.elementsEqual("DELETE".utf8) { return .delete }
        case 7:
            if s.elementsEqual("OPTIONS".utf8) { return .options }
        default: break
        }
        return .other
    }

    static func parseHeader(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ head: inout HTTPRequestHead) -> HTTPParseError? {
        var i = start
        while i < end && isTokenChar(b[i]) { i += 1 }
        // An empty name, a space before the colon (§5.1) or a folded line (§5.2) are all errors.
        guard i > start, i < end, b[i] == UInt8(ascii: ":") else { return .malformedHeader }
        let name = start..<i
        i += 1
        while i < end && (b[i] == space || b[i] == tab) { i += 1 }
        var valueEnd = end
        while valueEnd > i && (b[valueEnd - 1] == space || b[valueEnd - 1] == tab) { valueEnd -= 1 }
        for j in i..<valueEnd {
            let c = b[j]
            if (c < space && c != tab) || c == 0x7F { return .malformedHeader }
        }
        let value = i..<valueEnd
        switch name.count {
        case 4 where equalsLowercase(b, name, "host"):
            if head.host != nil { return .malformedHeader }
            head.host = value
        case 6 where equalsLowercase(b, name, "origin"):
            head.origin = value
        case 6 where equalsLowercase(b, name, "expect"):
            head.expectContinue = equalsLowercase(b, value, "100-continue")
        case 7 where equalsLowercase(b, name, "upgrade"):
            forEachToken(b, value) { token in
                if equalsLowercase(b, token, "websocket") { head.upgradeWebSocket = true }
            }
        case 10 where equalsLowercase(b, name, "connection"):
            forEachToken(b, value) { token in
                if equalsLowercase(b, token, "upgrade") { head.connectionUpgrade = true }
                else if equalsLowercase(b, token, "close") { head.connectionClose = true }
                else if equalsLowercase(b, token, "keep-alive") { head.connectionKeepAlive = true }
            }
        case 12 where equalsLowercase(b, name, "content-type"):
            head.contentType = value
        case 13 where equalsLowercase(b, name, "if-none-match"):
            head.ifNoneMatch = value
        case 13 where equalsLowercase(b, name, "authorization"):
            head.authorization = value
        case 14 where equalsLowercase(b, name, "content-length"):
            guard let length = parseContentLength(b, value) else { return .invalidContentLength }
            if let existing = head.contentLength, existing != length { return .conflictingContentLength }
            if head.chunked { return .conflictingContentLength }
            head.contentLength = length
        case 15 where equalsLowercase(b, name, "x-forwarded-for"):
            head.forwardedFor = value
        case 17 where equalsLowercase(b, name, "transfer-encoding"):
            if head.contentLength != nil { return .conflictingContentLength }
            // Only "chunked" alone is accepted; any other coding is not implemented.
            guard equalsLowercase(b, value, "chunked") else { return .unsupportedTransferEncoding }
            head.chunked = true
        case 17 where equalsLowercase(b, name, "sec-websocket-key"):
            head.webSocketKey = value
            head.webSocketKeyCount += 1
        case 21 where equalsLowercase(b, name, "sec-websocket-version"):
            head.webSocketVersion = value
            head.webSocketVersionCount += 1
        case 22 where equalsLowercase(b, name, "sec-websocket-protocol"):
            head.webSocketProtocol = value
        case 24 where equalsLowercase(b, name, "sec-websocket-extensions"):
            head.webSocketExtensions = value
        default:
            break
        }
        return nil
    }

    /// Content-Length: digits, at most 15 of them (petabytes; anything longer is an attack).
    /// A list of identical values ("5, 5") is allowed by RFC 9110 §8.6.
    static func parseContentLength(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Int? {
        var result: Int?
        var current = 0
        var digits = 0
        var i = r.lowerBound
        func finish() -> Bool {
            guard digits > 0 else { return false }
            if let r = result, r != current { return false }
            result = current
            current = 0
            digits = 0
            return true
        }
        while i < r.upperBound {
            let c = b[i]
            if isDigit(c) {
                digits += 1
                if digits > 15 { return nil }
                current = current * 10 + Int(c - UInt8(ascii: "0"))
            } else if c == UInt8(ascii: ",") {
                if !finish() { return nil }
                while i + 1 < r.upperBound && (b[i + 1] == space || b[i + 1] == tab) { i += 1 }
            } else {
                return nil
            }
            i += 1
        }
        return finish() ? result : nil
    }

    /// Calls `body` with each comma-separated token of a header value, trimmed.
    static func forEachToken(_ b: UnsafeRawBufferPointer, _ r: Range<Int>, _ body: (Range<Int>) -> Void) {
        var i = r.lowerBound
        while i < r.upperBound {
            while i < r.upperBound && (b[i] == space || b[i] == tab || b[i] == UInt8(ascii: ",")) { i += 1 }
            let start = i
            while i < r.upperBound && b[i] != UInt8(ascii: ",") { i += 1 }
            var end = i
            while end > start && (b[end - 1] == space || b[end - 1] == tab) { end -= 1 }
            if end > start { body(start..<end) }
        }
    }

    /// ASCII case-insensitive comparison against a lowercase literal.
    public static func equalsLowercase(_ b: UnsafeRawBufferPointer, _ r: Range<Int>, _ literal: StaticString) -> Bool {
        guard r.count == literal.utf8CodeUnitCount else { return false }
        let lit = literal.utf8Start
        for k in 0..<r.count {
            var c = b[r.lowerBound + k]
            if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c |= 0x20 }
            if c != lit[k] { return false }
        }
        return true
    }

    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    /// RFC 9110 §5.6.2 tchar.
    @inline(__always) static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
             UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
