/// Incremental UTF-8 validator (RFC 3629, Unicode table 3-7) for text messages that
/// arrive in pieces: a frame split over many reads, a message split over many frames.
///
/// RFC 6455 §8.1 asks a receiver to fail the connection on invalid UTF-8; failing as soon
/// as a bad byte arrives, not when the message ends, is what Autobahn's 6.4.* cases call
/// "fail fast". The whole state is one byte, so it lives in a connection's decoder.
public struct UTF8Validator: Sendable, Equatable {
    /// What the next byte must be. `accept` means "between code points".
    @usableFromInline
    enum Expect: UInt8, Sendable {
        case accept = 0
        case cont1           // one more continuation byte 80...BF
        case cont2           // two more
        case cont3           // three more
        case afterE0         // A0...BF, then one more (no overlong 3-byte forms)
        case afterED         // 80...9F, then one more (no UTF-16 surrogates)
        case afterF0         // 90...BF, then two more (no overlong 4-byte forms)
        case afterF4         // 80...8F, then two more (nothing above U+10FFFF)
        case reject
    }

    @usableFromInline var expect: Expect = .accept

    @inlinable public init() {}

    /// True when every byte so far formed complete, valid code points.
    @inlinable public var isComplete: Bool { expect == .accept }

    /// True once an invalid sequence has been seen; it stays true.
    @inlinable public var hasFailed: Bool { expect == .reject }

    /// Validates the next bytes of the stream. Returns false as soon as they cannot be
    /// the beginning of valid UTF-8 (an incomplete code point at the end is fine).
    @inlinable
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Bool {
        // Once failed, always failed, even for an empty piece.
        guard let base = bytes.baseAddress, expect != .reject else { return expect != .reject }
        let count = bytes.count
        var i = 0
        var state = expect
        while i < count {
            if state == .accept {
                // ASCII runs are most of any JSON text: skip them eight bytes at a time.
                while i &+ 8 <= count {
                    let word = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    if word & 0x8080_8080_8080_8080 != 0 { break }
                    i &+= 8
                }
                if i >= count { break }
            }
            let byte = base.load(fromByteOffset: i, as: UInt8.self)
            i &+= 1
            state = Self.step(state, byte)
            if state == .reject {
                expect = .reject
                return false
            }
        }
        expect = state
        return true
    }

    @inlinable
    public mutating func feed(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { feed($0) }
    }

    @inlinable @inline(__always)
    static func step(_ state: Expect, _ byte: UInt8) -> Expect {
        switch state {
        case .accept:
            switch byte {
            case 0x00...0x7F: return .accept
            case 0xC2...0xDF: return .cont1
            case 0xE0: return .afterE0
            case 0xE1...0xEC, 0xEE...0xEF: return .cont2
            case 0xED: return .afterED
            case 0xF0: return .afterF0
            case 0xF1...0xF3: return .cont3
            case 0xF4: return .afterF4
            default: return .reject
            }
        case .cont1: return (0x80...0xBF).contains(byte) ? .accept : .reject
        case .cont2: return (0x80...0xBF).contains(byte) ? .cont1 : .reject
        case .cont3: return (0x80...0xBF).contains(byte) ? .cont2 : .reject
        case .afterE0: return (0xA0...0xBF).contains(byte) ? .cont1 : .reject
        case .afterED: return (0x80...0x9F).contains(byte) ? .cont1 : .reject
        case .afterF0: return (0x90...0xBF).contains(byte) ? .cont2 : .reject
        case .afterF4: return (0x80...0x8F).contains(byte) ? .cont2 : .reject
        case .reject: return .reject
        }
    }

    /// Validates a complete byte sequence in one call.
    @inlinable
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var validator = UTF8Validator()
        return validator.feed(bytes) && validator.isComplete
    }
}
