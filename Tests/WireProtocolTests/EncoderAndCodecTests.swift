import Testing
@testable import WireProtocol

@Suite struct FrameEncoderTests {
    @Test(arguments: [0, 1, 125, 126, 65535, 65536, 70_000])
    func roundTripThroughDecoder(length: Int) {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        // Masked (client) frames decode on the server side...
        let masked = FrameEncoder.frame(opcode: .binary, payload: payload, mask: 0xA1B2_C3D4)
        let r = decode(masked, chunks: [3, 1000])
        #expect(r.failure == nil)
        #expect(r.messages.first?.1 == payload)
        // ...and unmasked (server) frames on the client side.
        let plain = FrameEncoder.frame(opcode: .binary, payload: payload)
        let rc = decode(plain, chunks: [999], role: .client)
        #expect(rc.messages.first?.1 == payload)
        #expect(plain.count == FrameEncoder.headerSize(payloadLength: length, masked: false) + length)
    }

    @Test func exactHeaderBytes() {
        #expect(FrameEncoder.frame(opcode: .text, payload: bytes("Hi")) == [0x81, 0x02, 0x48, 0x69])
        #expect(Array(FrameEncoder.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 126)).prefix(4)) == [0x82, 126, 0x00, 0x7E])
        #expect(Array(FrameEncoder.frame(opcode: .binary, payload: [UInt8](repeating: 0, count: 65536)).prefix(10)) == [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
        #expect(FrameEncoder.frame(opcode: .ping, fin: true, payload: []) == [0x89, 0x00])
        #expect(FrameEncoder.frame(opcode: .text, fin: false, payload: []) == [0x01, 0x00])
    }

    @Test func exactCloseFrameBytes() {
        let frame = FrameEncoder.frame(opcode: .close, payload: FrameEncoder.closePayload(code: .tryAgainLater, reason: "slow"))
        #expect(frame == [0x88, 0x06, 0x03, 0xF5, 0x73, 0x6C, 0x6F, 0x77])
        #expect(FrameEncoder.frame(opcode: .close, payload: FrameEncoder.closePayload(code: .normalClosure)) == [0x88, 0x02, 0x03, 0xE8])
    }

    @Test func closeReasonIsCutOnACharacterBoundary() {
        let reason = String(repeating: "é", count: 100)   // 200 bytes
        let payload = FrameEncoder.closePayload(code: .protocolError, reason: reason)
        #expect(payload.count <= 125)
        #expect(payload.count == 2 + 122)
        #expect(FrameDecoder.validateClosePayload(payload.withUnsafeBytes { $0 }) == nil)
    }

    @Test func rfcMaskingExample() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let frame = FrameEncoder.frame(opcode: .text, payload: bytes("Hello"), mask: UInt32(littleEndian: 0x3D21_FA37))
        #expect(frame == [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    }

    @Test(arguments: [0, 1, 2, 3])
    func maskingPhaseContinuesAcrossPieces(split: Int) {
        let key: UInt32 = 0x1122_3344
        var whole = (0..<37).map { UInt8($0) }
        var pieces = whole
        whole.withUnsafeMutableBytes { _ = applyMask($0.baseAddress!, count: 37, key: key, phase: 0) }
        pieces.withUnsafeMutableBytes { raw in
            let phase = applyMask(raw.baseAddress!, count: split, key: key, phase: 0)
            _ = applyMask(raw.baseAddress! + split, count: 37 - split, key: key, phase: phase)
        }
        #expect(whole == pieces)
    }
}

@Suite struct UTF8ValidatorTests {
    @Test func validSequences() {
        for s in ["", "ascii only, long enough to use the 8-byte path", "κόσμε", "€𝄞ü", "\u{10FFFF}", "\u{D7FF}\u{E000}"] {
            #expect(UTF8Validator.isValid(Array(s.utf8).withUnsafeBytes { $0 }), "\(s)")
        }
    }

    @Test(arguments: [
        [0x80], [0xBF], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80],
        [0xF0, 0x80, 0x80, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xFF],
        [0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0xFE],
    ] as [[UInt8]])
    func invalidSequences(bytes: [UInt8]) {
        var v = UTF8Validator()
        let accepted = v.feed(bytes)
        #expect(!accepted)
        #expect(v.hasFailed)
    }

    @Test func incompleteIsNotInvalid() {
        var v = UTF8Validator()
        let a = v.feed([0xF0, 0x9D])
        #expect(a && !v.isComplete)
        let b = v.feed([0x84, 0x9E])
        #expect(b && v.isComplete)
    }

    @Test func everySplitOfAMixedString() {
        let data = Array("a€𝄞ü-κόσμε-0123456789".utf8)
        for split in 0...data.count {
            var v = UTF8Validator()
            let a = v.feed(Array(data[..<split]))
            let b = v.feed(Array(data[split...]))
            #expect(a && b && v.isComplete)
        }
    }
}

@Suite struct HandshakeTests {
    @Test func rfcExampleAcceptKey() {
        #expect(Handshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    /// The handshake's verdict on `request` (nil: accepted). A request that does not even
    /// parse is a broken test case, not an accepted upgrade: it throws.
    func validate(_ request: String) throws -> Handshake.Failure? {
        let raw = Array(request.utf8)
        return try raw.withUnsafeBytes { buf in
            let parsed = HTTPHeadParser.parse(buf)
            guard case .complete(let head) = parsed else {
                throw HandshakeTestError(description: "not a complete request head (\(parsed)): \(request.debugDescription)")
            }
            return Handshake.validate(head, in: buf)
        }
    }

    struct HandshakeTestError: Error, CustomStringConvertible { let description: String }

    let good = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

    @Test func acceptsAValidUpgrade() throws {
        #expect(try validate(good) == nil)
        // Token lists and case-insensitivity (§4.2.1: "Connection: keep-alive, Upgrade", Firefox style).
        let firefox = good.replacingOccurrences("Connection: Upgrade", "Connection: keep-alive, UPGRADE")
            .replacingOccurrences("Upgrade: websocket", "upgrade: WebSocket")
        #expect(try validate(firefox) == nil)
    }

    @Test func rejections() throws {
        #expect(try validate(good.replacingOccurrences("GET /ws", "POST /ws")) == .notGet)
        #expect(try validate(good.replacingOccurrences("HTTP/1.1", "HTTP/1.0")) == .httpVersionTooOld)
        #expect(try validate(good.replacingOccurrences("Host: x\r\n", "")) == .missingHost)
        #expect(try validate(good.replacingOccurrences("Upgrade: websocket", "Upgrade: h2c")) == .missingUpgradeToken)
        #expect(try validate(good.replacingOccurrences("Connection: Upgrade", "Connection: keep-alive")) == .missingConnectionUpgrade)
        #expect(try validate(good.replacingOccurrences("Version: 13", "Version: 8")) == .unsupportedVersion)
        #expect(try validate(good.replacingOccurrences("Sec-WebSocket-Version: 13\r\n", "")) == .unsupportedVersion)
        #expect(try validate(good.replacingOccurrences("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")) == .missingKey)
        #expect(try validate(good.replacingOccurrences("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==")) == .invalidKey)
        #expect(try validate(good.replacingOccurrences("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ!!")) == .invalidKey)
        #expect(Handshake.Failure.unsupportedVersion.status == .upgradeRequired)
        #expect(Handshake.Failure.notGet.status == .methodNotAllowed)
        #expect(Handshake.Failure.invalidKey.status == .badRequest)
    }
}

@Suite struct Base64Tests {
    @Test func rfc4648Vectors() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            #expect(Base64.encode(Array(plain.utf8)) == encoded)
            #expect(Array(encoded.utf8).withUnsafeBytes { Base64.decodedLength($0) } == plain.utf8.count)
        }
    }

    @Test func rejectsNonCanonical() {
        for bad in ["Zg=", "Zh==", "Zm9=", "Z===", "Zm9v!", "====", "Zg==Zg=="] {
            #expect(Array(bad.utf8).withUnsafeBytes { Base64.decodedLength($0) } == nil, "\(bad)")
        }
    }
}

@Suite struct TimestampTests {
    @Test func knownInstants() {
        #expect(Timestamp.string(millisecondsSinceEpoch: 0) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.string(millisecondsSinceEpoch: 1_609_459_200_000) == "2021-01-01T00:00:00.000Z")
        #expect(Timestamp.string(millisecondsSinceEpoch: 951_782_400_123) == "2000-02-29T00:00:00.123Z")
        #expect(Timestamp.string(millisecondsSinceEpoch: 4_102_444_799_999) == "2099-12-31T23:59:59.999Z")
        #expect(Timestamp.httpDate(secondsSinceEpoch: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
    }
}

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func range(of needle: String) -> Range<Substring.Index>? {
        guard !needle.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
