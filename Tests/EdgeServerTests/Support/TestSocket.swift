import Glibc
import Testing

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A blocking TCP client on loopback with a receive timeout, for driving the server the
/// way a real peer does: bytes on a real socket, nothing in-process.
final class TestSocket {
    let fd: Int32
    private(set) var buffered: [UInt8] = []

    init(port: Int, host: String = "127.0.0.1", timeoutSeconds: Int = 5, receiveBuffer: Int? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer.map(Int32.init) {
            // Before connect, so the window is small from the start: a slow reader.
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            // No close here: `self` is whole, so deinit runs and closes `fd`. A second
            // close could hit a descriptor another thread has opened since (an in-process
            // reactor's connection), and libev aborts on the EBADF that follows.
            throw TestError("connect to \(host):\(port) failed: errno \(errno)")
        }
        setTimeout(seconds: timeoutSeconds)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    func setTimeout(seconds: Int, milliseconds: Int = 0) {
        var tv = timeval(tv_sec: seconds, tv_usec: milliseconds * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw TestError("send failed: errno \(errno)") }
            offset += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads more bytes into the buffer; false on EOF. Throws on timeout or error.
    @discardableResult
    func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        var n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        // A signal to the test process (SIGCHLD of a child another test reaped) is no error.
        while n < 0 && errno == EINTR { n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
        if n == 0 { return false }
        if n < 0 {
            if errno == EAGAIN { throw TestError("timed out waiting for data") }
            if errno == ECONNRESET { return false }
            throw TestError("recv failed: errno \(errno)")
        }
        buffered += chunk[0..<n]
        return true
    }

    /// Takes exactly `n` bytes.
    func read(_ n: Int) throws -> [UInt8] {
        while buffered.count < n {
            if try !fill() { throw TestError("EOF after \(buffered.count) of \(n) bytes") }
        }
        let out = Array(buffered[0..<n])
        buffered.removeFirst(n)
        return out
    }

    /// True if the peer closed (EOF or reset) within the timeout and sent nothing more.
    func readEOF() throws -> Bool {
        if !buffered.isEmpty { return false }
        return try !fill()
    }

    func readHTTPResponse(headRequest: Bool = false) throws -> HTTPResponse {
        while true {
            if let end = buffered.firstRange(of: [13, 10, 13, 10]) {
                let head = String(decoding: buffered[0..<end.lowerBound], as: UTF8.self)
                buffered.removeFirst(end.upperBound)
                let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
                let statusParts = lines[0].split(separator: " ", maxSplits: 2)
                var headers: [String: String] = [:]
                for line in lines.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingSpaces()
                }
                // A throw, not a trap: one bad response must fail its test, not the whole test process.
                guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
                    throw TestError("malformed status line: \(lines[0])")
                }
                var body: [UInt8] = []
                if let length = headers["content-length"].flatMap({ Int($0) }), status != 101 && !headRequest {
                    body = try read(length)
                }
                return HTTPResponse(status: status, headers: headers, body: body)
            }
            if try !fill() { throw TestError("EOF before a complete response") }
        }
    }
}

struct HTTPResponse {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
}

extension Substring {
    func trimmingSpaces() -> String {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

extension Array where Element == UInt8 {
    func firstRange(of needle: [UInt8]) -> Range<Int>? {
        guard count >= needle.count else { return nil }
        for i in 0...(count - needle.count) where self[i..<(i + needle.count)].elementsEqual(needle) {
            return i..<(i + needle.count)
        }
        return nil
    }
}

import Foundation

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String { replacingOccurrences(of: a, with: b) }
}
