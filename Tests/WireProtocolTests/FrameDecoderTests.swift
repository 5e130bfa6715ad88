import Testing
@testable import WireProtocol

/// Chunkings every frame test runs under: whole, byte by byte, odd sizes.
let chunkings: [[Int]] = [[Int.max], [1], [2], [3, 7], [5, 1, 13], [127]]

@Suite struct FrameDecoderTests {
    @Test(arguments: chunkings)
    func textMessageAnySplit(chunks: [Int]) {
        let frame = clientFrame(0x1, bytes("Hello, Tickwire ✓"))
        let r = decode(frame, chunks: chunks)
        #expect(r.failure == nil)
        #expect(r.messages.count == 1)
        #expect(r.messages.first?.0 == .text)
        #expect(r.messages.first?.1 == bytes("Hello, Tickwire ✓"))
    }

    @Test(arguments: chunkings)
    func manyFramesInOneRead(chunks: [Int]) {
        var stream: [UInt8] = []
        for i in 0..<50 { stream += clientFrame(i % 2 == 0 ? 0x1 : 0x2, bytes("message \(i)")) }
        stream += clientFrame(0x9, bytes("ping"))
        let r = decode(stream, chunks: chunks)
        #expect(r.failure == nil)
        #expect(r.messages.count == 50)
        #expect(r.messages[49].1 == bytes("message 49"))
        #expect(r.messages[1].0 == .binary)
        #expect(r.controls.count == 1 && r.controls[0].0 == .ping && r.controls[0].1 == bytes("ping"))
    }

    @Test(arguments: [0, 1, 125, 126, 127, 65535, 65536, 100_000])
    func payloadLengthEncodings(length: Int) {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let r = decode(clientFrame(0x2, payload), chunks: [4093])
        #expect(r.failure == nil)
        #expect(r.messages.count == 1)
        #expect(r.messages.first?.1 == payload)
    }

    @Test(arguments: chunkings)
    func fragmentedWithInterleavedControl(chunks: [Int]) {
        let stream = clientFrame(0x1, bytes("frag"), fin: false)
            + clientFrame(0x9, bytes("p1"))
            + clientFrame(0x0, bytes("men"), fin: false)
            + clientFrame(0xA, [])
            + clientFrame(0x0, bytes("ted"), fin: true)
        let r = decode(stream, chunks: chunks)
        #expect(r.failure == nil)
        #expect(r.messages.count == 1)
        #expect(r.messages[0].1 == bytes("fragmented"))
        #expect(r.controls.map { $0.0 } == [.ping, .pong])
    }

    @Test func dataIsStreamedNotBuffered() {
        // A 64 KiB frame fed in 1000-byte reads arrives as many pieces.
        let payload = [UInt8](repeating: 0x61, count: 65536)
        let r = decode(clientFrame(0x1, payload), chunks: [1000])
        #expect(r.messages.count == 1)
        #expect(r.pieces > 60)
    }

    @Test func emptyMessagesAndEmptyFragments() {
        let r = decode(clientFrame(0x1, []) + clientFrame(0x2, [], fin: false) + clientFrame(0x0, []) )
        #expect(r.failure == nil)
        #expect(r.messages.count == 2)
        #expect(r.messages.allSatisfy { $0.1.isEmpty })
    }

    // MARK: Every error path, with its close code.

    @Test(arguments: [1, 2, 4, 7] as [UInt8])
    func reservedBits(rsv: UInt8) {
        let r = decode(clientFrame(0x1, bytes("x"), rsv: rsv))
        #expect(r.failure == .reservedBitsSet)
        #expect(r.failure?.closeCode == .protocolError)
    }

    @Test(arguments: [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] as [UInt8])
    func reservedOpcodes(opcode: UInt8) {
        let r = decode(clientFrame(opcode, []))
        #expect(r.failure == .reservedOpcode(opcode))
        #expect(r.failure?.closeCode == .protocolError)
    }

    @Test func unmaskedClientFrameFails() {
        let r = decode(clientFrame(0x1, bytes("x"), masked: false))
        #expect(r.failure == .unmaskedClientFrame)
        #expect(r.failure?.closeCode == .protocolError)
    }

    @Test func maskedServerFrameFailsOnClient() {
        let r = decode(clientFrame(0x1, bytes("x")), role: .client)
        #expect(r.failure == .maskedServerFrame)
    }

    @Test func controlFrameTooLong() {
        let r = decode(clientFrame(0x9, [UInt8](repeating: 1, count: 126)))
        #expect(r.failure == .controlFrameTooLong)
        #expect(r.failure?.closeCode == .protocolError)
    }

    @Test func fragmentedControlFrame() {
        let r = decode(clientFrame(0x9, bytes("x"), fin: false))
        #expect(r.failure == .fragmentedControlFrame)
    }

    @Test func continuationWithoutStart() {
        let r = decode(clientFrame(0x0, bytes("x")))
        #expect(r.failure == .unexpectedContinuation)
        #expect(r.failure?.closeCode == .protocolError)
    }

    @Test func newMessageInsideFragmentedOne() {
        let r = decode(clientFrame(0x1, bytes("a"), fin: false) + clientFrame(0x1, bytes("b")))
        #expect(r.failure == .expectedContinuation)
    }

    @Test func lengthWithTopBitSet() {
        var frame: [UInt8] = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1]
        frame += [1, 2, 3, 4]
        let r = decode(frame)
        #expect(r.failure == .payloadLengthTooLarge)
    }

    @Test(arguments: chunkings)
    func messageTooBigAcrossFragments(chunks: [Int]) {
        let stream = clientFrame(0x2, [UInt8](repeating: 0, count: 600), fin: false)
            + clientFrame(0x0, [UInt8](repeating: 0, count: 600))
        let r = decode(stream, chunks: chunks, maxMessageSize: 1000)
        #expect(r.failure == .messageTooBig(limit: 1000))
        #expect(r.failure?.closeCode == .messageTooBig)
    }

    @Test func messageTooBigIsDetectedAtTheHeader() {
        // Only the header arrives: the decoder must not wait for a huge payload.
        let header: [UInt8] = [0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]
        let r = decode(header, maxMessageSize: 1 << 20)
        #expect(r.failure == .messageTooBig(limit: 1 << 20))
    }

    @Test(arguments: chunkings)
    func invalidUTF8FailsFast(chunks: [Int]) {
        // The invalid byte is in the first fragment; the message never finishes.
        let stream = clientFrame(0x1, bytes("κόσμε") + [0xF4, 0x90, 0x80, 0x80], fin: false)
        let r = decode(stream, chunks: chunks)
        #expect(r.failure == .invalidUTF8)
        #expect(r.failure?.closeCode == .invalidPayload)
    }

    @Test func invalidUTF8FailsWithinAnUnfinishedFrame() {
        // Header says 100 bytes; only 8 arrive, the 6th invalid: fail now, not at byte 100.
        let full = clientFrame(0x1, bytes("hello") + [0xC0] + [UInt8](repeating: 0x61, count: 94))
        let r = decode(Array(full[0..<(6 + 8)]))
        #expect(r.failure == .invalidUTF8)
    }

    @Test func utf8SplitAcrossFragmentsIsValid() {
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        let stream = clientFrame(0x1, [euro[0]], fin: false) + clientFrame(0x0, [euro[1]], fin: false) + clientFrame(0x0, [euro[2]])
        let r = decode(stream, chunks: [1])
        #expect(r.failure == nil)
        #expect(r.messages.first?.1 == euro)
    }

    @Test func truncatedCodePointAtMessageEnd() {
        let r = decode(clientFrame(0x1, [0xE2, 0x82]))
        #expect(r.failure == .invalidUTF8)
    }

    @Test func binaryIsNotValidated() {
        let r = decode(clientFrame(0x2, [0xFF, 0xFE, 0xC0]))
        #expect(r.failure == nil)
        #expect(r.messages.count == 1)
    }

    // MARK: Close frames

    @Test func closePayloads() {
        #expect(decode(clientFrame(0x8, [])).controls.count == 1)
        #expect(decode(clientFrame(0x8, [0x03, 0xE8])).controls.first?.1 == [0x03, 0xE8])
        #expect(decode(clientFrame(0x8, [0x03])).failure == .closePayloadTooShort)
        #expect(decode(clientFrame(0x8, [0x03, 0xED])).failure == .invalidCloseCode(1005))
        #expect(decode(clientFrame(0x8, [0x03, 0xE8, 0xC0])).failure == .invalidCloseReason)
        #expect(decode(clientFrame(0x8, [0x03, 0xE8, 0xC0])).failure?.closeCode == .invalidPayload)
        #expect(decode(clientFrame(0x8, [0x03, 0xE8] + bytes("bye"))).failure == nil)
    }

    @Test(arguments: [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] as [UInt16])
    func validCloseCodes(code: UInt16) {
        #expect(CloseCode(rawValue: code).isValidOnWire)
        #expect(decode(clientFrame(0x8, [UInt8(code >> 8), UInt8(code & 0xFF)])).failure == nil)
    }

    @Test(arguments: [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] as [UInt16])
    func invalidCloseCodes(code: UInt16) {
        #expect(!CloseCode(rawValue: code).isValidOnWire)
        #expect(decode(clientFrame(0x8, [UInt8(code >> 8), UInt8(code & 0xFF)])).failure == .invalidCloseCode(code))
    }

    @Test func decoderStaysFailed() {
        var decoder = FrameDecoder(role: .server, maxMessageSize: 100)
        var bad = clientFrame(0x3, [])
        var good = clientFrame(0x1, bytes("ok"))
        var p = 0
        bad.withUnsafeMutableBytes { buf in
            if case .failure = decoder.next(buf, &p) {} else { Issue.record("expected failure") }
        }
        p = 0
        good.withUnsafeMutableBytes { buf in
            #expect(decoder.next(buf, &p) == .needMore)
        }
    }
}
