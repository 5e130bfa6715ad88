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
                guard let h = it.next(), let l = it.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
                continue
            }
            bytes.append(b)
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
