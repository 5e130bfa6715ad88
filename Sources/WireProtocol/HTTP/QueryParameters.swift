/// `a=1&b=x%2Cy` query strings (application/x-www-form-urlencoded, RFC 3986 percent-encoding).
public struct QueryParameters: Sendable {
    private var values: [String: String] = [:]

    public init(_ query: String) {
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = Self.decode(parts[0]) else { continue }
            values[key] = parts.count > 1 ? Self.decode(parts[1]) ?? "" : ""
        }
    }

    public subscript(_ key: String) -> String? { values[key] }

    public static func decode(_ s: Substring) -> String? {
        var bytes: [UInt8] = []
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            if b == UInt8(ascii: "+") { bytes.append(0x20); continue }
            if b == UInt8(ascii: "%") {
                // Exactly two hex digits (RFC 3986 §2.1); UInt8(_:radix:) would also take "+f" or "-0".
                guard let h = it.next().flatMap(hexValue), let l = it.next().flatMap(hexValue) else { return nil }
                bytes.append(h << 4 | l)
                continue
            }
            bytes.append(b)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}
