import WireProtocol

/// Writes the spec's message envelope (FR-WEBSOCKET-002) as compact JSON:
/// `{"type":"T","seq":N,"data":D,"message":"M","timestamp":"ISO"}` with `data` and
/// `message` optional. `data` is copied as raw, already-validated JSON bytes.
public struct EnvelopeWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func begin(type: String, seq: UInt64) {
        bytes.removeAll(keepingCapacity: true)
        append("{\"type\":\"")
        bytes.append(contentsOf: type.utf8)
        append("\",\"seq\":")
        appendInteger(seq)
    }

    /// The account a private message is for (PROTOCOL.md "Private messages").
    public mutating func account(_ name: String) {
        append(",\"account\":")
        appendQuoted(name)
    }

    public mutating func data(_ raw: UnsafeRawBufferPointer) {
        append(",\"data\":")
        bytes.append(contentsOf: raw)
    }

    public mutating func data(_ raw: [UInt8]) {
        append(",\"data\":")
        bytes.append(contentsOf: raw)
    }

    public mutating func message(_ text: String) {
        append(",\"message\":")
        appendQuoted(text)
    }

    public mutating func end(timestampMilliseconds: UInt64) {
        append(",\"timestamp\":\"")
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: Timestamp.length))
        bytes.withUnsafeMutableBytes { raw in
            Timestamp.write(millisecondsSinceEpoch: timestampMilliseconds, into: raw.baseAddress! + start)
        }
        append("\"}")
    }

    @inline(__always)
    mutating func append(_ s: StaticString) {
        bytes.append(contentsOf: UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    public mutating func appendInteger(_ value: UInt64) {
        if value == 0 { bytes.append(48); return }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        var v = value
        withUnsafeMutableBytes(of: &digits) { d in
            while v > 0 {
                d[n] = UInt8(48 + v % 10)
                v /= 10
                n += 1
            }
            for i in stride(from: n - 1, through: 0, by: -1) { bytes.append(d[i]) }
        }
    }

    /// Appends `text` as a JSON string.
    public mutating func appendQuoted(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: "\""): append("\\\"")
            case UInt8(ascii: "\\"): append("\\\\")
            case 0x0A: append("\\n")
            case 0x0D: append("\\r")
            case 0x09: append("\\t")
            case 0..<0x20:
                append("\\u00")
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 15)])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Appends raw bytes (already JSON).
    public mutating func appendRaw(_ s: String) {
        bytes.append(contentsOf: s.utf8)
    }
}

/// JSON number formatting for prices and quantities: shortest round-trip form, never
/// exponent notation for the magnitudes markets use, and never NaN or infinity.
public enum JSONNumber {
    public static func format(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) + ".0" }
        return "\(value)"
    }

    /// Rounds to `places` decimals (prices: 2, quantities: 4 or more).
    public static func format(_ value: Double, places: Int) -> String {
        guard value.isFinite else { return "0" }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        return format((value * scale).rounded() / scale)
    }
}
