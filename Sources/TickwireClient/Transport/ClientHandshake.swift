import WireProtocol

/// The client side of the RFC 6455 opening handshake (§4.1): the request, and the checks
/// on the server's answer. Pure: bytes in, bytes or a verdict out.
struct ClientHandshake {
    /// The `Sec-WebSocket-Key`: 16 random bytes, base64 (§4.1, client requirement 7).
    let key: String

    init(key: String) {
        self.key = key
    }

    init<R: RandomNumberGenerator>(using rng: inout R) {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in bytes.indices { bytes[i] = UInt8.random(in: .min ... .max, using: &rng) }
        key = Base64.encode(bytes)
    }

    /// The upgrade request for `target` (path and query) on `hostHeader`.
    func request(hostHeader: String, target: String) -> [UInt8] {
        let lines = [
            "GET \(target) HTTP/1.1",
            "Host: \(hostHeader)",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: \(key)",
            "Sec-WebSocket-Version: 13",
            "User-Agent: tickwire-swift-client",
        ]
        return Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
    }

    /// Checks the server's response head (§4.1, "the client MUST validate the server's
    /// response"); nil when it accepts the upgrade, else why not.
    func problem(with head: HTTPResponseHead) -> String? {
        guard head.status == 101 else {
            return "the server answered \(head.status) \(head.reason) instead of 101 Switching Protocols"
        }
        guard head.tokens("upgrade").contains("websocket") else { return "no 'Upgrade: websocket' in the response" }
        guard head.tokens("connection").contains("upgrade") else { return "no 'Connection: Upgrade' in the response" }
        let expected = Handshake.acceptValue(forKey: key)
        guard let accept = head.value("sec-websocket-accept") else { return "no Sec-WebSocket-Accept in the response" }
        guard accept == expected else { return "Sec-WebSocket-Accept is \(accept), expected \(expected)" }
        // We offered no extension and no subprotocol, so the server must not pick one (§4.1).
        if let extensions = head.value("sec-websocket-extensions"), !extensions.isEmpty {
            return "the server chose extension '\(extensions)', which was not offered"
        }
        if let proto = head.value("sec-websocket-protocol"), !proto.isEmpty {
            return "the server chose subprotocol '\(proto)', which was not offered"
        }
        return nil
    }
}
