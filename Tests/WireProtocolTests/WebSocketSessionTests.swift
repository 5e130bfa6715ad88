import Testing
@testable import WireProtocol

/// Runs bytes through a session and returns its actions (message payloads resolved).
func actions(_ session: inout WebSocketSession, _ bytes: [UInt8]) -> [String] {
    var buffer = bytes
    var out: [String] = []
    buffer.withUnsafeMutableBytes { raw in
        var p = 0
        while true {
            let a = session.next(raw, &p)
            switch a {
            case .needMore: return
            case let .message(op, s, c, _, last): out.append("message \(op) \(String(decoding: raw[s..<(s + c)], as: UTF8.self)) last=\(last)")
            case let .sendPong(s, c): out.append("pong \(String(decoding: raw[s..<(s + c)], as: UTF8.self))")
            case .pongReceived: out.append("pongReceived")
            case .replyCloseAndDisconnect(let code): out.append("replyClose \(code.rawValue)")
            case .disconnect: out.append("disconnect")
            case .fail(let e): out.append("fail \(e.closeCode.rawValue)")
            }
        }
    }
    return out
}

@Suite struct WebSocketSessionTests {
    @Test func pingGetsPongAndMessagesFlow() {
        var s = WebSocketSession(maxMessageSize: 1000)
        let out = actions(&s, clientFrame(0x9, bytes("hb")) + clientFrame(0x1, bytes("hi")) + clientFrame(0xA, []))
        #expect(out == ["pong hb", "message text hi last=true", "pongReceived"])
    }

    @Test func peerInitiatedCloseEchoesTheCode() {
        var s = WebSocketSession(maxMessageSize: 1000)
        #expect(actions(&s, clientFrame(0x8, [0x0F, 0xA0]) + clientFrame(0x9, [])) == ["replyClose 4000"])
        #expect(s.state == .closed)
        // Nothing is processed after the Close (§5.5.1).
        #expect(actions(&s, clientFrame(0x1, bytes("late"))) == [])
    }

    @Test func emptyCloseMeansNoStatus() {
        var s = WebSocketSession(maxMessageSize: 1000)
        #expect(actions(&s, clientFrame(0x8, [])) == ["replyClose 1000"])
    }

    @Test func ourCloseThenTheirs() {
        var s = WebSocketSession(maxMessageSize: 1000)
        let first = s.beginClose()
        let second = s.beginClose()
        #expect(first && !second)
        // Data and pings after our Close are dropped; their Close completes the handshake.
        #expect(actions(&s, clientFrame(0x1, bytes("x")) + clientFrame(0x9, []) + clientFrame(0x8, [0x03, 0xE8])) == ["disconnect"])
    }

    @Test func protocolErrorFailsOnce() {
        var s = WebSocketSession(maxMessageSize: 1000)
        #expect(actions(&s, clientFrame(0x1, bytes("ok")) + clientFrame(0x1, bytes("x"), rsv: 4) + clientFrame(0x1, bytes("never"))) ==
            ["message text ok last=true", "fail 1002"])
        #expect(s.state == .closed)
    }

    @Test func tooBigAndBadUTF8() {
        var big = WebSocketSession(maxMessageSize: 4)
        #expect(actions(&big, clientFrame(0x2, [1, 2, 3, 4, 5])) == ["fail 1009"])
        var utf = WebSocketSession(maxMessageSize: 100)
        #expect(actions(&utf, clientFrame(0x1, [0xFF])) == ["fail 1007"])
    }
}
