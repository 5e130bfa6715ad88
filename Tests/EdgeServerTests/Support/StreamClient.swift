import Foundation
import Testing

/// A `/ws` client that speaks the trading protocol: JSON in, JSON out.
final class StreamClient {
    let ws: TestWebSocket

    init(port: Int, query: String = "", receiveBuffer: Int? = nil) throws {
        ws = try TestWebSocket(port: port, path: "/ws" + (query.isEmpty ? "" : "?" + query), receiveBuffer: receiveBuffer)
    }

    var socket: TestSocket { ws.socket }

    /// The next message as a dictionary (server pings skipped).
    func next() throws -> [String: Any] {
        let frame = try ws.readMessage()
        if frame.opcode == 8 { throw TestError("closed: \(frame.closeCode ?? 0) \(frame.closeReason)") }
        guard frame.opcode == 1 else { throw TestError("expected a text frame, got opcode \(frame.opcode)") }
        guard let object = try JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any] else {
            throw TestError("not a JSON object: \(frame.text)")
        }
        return object
    }

    /// Reads until a message of `type` arrives; returns it.
    func next(_ type: String) throws -> [String: Any] {
        while true {
            let m = try next()
            if m["type"] as? String == type { return m }
        }
    }

    func send(_ json: String) throws { try ws.sendText(json) }
}

extension Dictionary where Key == String, Value == Any {
    var type: String? { self["type"] as? String }
    var seq: Int? { (self["seq"] as? NSNumber)?.intValue }
    var data: [String: Any]? { self["data"] as? [String: Any] }
}

/// POST /api/publish over a real socket.
func publish(_ port: Int, _ body: String, token: String? = nil, contentType: String = "application/json") throws -> HTTPResponse {
    let s = try TestSocket(port: port)
    var head = "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n"
    if let token { head += "Authorization: Bearer \(token)\r\n" }
    try s.send(head + "\r\n" + body)
    return try s.readHTTPResponse()
}

func getJSON(_ port: Int, _ path: String) throws -> [String: Any] {
    let s = try TestSocket(port: port)
    try s.send("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
    let r = try s.readHTTPResponse()
    guard let object = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] else {
        throw TestError("not JSON: \(r.text)")
    }
    return object
}

/// The `seqs` of a 202 answer.
func acceptedSeqs(_ r: HTTPResponse) throws -> [Int] {
    guard r.status == 202, let o = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any],
          let seqs = o["seqs"] as? [NSNumber] else { throw TestError("publish failed: \(r.status) \(r.text)") }
    return seqs.map(\.intValue)
}

func marketData(_ symbol: String, _ price: Double, counter: Int = 0) -> String {
    #"{"type":"MarketData","data":{"symbol":"\#(symbol)","price":\#(price),"price_change_24h":1.5,"price_change_percent_24h":0.1,"volume_24h":100.0,"timestamp":1609459200000,"n":\#(counter)}}"#
}

func trade(_ symbol: String, _ n: Int, pad: Int = 0) -> String {
    let padding = String(repeating: "x", count: pad)
    return #"{"type":"TradeExecuted","data":{"symbol":"\#(symbol)","side":"BUY","quantity":0.5,"price":50000.0,"timestamp":1609459200000,"pnl":250.5,"n":\#(n),"pad":"\#(padding)"}}"#
}
