#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One HTTP/1.1 request and its response over a fresh TCP connection (`Connection: close`),
/// for `GET /api/snapshot`. Blocking: run it through `DedicatedThread.run`.
struct HTTPExchange {
    struct Response: Sendable {
        var status: Int
        var headers: [(name: String, value: String)]
        var body: [UInt8]
    }

    var host: String
    var port: Int
    var hostHeader: String
    var timeout: Duration
    var maxBodyBytes: Int
    /// `https://` with these trust settings; nil: plain HTTP.
    var tls: TLSClientContext? = nil

    func perform(method: String, target: String, headers: [(String, String)] = [], body: [UInt8] = []) throws(TransportError) -> Response {
        let deadline = Posix.monotonicNanoseconds() + Posix.nanoseconds(timeout)
        let wake = try WakePipe()
        let socket = try ClientSocket.open(host: host, port: port, tls: tls, deadline: deadline, wake: wake) { false }
        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(hostHeader)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        try socket.sendAll(Array((head + "\r\n").utf8) + body, deadline: deadline, what: "\(method) \(target)")

        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        var total = 0
        /// The next bytes from the server, nil at EOF.
        func readMore() throws(TransportError) -> [UInt8]? {
            while true {
                if socket.wait(Int16(POLLIN), wake: nil, deadline: deadline) == .timedOut { throw .timedOut("\(method) \(target)") }
                let n = try socket.receive(into: &chunk)
                guard let n else { continue }
                if n == 0 { return nil }
                total += n
                if total > maxBodyBytes + (16 << 10) { throw .http("\(method) \(target): response over \(maxBodyBytes) bytes") }
                return Array(chunk[..<n])
            }
        }
        var received: [UInt8] = []
        var responseHead: HTTPResponseHead
        while true {
            switch HTTPResponseHead.parse(received) {
            case .head(let h): responseHead = h
            case .invalid(let why): throw .http("\(method) \(target): \(why)")
            case .needMore:
                guard let bytes = try readMore() else { throw .http("\(method) \(target): connection closed before a response") }
                received += bytes
                continue
            }
            break
        }
        var rest = Array(received[responseHead.length...])
        let body: [UInt8]
        if responseHead.tokens("transfer-encoding").contains("chunked") {
            body = try Self.dechunk(rest, more: readMore, limit: maxBodyBytes)
        } else if let lengthText = responseHead.value("content-length") {
            guard let length = Int(lengthText), length >= 0 else { throw .http("\(method) \(target): bad Content-Length '\(lengthText)'") }
            guard length <= maxBodyBytes else { throw .http("\(method) \(target): body of \(length) bytes is over \(maxBodyBytes)") }
            while rest.count < length {
                guard let bytes = try readMore() else { throw .http("\(method) \(target): body ended after \(rest.count) of \(length) bytes") }
                rest += bytes
            }
            body = Array(rest[..<length])
        } else {
            while let bytes = try readMore() { rest += bytes }
            body = rest
        }
        return Response(status: responseHead.status, headers: responseHead.headers, body: body)
    }

    /// Decodes a chunked body (RFC 9112 §7.1) that starts with `initial`; `more` reads on.
    static func dechunk(_ initial: [UInt8], more: () throws(TransportError) -> [UInt8]?, limit: Int) throws(TransportError) -> [UInt8] {
        var buffer = initial
        var body: [UInt8] = []
        var position = 0
        func need(_ count: Int) throws(TransportError) {
            while buffer.count - position < count {
                guard let bytes = try more() else { throw .http("chunked body ended early") }
                buffer += bytes
            }
        }
        func line() throws(TransportError) -> String {
            var scanned = position
            while true {
                while scanned + 1 < buffer.count {
                    if buffer[scanned] == 13 && buffer[scanned + 1] == 10 {
                        let text = String(decoding: buffer[position..<scanned], as: UTF8.self)
                        position = scanned + 2
                        return text
                    }
                    scanned += 1
                }
                if scanned - position > 4096 { throw .http("chunk size line too long") }
                try need(scanned - position + 2)
            }
        }
        while true {
            let sizeLine = try line()
            let sizeText = sizeLine.split(separator: ";", maxSplits: 1).first.map { $0.trimmingWhitespace() } ?? ""
            guard let size = Int(sizeText, radix: 16), size >= 0 else { throw .http("bad chunk size '\(sizeLine.prefix(20))'") }
            if size == 0 { return body }
            guard body.count + size <= limit else { throw .http("body over \(limit) bytes") }
            try need(size + 2)
            body += buffer[position..<(position + size)]
            position += size + 2
        }
    }
}
