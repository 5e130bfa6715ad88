import Reactor
import WireProtocol

/// Writes HTTP/1.1 responses into a connection's output queue. Every response carries a
/// Content-Length (so keep-alive and pipelining work), a Date (RFC 9110 §6.6.1), the
/// server's CORS headers and, for errors, a JSON body saying what went wrong.
struct ResponseWriter {
    let pool: BufferPool

    func write(
        _ status: HTTPStatus, contentType: String = "application/json", body: [UInt8],
        headers: [(String, String)] = [], keepAlive: Bool, headOnly: Bool = false,
        cors: String?, date: String, into output: inout ByteQueue
    ) {
        var head = "HTTP/1.1 \(status.code) \(status.reason)\r\nServer: tickwire\r\nDate: \(date)\r\n"
        if status.code != 204 && status.code != 304 {
            head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        }
        if let cors {
            head += "Access-Control-Allow-Origin: \(cors)\r\n"
            if cors != "*" { head += "Vary: Origin\r\n" }
        }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += keepAlive ? "\r\n" : "Connection: close\r\n\r\n"
        output.append(Array(head.utf8), pool: pool)
        if !headOnly && status.code != 204 && status.code != 304 { output.append(body, pool: pool) }
    }

    /// A complete response as bytes (for replies built off the reactor).
    static func build(
        _ status: HTTPStatus, contentType: String = "application/json", body: [UInt8], headers: [(String, String)] = [],
        keepAlive: Bool, headOnly: Bool, cors: String?, date: String
    ) -> [UInt8] {
        var head = "HTTP/1.1 \(status.code) \(status.reason)\r\nServer: tickwire\r\nDate: \(date)\r\n"
        head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        if let cors {
            head += "Access-Control-Allow-Origin: \(cors)\r\n"
            if cors != "*" { head += "Vary: Origin\r\n" }
        }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += keepAlive ? "\r\n" : "Connection: close\r\n\r\n"
        var out = Array(head.utf8)
        if !headOnly { out += body }
        return out
    }

    /// A JSON error body: `{"status":404,"error":"Not Found","message":"..."}`.
    static func errorBody(_ status: HTTPStatus, _ message: String) -> [UInt8] {
        Array("{\"status\":\(status.code),\"error\":\(JSONText.quoted(status.reason)),\"message\":\(JSONText.quoted(message))}".utf8)
    }
}
