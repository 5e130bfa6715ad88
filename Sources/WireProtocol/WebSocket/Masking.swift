/// XORs `count` bytes at `base` with the 4-byte masking key (RFC 6455 §5.3), starting at
/// `phase` bytes into the key. Works eight bytes at a time; returns the phase after the run.
/// `key` holds the four key bytes in wire order, as loaded from memory (native endianness).
@inlinable
@discardableResult
public func applyMask(_ base: UnsafeMutableRawPointer, count: Int, key: UInt32, phase: Int) -> Int {
    guard count > 0 else { return phase }
    // Rotate the key so that byte 0 of the rotated key applies to base[0].
    let shift = UInt32((phase & 3) * 8)
    let rotated = shift == 0 ? key : (key >> shift) | (key << (32 - shift))
    let wide = UInt64(rotated) | (UInt64(rotated) << 32)
    var i = 0
    while i &+ 8 <= count {
        let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        base.storeBytes(of: word ^ wide, toByteOffset: i, as: UInt64.self)
        i &+= 8
    }
    var k = rotated
    while i < count {
        let b = base.load(fromByteOffset: i, as: UInt8.self)
        base.storeBytes(of: b ^ UInt8(truncatingIfNeeded: k), toByteOffset: i, as: UInt8.self)
        k = (k >> 8) | (k << 24)
        i &+= 1
    }
    return (phase &+ count) & 3
}
