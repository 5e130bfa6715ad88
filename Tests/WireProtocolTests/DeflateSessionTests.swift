import Testing
@testable import WireProtocol

/// Runs bytes through a deflate-mode session in chunks, as a reactor does between reads, joins
/// each message's pieces and inflates the compressed ones with one shared inflater. Returns the
/// transcript: "text Hello" / "binary 3 bytes (compressed)" / "ping x" / "fail 1002".
func deflateTranscript(
    _ stream: [UInt8], chunks: [Int] = [Int.max], maxMessageSize: UInt64 = 1 << 20,
    permessageDeflate: Bool = true, inflater: MessageInflater = MessageInflater()
) -> [String] {
    var session = WebSocketSession(role: .server, maxMessageSize: maxMessageSize, permessageDeflate: permessageDeflate)
    var out: [String] = []
    var pending: [UInt8] = []
    var message: [UInt8] = []
    var offset = 0
    var chunk = 0
    while offset < stream.count {
        let n = min(chunks[chunk % chunks.count], stream.count - offset)
        chunk += 1
        pending += stream[offset..<(offset + n)]
        offset += n
        var consumed = 0
        pending.withUnsafeMutableBytes { raw in
            var p = 0
            loop: while true {
                switch session.next(raw, &p) {
                case .needMore:
                    break loop
                case let .message(opcode, start, count, first, last):
                    if first { message = [] }
                    message += raw[start..<(start + count)]
                    guard last else { continue }
                    if session.messageIsCompressed {
                        let result = message.withUnsafeBytes { session.inflate($0, opcode: opcode, with: inflater) }
                        switch result {
                        case .message(let bytes):
                            out.append(describe(opcode, Array(bytes)) + " (compressed)")
                        case .fail(let error):
                            out.append("fail \(error.closeCode.rawValue)")
                            break loop
                        }
                    } else {
                        out.append(describe(opcode, message))
                    }
                case let .sendPong(s, c): out.append("ping \(String(decoding: raw[s..<(s + c)], as: UTF8.self))")
                case .fail(let error): out.append("fail \(error.closeCode.rawValue)")
                default: out.append("other")
                }
            }
            consumed = p
        }
        pending.removeFirst(consumed)
    }
    return out
}

private func describe(_ opcode: Opcode, _ payload: [UInt8]) -> String {
    opcode == .text ? "text \(String(decoding: payload, as: UTF8.self))" : "binary \(payload.count) bytes"
}

/// Tests run in parallel, so each compression uses its own deflater.
private func compressed(_ s: String) -> [UInt8] { MessageDeflater().compress(bytes(s)) }
private func compressed(_ b: [UInt8]) -> [UInt8] { MessageDeflater().compress(b) }
/// RSV bits as `clientFrame` takes them: 4 = RSV1, 2 = RSV2, 1 = RSV3.
private let rsv1: UInt8 = 4

@Suite struct DeflateSessionTests {
    @Test(arguments: chunkings)
    func compressedAndPlainMessagesInterleave(chunks: [Int]) {
        let stream = clientFrame(0x1, compressed("Hello, compressed ✓"), rsv: rsv1)
            + clientFrame(0x1, bytes("plain"))
            + clientFrame(0x2, compressed([1, 2, 3]), rsv: rsv1)
            + clientFrame(0x1, [0x00], rsv: rsv1)              // an empty compressed message
        #expect(deflateTranscript(stream, chunks: chunks) ==
            ["text Hello, compressed ✓ (compressed)", "text plain", "binary 3 bytes (compressed)", "text  (compressed)"])
    }

    @Test(arguments: chunkings)
    func fragmentedCompressedMessage(chunks: [Int]) {
        // RSV1 on the first frame only (§6.1); continuations and a ping in between carry none.
        let text = String(repeating: "tick 43250.5 BTCUSDT; ", count: 50)
        let c = compressed(text)
        let a = c.count / 3, b = 2 * c.count / 3
        let stream = clientFrame(0x1, Array(c[..<a]), fin: false, rsv: rsv1)
            + clientFrame(0x9, bytes("hb"))
            + clientFrame(0x0, Array(c[a..<b]), fin: false)
            + clientFrame(0x0, Array(c[b...]))
        #expect(deflateTranscript(stream, chunks: chunks) == ["ping hb", "text \(text) (compressed)"])
    }

    @Test func rsv1WithoutTheExtensionIsAProtocolError() {
        let stream = clientFrame(0x1, compressed("x"), rsv: rsv1)
        #expect(deflateTranscript(stream, permessageDeflate: false) == ["fail 1002"])
        #expect(decode(stream).failure == .reservedBitsSet)
    }

    @Test func rsv1OnContinuationOrControlFrameIsAProtocolError() {
        let c = compressed("fragmented")
        let onContinuation = clientFrame(0x1, Array(c.prefix(3)), fin: false, rsv: rsv1) + clientFrame(0x0, Array(c.dropFirst(3)), rsv: rsv1)
        #expect(deflateTranscript(onContinuation) == ["fail 1002"])
        #expect(deflateTranscript(clientFrame(0x9, [], rsv: rsv1)) == ["fail 1002"])
        #expect(deflateTranscript(clientFrame(0x8, [0x03, 0xE8], rsv: rsv1)) == ["fail 1002"])
        // On a continuation of an uncompressed message too.
        #expect(deflateTranscript(clientFrame(0x1, bytes("a"), fin: false) + clientFrame(0x0, bytes("b"), rsv: rsv1)) == ["fail 1002"])
    }

    @Test(arguments: [UInt8(2), 1, 6, 5, 7])
    func rsv2AndRsv3AreAlwaysProtocolErrors(rsv: UInt8) {
        #expect(deflateTranscript(clientFrame(0x1, compressed("x"), rsv: rsv)) == ["fail 1002"])
    }

    @Test func inflatedSizeIsLimited() {
        // 1 MiB of zeros in about 1 KiB on the wire: the limit is on the inflated size (1009).
        let bomb = compressed([UInt8](repeating: 0, count: 1 << 20))
        let inflater = MessageInflater()
        #expect(deflateTranscript(clientFrame(0x2, bomb, rsv: rsv1), maxMessageSize: 64 << 10, inflater: inflater) == ["fail 1009"])
        #expect(inflater.bytesInflated <= (64 << 10) + 1)
        #expect(deflateTranscript(clientFrame(0x2, bomb, rsv: rsv1), maxMessageSize: 1 << 20) == ["binary 1048576 bytes (compressed)"])
        // On the wire a compressed message may exceed the limit only by deflate's growth.
        var session = WebSocketSession(maxMessageSize: 1000, permessageDeflate: true)
        #expect(session.decoder.compressedSizeLimit == 1000 + 64)
        #expect(deflateTranscript(clientFrame(0x2, [UInt8](repeating: 0, count: 1065), rsv: rsv1), maxMessageSize: 1000) == ["fail 1009"])
        // A plain message keeps the plain limit.
        #expect(deflateTranscript(clientFrame(0x2, [UInt8](repeating: 0, count: 1001)), maxMessageSize: 1000) == ["fail 1009"])
        session.abandon()
    }

    @Test func corruptDataAndBadTextAreInvalidPayload() {
        #expect(deflateTranscript(clientFrame(0x2, [0xFF, 0xFF, 0xFF], rsv: rsv1)) == ["fail 1007"])
        // Text is checked once inflated: compressed bytes are never UTF-8 but pass the decoder...
        #expect(deflateTranscript(clientFrame(0x1, compressed("ok"), rsv: rsv1)) == ["text ok (compressed)"])
        // ... and bad UTF-8 inside is caught after inflating, as is bad plain text still.
        #expect(deflateTranscript(clientFrame(0x1, compressed([0x61, 0xFF]), rsv: rsv1)) == ["fail 1007"])
        #expect(deflateTranscript(clientFrame(0x1, [0xFF])) == ["fail 1007"])
        // Binary needs no UTF-8.
        #expect(deflateTranscript(clientFrame(0x2, compressed([0xFF]), rsv: rsv1)) == ["binary 1 bytes (compressed)"])
    }

    @Test func failedInflateClosesTheSession() {
        var session = WebSocketSession(maxMessageSize: 1 << 20, permessageDeflate: true)
        let inflater = MessageInflater()
        let result = [UInt8]([0xFF, 0xFF]).withUnsafeBytes { session.inflate($0, opcode: .binary, with: inflater) }
        guard case .fail(.invalidCompressedData) = result else {
            Issue.record("expected invalidCompressedData, got \(result)")
            return
        }
        #expect(session.state == .closed)
        #expect(actions(&session, clientFrame(0x1, bytes("after"))) == [])
    }

    @Test func encoderWritesCompressedFramesTheDecoderReads() {
        // Server to client: one compressed frame, RSV1 set, unmasked (shared by every subscriber).
        let deflater = MessageDeflater()
        let frame = marketData.withUnsafeBytes { deflater.compressedFrame(opcode: .text, message: $0) }
        #expect(frame[0] == 0xC1)
        var decoder = FrameDecoder(role: .client, maxMessageSize: 1 << 20, permessageDeflate: true)
        var copy = frame
        let payload: [UInt8]? = copy.withUnsafeMutableBytes { raw in
            var p = 0
            guard case let .data(.text, s, c, true, true) = decoder.next(raw, &p), decoder.messageIsCompressed else { return nil }
            return Array(raw[s..<(s + c)])
        }
        #expect(payload.flatMap { inflated($0) } == marketData)
        // A big one takes a 2-byte or 8-byte length; the frame is moved down to its header.
        let big = sampleBytes(100_000, noise: true)
        let bigFrame = big.withUnsafeBytes { deflater.compressedFrame(opcode: .binary, message: $0) }
        #expect(bigFrame[0] == 0xC2 && bigFrame[1] == 127)
        #expect(inflated(Array(bigFrame[10...])) == big)
        #expect(FrameEncoder.frame(opcode: .binary, payload: [1], compressed: true)[0] == 0xC2)
    }
}
