import Glibc
import Testing

/// A frame as read off the wire by the test client's own parser (deliberately not the
/// server's decoder, so a bug shared by both cannot hide).
struct WireFrame: Equatable {
    var fin: Bool
    var opcode: UInt8
    var payload: [UInt8]
    var text: String { String(decoding: payload, as: UTF8.self) }
    var closeCode: UInt16? { payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil }
    var closeReason: String { payload.count > 2 ? String(decoding: payload[2...], as: UTF8.self) : "" }
}

/// A WebSocket client over `TestSocket`.
final class TestWebSocket {
    let socket: TestSocket
    let upgradeResponse: HTTPResponse

    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    init(port: Int, path: String = "/echo", extraHeaders: String = "", receiveBuffer: Int? = nil) throws {
        socket = try TestSocket(port: port, receiveBuffer: receiveBuffer)
        try socket.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(Self.key)\r\nSec-WebSocket-Version: 13\r\n\(extraHeaders)\r\n")
        upgradeResponse = try socket.readHTTPResponse()
        guard upgradeResponse.status == 101 else {
            throw TestError("upgrade refused: \(upgradeResponse.status) \(upgradeResponse.text)")
        }
        guard upgradeResponse.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" else {
            throw TestError("wrong accept key: \(upgradeResponse.headers)")
        }
    }

    /// Sends one frame, masked unless told otherwise.
    func send(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true) throws {
        try socket.send(Self.frame(opcode: opcode, payload, fin: fin, rsv: rsv, masked: masked))
    }

    func sendText(_ text: String) throws { try send(opcode: 1, Array(text.utf8)) }

    static func frame(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let m: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            out.append(m | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            out += [m | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(m | 127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        let mask: [UInt8] = [UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255)]
        if masked {
            out += mask
            for (i, b) in payload.enumerated() { out.append(b ^ mask[i & 3]) }
        } else {
            out += payload
        }
        return out
    }

    /// Reads one frame; server frames must be unmasked and RSV-free.
    func readFrame() throws -> WireFrame {
        let h = try socket.read(2)
        #expect(h[0] & 0x70 == 0, "server frame with RSV bits")
        #expect(h[1] & 0x80 == 0, "server frame is masked")
        var length = Int(h[1] & 0x7F)
        if length == 126 {
            let e = try socket.read(2)
            length = Int(e[0]) << 8 | Int(e[1])
        } else if length == 127 {
            let e = try socket.read(8)
            length = e.reduce(0) { $0 << 8 | Int($1) }
        }
        return WireFrame(fin: h[0] & 0x80 != 0, opcode: h[0] & 0x0F, payload: try socket.read(length))
    }

    /// Reads frames until a data frame (skipping server pings), returns it.
    func readMessage() throws -> WireFrame {
        while true {
            let f = try readFrame()
            if f.opcode == 9 || f.opcode == 10 { continue }
            return f
        }
    }

    /// Reads until the server's Close; returns it.
    func readClose() throws -> WireFrame {
        while true {
            let f = try readFrame()
            if f.opcode == 8 { return f }
        }
    }

    func close(code: UInt16 = 1000) throws {
        try send(opcode: 8, [UInt8(code >> 8), UInt8(code & 0xFF)])
    }
}
