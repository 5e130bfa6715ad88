/// Writes RFC 6455 frame headers. Server frames are unmasked, so one encoded frame can be
/// shared by every subscriber; clients mask theirs (§5.3).
public enum FrameEncoder {
    /// The largest header: 2 bytes + 8-byte length + 4-byte mask.
    public static let maxHeaderSize = 14

    @inlinable
    public static func headerSize(payloadLength: Int, masked: Bool) -> Int {
        let base = payloadLength < 126 ? 2 : (payloadLength <= 0xFFFF ? 4 : 10)
        return masked ? base + 4 : base
    }

    /// Writes a frame header at `out` and returns its length. With `mask`, the mask bit and
    /// key are written too; the caller masks the payload with `applyMask(..., key: mask)`.
    /// `compressed` sets RSV1, the permessage-deflate mark (RFC 7692 §6): only on the first
    /// frame of a compressed message, never on a continuation or control frame.
    @inlinable
    @discardableResult
    public static func writeHeader(
        into out: UnsafeMutableRawPointer, opcode: Opcode, fin: Bool = true,
        payloadLength: Int, mask: UInt32? = nil, compressed: Bool = false
    ) -> Int {
        out.storeBytes(of: (fin ? 0x80 : 0) | (compressed ? 0x40 : 0) | opcode.rawValue, as: UInt8.self)
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        var n: Int
        if payloadLength < 126 {
            out.storeBytes(of: maskBit | UInt8(payloadLength), toByteOffset: 1, as: UInt8.self)
            n = 2
        } else if payloadLength <= 0xFFFF {
            out.storeBytes(of: maskBit | 126, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt16(payloadLength).bigEndian, toByteOffset: 2, as: UInt16.self)
            n = 4
        } else {
            out.storeBytes(of: maskBit | 127, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt64(payloadLength).bigEndian, toByteOffset: 2, as: UInt64.self)
            n = 10
        }
        if let mask {
            out.storeBytes(of: mask, toByteOffset: n, as: UInt32.self)
            n += 4
        }
        return n
    }

    /// A complete frame as an array (tests, clients and rare control messages; the broadcast
    /// path writes into shared buffers instead). With `mask`, the payload is masked.
    public static func frame(
        opcode: Opcode, fin: Bool = true, payload: some Collection<UInt8>, mask: UInt32? = nil, compressed: Bool = false
    ) -> [UInt8] {
        let payload = Array(payload)
        let header = headerSize(payloadLength: payload.count, masked: mask != nil)
        return [UInt8](unsafeUninitializedCapacity: header + payload.count) { buffer, count in
            let base = UnsafeMutableRawPointer(buffer.baseAddress!)
            let n = writeHeader(into: base, opcode: opcode, fin: fin, payloadLength: payload.count, mask: mask, compressed: compressed)
            payload.withUnsafeBytes { src in
                if src.count > 0 { (base + n).copyMemory(from: src.baseAddress!, byteCount: src.count) }
            }
            if let mask { applyMask(base + n, count: payload.count, key: mask, phase: 0) }
            count = header + payload.count
        }
    }

    /// A Close frame payload: the code in network order, then a reason cut to fit 125 bytes
    /// on a UTF-8 boundary (§5.5: control payloads are at most 125 bytes).
    public static func closePayload(code: CloseCode, reason: String = "") -> [UInt8] {
        var bytes: [UInt8] = [UInt8(code.rawValue >> 8), UInt8(code.rawValue & 0xFF)]
        var utf8 = Array(reason.utf8)
        if utf8.count > 123 {
            var cut = 123
            while cut > 0 && utf8[cut] & 0xC0 == 0x80 { cut -= 1 }
            utf8.removeSubrange(cut...)
        }
        bytes += utf8
        return bytes
    }

    /// The largest unmasked Close frame: a 2-byte header and a 125-byte payload.
    public static let maxCloseFrameSize = 127

    /// Writes a whole unmasked Close frame (header, code, reason cut as in `closePayload`)
    /// into `out`, which has room for `maxCloseFrameSize` bytes; returns its length. No heap
    /// for a literal reason: a mass disconnect writes thousands of these in one pass.
    public static func writeCloseFrame(into out: UnsafeMutableRawPointer, code: CloseCode, reason: String) -> Int {
        var text = reason
        return text.withUTF8 { utf8 in
            var length = utf8.count
            if length > 123 {
                length = 123
                while length > 0 && utf8[length] & 0xC0 == 0x80 { length -= 1 }
            }
            out.storeBytes(of: 0x88, as: UInt8.self)                       // FIN, opcode 8
            out.storeBytes(of: UInt8(2 + length), toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt8(code.rawValue >> 8), toByteOffset: 2, as: UInt8.self)
            out.storeBytes(of: UInt8(code.rawValue & 0xFF), toByteOffset: 3, as: UInt8.self)
            if length > 0 { (out + 4).copyMemory(from: utf8.baseAddress!, byteCount: length) }
            return 4 + length
        }
    }
}
