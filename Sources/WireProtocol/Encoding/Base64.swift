/// Standard base64 (RFC 4648 §4) for the handshake's keys. Small and allocation-free on
/// the decode side, since it runs on a reactor thread for every upgrade.
public enum Base64 {
    @usableFromInline
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Encodes `input` into `out` (which must hold `encodedLength(input.count)` bytes).
    @inlinable
    public static func encode(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Int {
        var o = 0
        var i = 0
        let n = input.count
        alphabet.withUnsafeBufferPointer { table in
            while i + 3 <= n {
                let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                out.storeBytes(of: table[Int(v >> 18)], toByteOffset: o, as: UInt8.self)
                out.storeBytes(of: table[Int((v >> 12) & 63)], toByteOffset: o + 1, as: UInt8.self)
                out.storeBytes(of: table[Int((v >> 6) & 63)], toByteOffset: o + 2, as: UInt8.self)
                out.storeBytes(of: table[Int(v & 63)], toByteOffset: o + 3, as: UInt8.self)
                i += 3
                o += 4
            }
            let rest = n - i
            if rest > 0 {
                var v = UInt32(input[i]) << 16
                if rest == 2 { v |= UInt32(input[i + 1]) << 8 }
                out.storeBytes(of: table[Int(v >> 18)], toByteOffset: o, as: UInt8.self)
                out.storeBytes(of: table[Int((v >> 12) & 63)], toByteOffset: o + 1, as: UInt8.self)
                out.storeBytes(of: rest == 2 ? table[Int((v >> 6) & 63)] : UInt8(ascii: "="), toByteOffset: o + 2, as: UInt8.self)
                out.storeBytes(of: UInt8(ascii: "="), toByteOffset: o + 3, as: UInt8.self)
                o += 4
            }
        }
        return o
    }

    @inlinable
    public static func encodedLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: encodedLength(bytes.count))
        let n = bytes.withUnsafeBytes { src in out.withUnsafeMutableBytes { encode(src, into: $0.baseAddress!) } }
        return String(decoding: out[..<n], as: UTF8.self)
    }

    @inlinable
    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }

    /// The number of bytes `input` decodes to, or nil if it is not canonical padded base64
    /// (length a multiple of 4, padding only at the end, unused bits zero).
    @inlinable
    public static func decodedLength(_ input: UnsafeRawBufferPointer) -> Int? {
        let n = input.count
        guard n % 4 == 0 else { return nil }
        if n == 0 { return 0 }
        var pad = 0
        if input[n - 1] == UInt8(ascii: "=") { pad = 1 }
        if pad == 1 && input[n - 2] == UInt8(ascii: "=") { pad = 2 }
        for i in 0..<(n - pad) where value(input[i]) == nil { return nil }
        // Canonical form: the bits dropped by the padding must be zero.
        if pad == 1, let last = value(input[n - 2]), last & 0b11 != 0 { return nil }
        if pad == 2, let last = value(input[n - 3]), last & 0b1111 != 0 { return nil }
        return n / 4 * 3 - pad
    }
}
