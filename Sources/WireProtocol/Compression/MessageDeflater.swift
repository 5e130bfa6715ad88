import CZlib

/// Compresses whole WebSocket messages for permessage-deflate (RFC 7692 §7.2.1) with no context
/// takeover: each message is its own raw deflate stream, so one instance serves every connection
/// of a reactor thread, and a broadcast is compressed once and its bytes shared by all
/// subscribers. Not thread-safe: one per thread.
public final class MessageDeflater {
    @usableFromInline let stream: UnsafeMutablePointer<z_stream>
    /// The zlib window (9...15; see `DeflateParameters.deflaterWindowBits`).
    public let windowBits: Int

    /// The empty stored block that ends a Z_SYNC_FLUSH, which §7.2.1 has the sender remove.
    @usableFromInline static let syncTail: (UInt8, UInt8, UInt8, UInt8) = (0x00, 0x00, 0xFF, 0xFF)

    /// - Parameters:
    ///   - windowBits: 9...15. A peer that limited the server to 8 bits needs `runLengthOnly`
    ///     (zlib refuses a raw 8-bit window; run-length matches fit in any window).
    ///   - level: zlib's 0...9, or -1 for its default (6).
    ///   - memoryLevel: zlib's 1...9. The hash table it sizes is cleared at every message's
    ///     reset, so a lower level costs less per small message.
    public init(windowBits: Int = 15, runLengthOnly: Bool = false, level: Int32 = Z_DEFAULT_COMPRESSION, memoryLevel: Int32 = 8) {
        precondition((9...15).contains(windowBits), "raw deflate window bits must be 9...15")
        self.windowBits = windowBits
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let strategy = runLengthOnly ? Z_RLE : Z_DEFAULT_STRATEGY
        // Negative window bits: a raw deflate stream, no zlib header or checksum (§7.2.1).
        let status = tw_deflate_init2(stream, level, -Int32(windowBits), memoryLevel, strategy)
        precondition(status == Z_OK, "deflateInit2 failed: \(status)")
    }

    /// The deflater for a connection's negotiated parameters.
    public convenience init(_ parameters: DeflateParameters, level: Int32 = Z_DEFAULT_COMPRESSION, memoryLevel: Int32 = 8) {
        self.init(windowBits: parameters.deflaterWindowBits, runLengthOnly: parameters.deflaterRunLengthOnly,
                  level: level, memoryLevel: memoryLevel)
    }

    deinit {
        deflateEnd(stream)
        stream.deallocate()
    }

    /// Room that always holds the compressed form of `count` bytes (with the flush marker,
    /// before it is stripped): zlib's bound plus the 5-byte empty stored block of the flush.
    public func maxCompressedSize(_ count: Int) -> Int {
        Int(deflateBound(stream, uLong(count))) + 8
    }

    /// Compresses one whole message into `out[0..<capacity]` and returns the payload's length
    /// (the trailing 00 00 FF FF removed), or nil when it did not fit; `maxCompressedSize` is
    /// always enough. The stream is reset afterwards either way.
    public func compress(_ message: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer, capacity: Int) -> Int? {
        defer { deflateReset(stream) }
        var empty: UInt8 = 0
        return withUnsafeMutablePointer(to: &empty) { emptyPointer in
            let input = message.count > 0
                ? UnsafeMutablePointer(mutating: message.baseAddress!.assumingMemoryBound(to: UInt8.self))
                : emptyPointer
            stream.pointee.next_in = input
            stream.pointee.avail_in = uInt(message.count)
            stream.pointee.next_out = out.assumingMemoryBound(to: UInt8.self)
            stream.pointee.avail_out = uInt(capacity)
            let status = deflate(stream, Z_SYNC_FLUSH)
            // With room left over the flush is complete (zlib's contract); none left means
            // there may be more to come, i.e. it did not fit.
            guard status == Z_OK, stream.pointee.avail_in == 0, stream.pointee.avail_out > 0 else { return nil }
            let produced = capacity - Int(stream.pointee.avail_out)
            guard produced >= 4 else { return nil }
            let tail = out + (produced - 4)
            guard tail.load(as: UInt8.self) == Self.syncTail.0, tail.load(fromByteOffset: 1, as: UInt8.self) == Self.syncTail.1,
                  tail.load(fromByteOffset: 2, as: UInt8.self) == Self.syncTail.2, tail.load(fromByteOffset: 3, as: UInt8.self) == Self.syncTail.3
            else { return nil }
            return produced - 4
        }
    }

    /// The compressed payload of one message, as an array.
    public func compress(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        let capacity = maxCompressedSize(message.count)
        return [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            count = compress(message, into: UnsafeMutableRawPointer(buffer.baseAddress!), capacity: capacity)!
        }
    }

    public func compress(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { compress($0) }
    }

    /// A whole compressed, unmasked frame (RSV1 set, §6): compress once, share the bytes with
    /// every subscriber that negotiated the extension.
    public func compressedFrame(opcode: Opcode, message: UnsafeRawBufferPointer) -> [UInt8] {
        let room = maxCompressedSize(message.count)
        let headerRoom = FrameEncoder.headerSize(payloadLength: room, masked: false)
        return [UInt8](unsafeUninitializedCapacity: headerRoom + room) { buffer, count in
            let base = UnsafeMutableRawPointer(buffer.baseAddress!)
            let length = compress(message, into: base + headerRoom, capacity: room)!
            // The header goes just before the payload; move the frame down if it is shorter than reserved.
            let header = FrameEncoder.headerSize(payloadLength: length, masked: false)
            let start = headerRoom - header
            FrameEncoder.writeHeader(into: base + start, opcode: opcode, payloadLength: length, compressed: true)
            if start > 0 { base.copyMemory(from: base + start, byteCount: header + length) }
            count = header + length
        }
    }
}
