/// An HTTP/1.1 response head (RFC 9112 §4), parsed from bytes: the status line and the
/// header fields, names lowercased. Pure: no socket.
struct HTTPResponseHead: Equatable {
    var status: Int
    var reason: String
    var headers: [(name: String, value: String)]
    /// Bytes of the head, including the blank line.
    var length: Int

    static func == (a: Self, b: Self) -> Bool {
        a.status == b.status && a.reason == b.reason && a.length == b.length
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }

    enum ParseResult: Equatable {
        case needMore
        case head(HTTPResponseHead)
        case invalid(String)
    }

    /// The first value of header `name` (lowercase).
    func value(_ name: String) -> String? { headers.first { $0.name == name }?.value }

    /// Every comma-separated token of header `name`, lowercased and trimmed.
    func tokens(_ name: String) -> [String] {
        headers.filter { $0.name == name }.flatMap { $0.value.split(separator: ",") }
            .map { $0.trimmingWhitespace().lowercased() }
    }

    /// Parses `bytes` if it holds a complete head.
    static func parse(_ bytes: [UInt8]) -> ParseResult {
        guard let end = headEnd(bytes) else { return .needMore }
        let text = String(decoding: bytes[..<end], as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard !lines.isEmpty else { return .invalid("empty response") }
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
            return .invalid("not an HTTP/1.x status line: \(statusLine.prefix(80))")
        }
        var headers: [(String, String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { return .invalid("malformed header line: \(line.prefix(80))") }
            headers.append((line[..<colon].trimmingWhitespace().lowercased(), line[line.index(after: colon)...].trimmingWhitespace()))
        }
        return .head(HTTPResponseHead(status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: headers, length: end + 4))
    }

    /// The offset of the `\r\n\r\n` that ends the head.
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i
        }
        return nil
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
