import WireProtocol

/// The client side of the RFC 6455 opening handshake (§4.1): the request, and the checks
/// on the server's answer. Pure: bytes in, bytes or a verdict out.
struct ClientHandshake {
    /// The `Sec-WebSocket-Key`: 16 random bytes, base64 (§4.1, client requirement 7).
    let key: String
    /// `Sec-WebSocket-Protocol` entries offered, in order (`tickwire`, `bearer.<token>`).
    let protocols: [String]
    /// Whether permessage-deflate (RFC 7692) is offered.
    let offersDeflate: Bool

    init(key: String, protocols: [String] = [], offersDeflate: Bool = false) {
        self.key = key
        self.protocols = protocols
        self.offersDeflate = offersDeflate
    }

    init<R: RandomNumberGenerator>(using rng: inout R, protocols: [String] = [], offersDeflate: Bool = false) {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in bytes.indices { bytes[i] = UInt8.random(in: .min ... .max, using: &rng) }
        self.init(key: Base64.encode(bytes), protocols: protocols, offersDeflate: offersDeflate)
    }

    /// The offer: no context takeover either way, so every message is a deflate stream of
    /// its own and the client holds no window between messages (the server answers with
    /// both anyway, PROTOCOL.md "Compression"). `client_max_window_bits` without a value
    /// lets the server pick a smaller window for what we send (§7.1.2.2).
    static let deflateOffer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"

    /// The upgrade request for `target` (path and query) on `hostHeader`.
    func request(hostHeader: String, target: String) -> [UInt8] {
        var lines = [
            "GET \(target) HTTP/1.1",
            "Host: \(hostHeader)",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: \(key)",
            "Sec-WebSocket-Version: 13",
        ]
        if !protocols.isEmpty { lines.append("Sec-WebSocket-Protocol: " + protocols.joined(separator: ", ")) }
        if offersDeflate { lines.append("Sec-WebSocket-Extensions: " + Self.deflateOffer) }
        lines.append("User-Agent: tickwire-swift-client")
        return Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
    }

    /// What the server agreed to.
    struct Agreement: Equatable {
        /// The subprotocol the server chose among those offered.
        var subprotocol: String?
        /// permessage-deflate's terms, when the server accepted the offer.
        var deflate: ClientDeflateTerms?
    }

    /// Checks the server's response head (§4.1, "the client MUST validate the server's
    /// response"); `body` is whatever followed a refusal's head (its JSON says why).
    func accept(_ head: HTTPResponseHead, body: ArraySlice<UInt8> = []) -> Result<Agreement, HandshakeRefusal> {
        guard head.status == 101 else {
            var why = "the server answered \(head.status) \(head.reason) instead of 101 Switching Protocols"
            let text = String(decoding: body.prefix(300), as: UTF8.self).trimmingWhitespace()
            if !text.isEmpty { why += ": " + text.filter { $0 != "\r" && $0 != "\n" } }
            return .failure(HandshakeRefusal(why, status: head.status))
        }
        guard head.tokens("upgrade").contains("websocket") else { return .failure("no 'Upgrade: websocket' in the response") }
        guard head.tokens("connection").contains("upgrade") else { return .failure("no 'Connection: Upgrade' in the response") }
        let expected = Handshake.acceptValue(forKey: key)
        guard let accept = head.value("sec-websocket-accept") else { return .failure("no Sec-WebSocket-Accept in the response") }
        guard accept == expected else { return .failure("Sec-WebSocket-Accept is \(accept), expected \(expected)") }
        var agreement = Agreement()
        // §4.1: a subprotocol or extension that was not offered fails the connection.
        if let chosen = head.value("sec-websocket-protocol"), !chosen.isEmpty {
            guard protocols.contains(chosen) else {
                return .failure("the server chose subprotocol '\(chosen.prefix(40))', which was not offered")
            }
            agreement.subprotocol = chosen
        }
        let extensions = head.headers.filter { $0.name == "sec-websocket-extensions" }.map(\.value).joined(separator: ",")
        if !extensions.trimmingWhitespace().isEmpty {
            guard offersDeflate else { return .failure("the server chose extension '\(extensions)', which was not offered") }
            switch ClientDeflateTerms.parse(extensions) {
            case .success(let terms): agreement.deflate = terms
            case .failure(let why): return .failure(why)
            }
        }
        return .success(agreement)
    }

    /// The old check, kept for callers that need only a verdict.
    func problem(with head: HTTPResponseHead) -> String? {
        if case .failure(let refusal) = accept(head) { return refusal.reason }
        return nil
    }
}

/// Why a handshake answer was refused; `status` when the server refused the upgrade itself
/// (401 for a token, 403, 429, 503 for limits).
struct HandshakeRefusal: Error, Equatable, ExpressibleByStringInterpolation {
    var reason: String
    var status: Int?

    init(_ reason: String, status: Int? = nil) {
        self.reason = reason
        self.status = status
    }

    init(stringLiteral value: String) { self.init(value) }
}

/// permessage-deflate as the server answered it (RFC 7692 §7.1), from the client's side.
struct ClientDeflateTerms: Equatable {
    /// The window our deflater may use (`client_max_window_bits`, 8...15; 15 when absent).
    var clientWindowBits = 15

    /// The deflater's zlib window: zlib refuses a raw 8-bit one, so 8 runs as 9 bits with
    /// run-length matches only, which reach back one byte: inside any window.
    var deflaterWindowBits: Int { max(clientWindowBits, 9) }
    var deflaterRunLengthOnly: Bool { clientWindowBits < 9 }

    /// Reads a `Sec-WebSocket-Extensions` response value. The answer must be exactly one
    /// permessage-deflate (§7: one accepted offer), with known parameters, each at most
    /// once, and it must carry `server_no_context_takeover`: our inflater starts every
    /// message afresh, so it could not read a server that keeps its window (§7.1.1.1).
    static func parse(_ value: String) -> Result<ClientDeflateTerms, HandshakeRefusal> {
        let elements = value.split(separator: ",").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        guard elements.count == 1, let element = elements.first else {
            return .failure("the server answered several extensions ('\(value.prefix(120))'); only permessage-deflate was offered")
        }
        let parts = element.split(separator: ";", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }
        guard parts[0].lowercased() == DeflateNegotiation.extensionName else {
            return .failure("the server chose extension '\(parts[0].prefix(40))', which was not offered")
        }
        var terms = ClientDeflateTerms()
        var seen: Set<String> = []
        for part in parts.dropFirst() {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingWhitespace() }
            let name = pair[0].lowercased()
            var value = pair.count > 1 ? pair[1] : nil
            if let v = value, v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") { value = String(v.dropFirst().dropLast()) }
            guard seen.insert(name).inserted else { return .failure("permessage-deflate answer repeats '\(name)'") }
            switch name {
            case "server_no_context_takeover", "client_no_context_takeover":
                guard value == nil else { return .failure("permessage-deflate answer gives '\(name)' a value") }
            case "server_max_window_bits":
                // Any window up to 15 is readable by our 15-bit inflater.
                guard let v = value, let bits = Int(v), (8...15).contains(bits) else {
                    return .failure("permessage-deflate answer has a bad server_max_window_bits")
                }
            case "client_max_window_bits":
                guard let v = value, let bits = Int(v), (8...15).contains(bits) else {
                    return .failure("permessage-deflate answer has a bad client_max_window_bits")
                }
                terms.clientWindowBits = bits
            default:
                return .failure("permessage-deflate answer has an unknown parameter '\(name.prefix(40))'")
            }
        }
        guard seen.contains("server_no_context_takeover") else {
            return .failure("permessage-deflate was accepted without server_no_context_takeover, which was offered and which this client needs")
        }
        return .success(terms)
    }
}
