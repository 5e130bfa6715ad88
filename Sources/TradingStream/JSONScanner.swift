import WireProtocol

/// What kind of JSON value a byte range holds.
public enum JSONKind: Sendable, Equatable {
    case object, array, string, number, bool, null
}

/// A value inside a JSON text, by position: parsing allocates nothing until a caller asks
/// for a Swift value, and `data` payloads can be forwarded as the exact bytes received.
public struct JSONValue: Sendable, Equatable {
    public let kind: JSONKind
    /// The value's bytes, quotes and brackets included.
    public let range: Range<Int>
}

/// Why a text is not valid JSON, and where.
public struct JSONError: Error, Equatable, Sendable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "\(reason) at byte \(offset)" }
}

/// A strict RFC 8259 validator and scanner over UTF-8 bytes. Nesting is bounded (a peer
/// cannot exhaust the stack), strings are checked for escapes, control characters and
/// UTF-8, numbers for the JSON grammar.
public struct JSONScanner {
    /// Deepest nesting accepted; real messages are three or four levels deep.
    public static let maxDepth = 64

    let bytes: UnsafeRawBufferPointer
    var position = 0

    public init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    /// Validates `bytes` as one complete JSON text and returns the top-level value.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONError) -> JSONValue {
        var scanner = JSONScanner(bytes)
        scanner.skipWhitespace()
        let value = try scanner.value(depth: 0)
        scanner.skipWhitespace()
        if scanner.position != bytes.count { throw JSONError(offset: scanner.position, reason: "unexpected data after the JSON value") }
        return value
    }

    /// `parse`, and when the text is an object, its members (in order) from the same pass:
    /// a caller that reads the top level's fields need not scan the text twice.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, members: inout [(key: JSONValue, value: JSONValue)]
    ) throws(JSONError) -> JSONValue {
        members.removeAll(keepingCapacity: true)
        var scanner = JSONScanner(bytes)
        scanner.skipWhitespace()
        let value: JSONValue
        if scanner.peek == UInt8(ascii: "{") {
            value = try withUnsafeMutablePointer(to: &members) { (out) throws(JSONError) -> JSONValue in
                try scanner.object(depth: 1, collecting: out)
            }
        } else {
            value = try scanner.value(depth: 0)
        }
        scanner.skipWhitespace()
        if scanner.position != bytes.count { throw JSONError(offset: scanner.position, reason: "unexpected data after the JSON value") }
        return value
    }

    /// The members of the object at `value` (which must have been validated), in order.
    public static func members(of value: JSONValue, in bytes: UnsafeRawBufferPointer) -> [(key: JSONValue, value: JSONValue)] {
        var out: [(key: JSONValue, value: JSONValue)] = []
        members(of: value, in: bytes, into: &out)
        return out
    }

    /// `members(of:in:)` into a caller's array (emptied first), so a hot path can reuse one.
    public static func members(of value: JSONValue, in bytes: UnsafeRawBufferPointer, into out: inout [(key: JSONValue, value: JSONValue)]) {
        out.removeAll(keepingCapacity: true)
        guard value.kind == .object else { return }
        var scanner = JSONScanner(bytes)
        scanner.position = value.range.lowerBound + 1
        scanner.skipWhitespace()
        if scanner.peek == UInt8(ascii: "}") { return }
        while true {
            scanner.skipWhitespace()
            guard let key = try? scanner.string() else { return }
            scanner.skipWhitespace()
            scanner.position += 1   // ':'
            scanner.skipWhitespace()
            guard let v = try? scanner.value(depth: 1) else { return }
            out.append((key, v))
            scanner.skipWhitespace()
            if scanner.peek == UInt8(ascii: ",") { scanner.position += 1; continue }
            return
        }
    }

    /// The elements of the array at `value` (validated), in order.
    public static func elements(of value: JSONValue, in bytes: UnsafeRawBufferPointer) -> [JSONValue] {
        guard value.kind == .array else { return [] }
        var scanner = JSONScanner(bytes)
        scanner.position = value.range.lowerBound + 1
        var out: [JSONValue] = []
        scanner.skipWhitespace()
        if scanner.peek == UInt8(ascii: "]") { return out }
        while true {
            scanner.skipWhitespace()
            guard let v = try? scanner.value(depth: 1) else { return out }
            out.append(v)
            scanner.skipWhitespace()
            if scanner.peek == UInt8(ascii: ",") { scanner.position += 1; continue }
            return out
        }
    }

    /// The member named `name` of an object (first match), if present.
    public static func member(_ name: StaticString, of value: JSONValue, in bytes: UnsafeRawBufferPointer) -> JSONValue? {
        for (key, v) in members(of: value, in: bytes) where stringEquals(key, name, in: bytes) {
            return v
        }
        return nil
    }

    /// Whether the string at `value` is exactly `literal` (no escapes expected in keys we look up).
    public static func stringEquals(_ value: JSONValue, _ literal: StaticString, in bytes: UnsafeRawBufferPointer) -> Bool {
        guard value.kind == .string, value.range.count - 2 == literal.utf8CodeUnitCount else { return false }
        let start = value.range.lowerBound + 1
        for i in 0..<literal.utf8CodeUnitCount where bytes[start + i] != literal.utf8Start[i] {
            return false
        }
        return true
    }

    /// The decoded Swift string of a string value.
    public static func string(_ value: JSONValue, in bytes: UnsafeRawBufferPointer) -> String? {
        guard value.kind == .string else { return nil }
        let inner = (value.range.lowerBound + 1)..<(value.range.upperBound - 1)
        if !bytes[inner].contains(UInt8(ascii: "\\")) {
            return String(decoding: bytes[inner], as: UTF8.self)
        }
        var out: [UInt8] = []
        out.reserveCapacity(inner.count)
        var i = inner.lowerBound
        while i < inner.upperBound {
            let c = bytes[i]
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            let e = bytes[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                var scalar = hex4(bytes, i)
                i += 4
                // A high surrogate pairs only with a following \u escape (not \" or \n: their
                // next four bytes are not hex digits).
                if (0xD800...0xDBFF).contains(scalar), i + 6 <= inner.upperBound,
                   bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                    let low = hex4(bytes, i + 2)
                    if (0xDC00...0xDFFF).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    }
                }
                let s = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(s)).utf8))
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// An integer value (no fraction or exponent) that fits in Int64.
    public static func integer(_ value: JSONValue, in bytes: UnsafeRawBufferPointer) -> Int64? {
        guard value.kind == .number else { return nil }
        var result: Int64 = 0
        var negative = false
        for i in value.range {
            let c = bytes[i]
            if c == UInt8(ascii: "-") { negative = true; continue }
            guard c >= 48 && c <= 57 else { return nil }
            // Accumulated toward the sign (the '-' comes first), so that Int64.min, whose
            // magnitude no positive Int64 holds, converts too.
            let digit = Int64(c - 48)
            let (m, o1) = result.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(digit) : m.addingReportingOverflow(digit)
            if o1 || o2 { return nil }
            result = a
        }
        return result
    }

    /// A number value as a Double.
    public static func double(_ value: JSONValue, in bytes: UnsafeRawBufferPointer) -> Double? {
        guard value.kind == .number else { return nil }
        return Double(String(decoding: bytes[value.range], as: UTF8.self))
    }

    static func hex4(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = b[at + k]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 65...70: d = UInt32(c - 55)
            default: d = UInt32(c - 87)
            }
            v = v << 4 | d
        }
        return v
    }

    // MARK: - Grammar

    var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    func error(_ reason: String) -> JSONError { JSONError(offset: position, reason: reason) }

    mutating func value(depth: Int) throws(JSONError) -> JSONValue {
        guard let c = peek else { throw error("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth + 1)
        case UInt8(ascii: "["): return try array(depth: depth + 1)
        case UInt8(ascii: "\""): return try string()
        case UInt8(ascii: "t"): return try literal("true", .bool)
        case UInt8(ascii: "f"): return try literal("false", .bool)
        case UInt8(ascii: "n"): return try literal("null", .null)
        case UInt8(ascii: "-"), 48...57: return try number()
        default: throw error("unexpected character")
        }
    }

    mutating func object(
        depth: Int, collecting members: UnsafeMutablePointer<[(key: JSONValue, value: JSONValue)]>? = nil
    ) throws(JSONError) -> JSONValue {
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth)") }
        let start = position
        position += 1
        skipWhitespace()
        if peek == UInt8(ascii: "}") { position += 1; return JSONValue(kind: .object, range: start..<position) }
        while true {
            skipWhitespace()
            guard peek == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let key = try string()
            skipWhitespace()
            guard peek == UInt8(ascii: ":") else { throw error("expected ':'") }
            position += 1
            skipWhitespace()
            let member = try value(depth: depth)
            members?.pointee.append((key, member))
            skipWhitespace()
            switch peek {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"): position += 1; return JSONValue(kind: .object, range: start..<position)
            default: throw error("expected ',' or '}'")
            }
        }
    }

    mutating func array(depth: Int) throws(JSONError) -> JSONValue {
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth)") }
        let start = position
        position += 1
        skipWhitespace()
        if peek == UInt8(ascii: "]") { position += 1; return JSONValue(kind: .array, range: start..<position) }
        while true {
            skipWhitespace()
            _ = try value(depth: depth)
            skipWhitespace()
            switch peek {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): position += 1; return JSONValue(kind: .array, range: start..<position)
            default: throw error("expected ',' or ']'")
            }
        }
    }

    mutating func string() throws(JSONError) -> JSONValue {
        let start = position
        position += 1
        var utf8 = UTF8Validator()
        var runStart = position
        // Every byte of the run OR-ed together: an all-ASCII run (nearly every key and
        // value) is valid UTF-8 as it stands, and skips the validator.
        var high: UInt8 = 0
        while true {
            guard position < bytes.count else { throw error("unterminated string") }
            let c = bytes[position]
            if c == UInt8(ascii: "\"") {
                if high & 0x80 != 0, !utf8.feed(UnsafeRawBufferPointer(rebasing: bytes[runStart..<position])) || !utf8.isComplete {
                    throw error("invalid UTF-8 in string")
                }
                position += 1
                return JSONValue(kind: .string, range: start..<position)
            }
            if c < 0x20 { throw error("control character in string") }
            if c == UInt8(ascii: "\\") {
                // The run before an escape must end on a code point: a multi-byte sequence
                // cut by a backslash is not UTF-8 (RFC 8259 §8.1), even if it resumes after it.
                if high & 0x80 != 0, !utf8.feed(UnsafeRawBufferPointer(rebasing: bytes[runStart..<position])) || !utf8.isComplete {
                    throw error("invalid UTF-8 in string")
                }
                high = 0
                guard position + 1 < bytes.count else { throw error("unterminated escape") }
                let e = bytes[position + 1]
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    position += 2
                case UInt8(ascii: "u"):
                    guard position + 6 <= bytes.count else { throw error("truncated \\u escape") }
                    for k in 2..<6 {
                        let h = bytes[position + k]
                        guard (48...57).contains(h) || (65...70).contains(h) || (97...102).contains(h) else { throw error("invalid \\u escape") }
                    }
                    position += 6
                default:
                    throw error("invalid escape")
                }
                runStart = position
                continue
            }
            high |= c
            position += 1
        }
    }

    mutating func number() throws(JSONError) -> JSONValue {
        let start = position
        if peek == UInt8(ascii: "-") { position += 1 }
        guard let first = peek, (48...57).contains(first) else { throw error("invalid number") }
        position += 1
        if first != 48 { while let d = peek, (48...57).contains(d) { position += 1 } }
        if peek == UInt8(ascii: ".") {
            position += 1
            guard let d = peek, (48...57).contains(d) else { throw error("invalid number") }
            while let d = peek, (48...57).contains(d) { position += 1 }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            position += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { position += 1 }
            guard let d = peek, (48...57).contains(d) else { throw error("invalid number") }
            while let d = peek, (48...57).contains(d) { position += 1 }
        }
        return JSONValue(kind: .number, range: start..<position)
    }

    mutating func literal(_ word: StaticString, _ kind: JSONKind) throws(JSONError) -> JSONValue {
        let start = position
        let n = word.utf8CodeUnitCount
        guard position + n <= bytes.count else { throw error("invalid literal") }
        for i in 0..<n where bytes[position + i] != word.utf8Start[i] { throw error("invalid literal") }
        position += n
        return JSONValue(kind: kind, range: start..<position)
    }
}
