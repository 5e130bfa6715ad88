import CZlib
import Testing
@testable import WireProtocol

/// Inflates with a fresh or shared inflater; nil for `.tooLarge`/`.invalid` (see `inflateOutcome`).
func inflated(_ compressed: [UInt8], limit: Int = 1 << 24, with inflater: MessageInflater = MessageInflater()) -> [UInt8]? {
    compressed.withUnsafeBytes { raw in
        if case .message(let bytes) = inflater.inflate(raw, limit: limit) { return Array(bytes) }
        return nil
    }
}

func inflateOutcome(_ compressed: [UInt8], limit: Int, with inflater: MessageInflater) -> String {
    compressed.withUnsafeBytes { raw in
        switch inflater.inflate(raw, limit: limit) {
        case .message(let bytes): return "message \(bytes.count)"
        case .tooLarge: return "tooLarge"
        case .invalid: return "invalid"
        }
    }
}

/// Deterministic test data: text-like (compressible) or noise (not).
func sampleBytes(_ count: Int, noise: Bool) -> [UInt8] {
    var state: UInt64 = 0x1234_5678
    func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state >> 33
    }
    if noise { return (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
    let words = ["price", "bid", "ask", "symbol", "BTCUSDT", "ETHUSDT", "volume", "43250.5", "\"type\":", "{", "}"].map { Array($0.utf8) + [0x20] }
    var out: [UInt8] = []
    out.reserveCapacity(count + 16)
    while out.count < count { out += words[Int(next() % UInt64(words.count))] }
    return Array(out.prefix(count))
}

let marketData = Array(#"{"type":"MarketData","seq":1,"data":{"symbol":"BTCUSDT","price":43250.5,"volume":1523.75,"bid":43250.0,"ask":43251.0,"high_24h":44100.0,"low_24h":42800.0,"change_24h":1.25,"timestamp":"2024-01-15T10:30:00.123Z"}}"#.utf8)

@Suite struct DeflateCodecTests {
    @Test func rfcExamplesInflate() {
        // RFC 7692 §7.2.3.1 (one compressed block), §7.2.3.2 (a stored block), §7.2.3.4 (BFINAL set).
        #expect(inflated([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]) == bytes("Hello"))
        #expect(inflated([0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00]) == bytes("Hello"))
        #expect(inflated([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]) == bytes("Hello"))
    }

    @Test func deflateMatchesTheRFC() {
        // §7.2.3.1: "Hello" compressed, the tail 00 00 FF FF removed.
        #expect(MessageDeflater().compress(bytes("Hello")) == [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    }

    @Test func emptyMessage() {
        // §7.2.3.6: an empty message compresses to a single 0x00; an empty payload inflates too.
        let d = MessageDeflater()
        #expect(d.compress([]) == [0x00])
        #expect(inflated([0x00]) == [])
        #expect(inflated([]) == [])
    }

    @Test(arguments: [9, 12, 15])
    func roundTrips(windowBits: Int) {
        let deflater = MessageDeflater(windowBits: windowBits)
        let inflater = MessageInflater(initialCapacity: 64)
        for count in [1, 2, 100, 1000, 16384, 70000, 200_000] {
            for noise in [false, true] {
                let message = sampleBytes(count, noise: noise)
                let c = deflater.compress(message)
                #expect(c.count <= deflater.maxCompressedSize(count))
                #expect(Array(c.suffix(4)) != [0, 0, 0xFF, 0xFF])
                if !noise && count >= 1000 { #expect(c.count < count / 3) }
                #expect(inflated(c, with: inflater) == message, "\(count) noise=\(noise)")
            }
        }
    }

    @Test func runLengthOnlyStaysInsideAnEightBitWindow() {
        // zlib has no raw 8-bit deflater; run-length matches (distance 1) fit any window.
        let deflater = MessageDeflater(DeflateParameters(serverMaxWindowBits: 8))
        let message = sampleBytes(5000, noise: false) + [UInt8](repeating: 7, count: 3000)
        let c = deflater.compress(message)
        #expect(c.count < message.count)
        #expect(inflated(c) == message)
        // Read back with a true 8-bit inflater (zlib accepts 8 for inflate): no distance too far.
        #expect(inflateWithEightBitWindow(c) == message)
    }

    @Test func compressOnceIntoACallerBuffer() {
        let deflater = MessageDeflater()
        let room = deflater.maxCompressedSize(marketData.count)
        var out = [UInt8](repeating: 0, count: room)
        let n = marketData.withUnsafeBytes { m in out.withUnsafeMutableBytes { deflater.compress(m, into: $0.baseAddress!, capacity: room) } }
        #expect(n != nil && n! < marketData.count)
        #expect(inflated(Array(out[..<n!])) == marketData)
        // Too small a buffer says so, and the deflater is reset for the next message.
        let tiny = marketData.withUnsafeBytes { m in out.withUnsafeMutableBytes { deflater.compress(m, into: $0.baseAddress!, capacity: 8) } }
        #expect(tiny == nil)
        #expect(inflated(deflater.compress(marketData)) == marketData)
    }

    @Test func sameBytesEveryTimeNoContextTakeover() {
        // Each message is its own stream: compressing the same message twice gives the same bytes.
        let deflater = MessageDeflater()
        let a = deflater.compress(marketData)
        let b = deflater.compress(marketData)
        #expect(a == b)
    }

    @Test func decompressionBombStopsAtTheLimit() {
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        let bomb = MessageDeflater().compress(zeros)
        #expect(bomb.count < 2048)
        let inflater = MessageInflater()
        #expect(inflateOutcome(bomb, limit: 64 << 10, with: inflater) == "tooLarge")
        // It produced the limit and the one byte that proves there is more, no more.
        #expect(inflater.bytesInflated == (64 << 10) + 1)
        #expect(inflater.storageSize <= 64 << 10)
        // The same inflater goes on: exactly at the limit is fine.
        #expect(inflateOutcome(bomb, limit: 1 << 20, with: inflater) == "message \(1 << 20)")
        #expect(inflateOutcome(bomb, limit: (1 << 20) - 1, with: inflater) == "tooLarge")
        #expect(inflateOutcome(MessageDeflater().compress([1, 2, 3]), limit: 0, with: inflater) == "tooLarge")
        #expect(inflateOutcome([0x00], limit: 0, with: inflater) == "message 0")
    }

    @Test func largeBufferIsGivenBack() {
        let inflater = MessageInflater(initialCapacity: 1024, retainedCapacity: 4096)
        let big = MessageDeflater().compress(sampleBytes(100_000, noise: false))
        #expect(inflateOutcome(big, limit: 1 << 20, with: inflater) == "message 100000")
        #expect(inflateOutcome([0x00], limit: 1 << 20, with: inflater) == "message 0")
        #expect(inflater.storageSize == 1024)
    }

    @Test func corruptAndTruncatedDataIsInvalid() {
        let inflater = MessageInflater()
        #expect(inflateOutcome([0xFF, 0xFF, 0xFF, 0xFF, 0xFF], limit: 1000, with: inflater) == "invalid")
        // Reserved block type 3.
        #expect(inflateOutcome([0x07], limit: 1000, with: inflater) == "invalid")
        // Cut in the middle of a block: the restored tail does not end it cleanly.
        let whole = MessageDeflater().compress(sampleBytes(5000, noise: false))
        #expect(inflateOutcome(Array(whole.prefix(whole.count / 2)), limit: 1 << 20, with: inflater) == "invalid")
        // Data after a final block.
        #expect(inflateOutcome([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00], limit: 1000, with: inflater) == "invalid")
        // And the inflater is clean for the next message.
        #expect(inflated(whole, with: inflater) == sampleBytes(5000, noise: false))
    }
}

/// A raw inflate with an 8-bit window, independent of `MessageInflater`.
func inflateWithEightBitWindow(_ compressed: [UInt8]) -> [UInt8]? {
    var stream = z_stream()
    guard tw_inflate_init2(&stream, -8) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var input = compressed + [0, 0, 0xFF, 0xFF]
    var output = [UInt8](repeating: 0, count: 1 << 20)
    let status: Int32 = input.withUnsafeMutableBufferPointer { i in
        output.withUnsafeMutableBufferPointer { o in
            stream.next_in = i.baseAddress
            stream.avail_in = uInt(i.count)
            stream.next_out = o.baseAddress
            stream.avail_out = uInt(o.count)
            return inflate(&stream, Z_SYNC_FLUSH)
        }
    }
    guard status == Z_OK || status == Z_STREAM_END else { return nil }
    return Array(output[..<Int(stream.total_out)])
}
