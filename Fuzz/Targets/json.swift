// JSONScanner against a reference RFC 8259 recognizer written for this harness (plain
// recursive descent over the grammar of §2-§7, UTF-8 checked by Swift's own decoder).
// Input: a JSON text, or not. Checked:
//  - parse accepts exactly the texts the reference accepts (same nesting limit, 64);
//  - a rejection's offset lies within the input;
//  - for an accepted text, walking it with members/elements visits the same values in the
//    same order as the reference, with the same kinds and byte ranges; every string (keys
//    too) decodes to the reference's decoding; every number converts to a Double, and an
//    integer literal to Int64 exactly when Swift's Int64(String) can; member(_:) finds the
//    first member with that key.
import TradingStream

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var reference = ReferenceJSON(Array(bytes))
    let expected = reference.parseDocument()
    let root: JSONValue
    do {
        root = try JSONScanner.parse(bytes)
    } catch {
        require(error.offset >= 0 && error.offset <= size, "error offset \(error.offset) of \(size)")
        require(expected == nil, "rejected valid JSON: \(error)")
        return 0
    }
    guard let expected else {
        require(false, "accepted invalid JSON: \(reference.failure)")
        return 0
    }
    var visited: [Node] = []
    walk(root, bytes, &visited)
    require(visited == expected, "walk differs from the reference at \(firstDifference(visited, expected))")
    return 0
}

/// A value as both sides see it: kind, bytes, and for strings the decoded text.
struct Node: Equatable {
    var kind: JSONKind
    var range: Range<Int>
    var text: String?
}

func firstDifference(_ a: [Node], _ b: [Node]) -> String {
    for (i, (x, y)) in zip(a, b).enumerated() where x != y { return "node \(i): \(x) vs \(y)" }
    return "length \(a.count) vs \(b.count)"
}

func walk(_ value: JSONValue, _ bytes: UnsafeRawBufferPointer, _ out: inout [Node]) {
    require(value.range.lowerBound >= 0 && value.range.upperBound <= bytes.count && !value.range.isEmpty, "range \(value.range)")
    var node = Node(kind: value.kind, range: value.range, text: nil)
    switch value.kind {
    case .string:
        node.text = JSONScanner.string(value, in: bytes)
        require(node.text != nil, "string value without a string")
    case .number:
        let text = String(decoding: bytes[value.range], as: UTF8.self)
        require(JSONScanner.double(value, in: bytes) != nil, "number \(text) is no Double")
        if !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) {
            let integer = JSONScanner.integer(value, in: bytes)
            require(integer == Int64(text), "integer(\(text)) = \(String(describing: integer)), Int64 says \(String(describing: Int64(text)))")
        }
    default:
        break
    }
    out.append(node)
    switch value.kind {
    case .object:
        let members = JSONScanner.members(of: value, in: bytes)
        for (key, member) in members {
            require(key.kind == .string && key.range.lowerBound > value.range.lowerBound && member.range.upperBound < value.range.upperBound,
                    "member outside its object")
            walk(key, bytes, &out)
            walk(member, bytes, &out)
        }
        let typeMember = members.first { bytes[$0.key.range].elementsEqual(#""type""#.utf8) }?.value
        require(JSONScanner.member("type", of: value, in: bytes) == typeMember, "member(\"type\")")
    case .array:
        for element in JSONScanner.elements(of: value, in: bytes) {
            require(element.range.lowerBound > value.range.lowerBound && element.range.upperBound < value.range.upperBound,
                    "element outside its array")
            walk(element, bytes, &out)
        }
    default:
        break
    }
}

/// The reference: RFC 8259's grammar, read literally, producing the values in document order.
struct ReferenceJSON {
    let b: [UInt8]
    var i = 0
    var nodes: [Node] = []
    var failure = ""

    init(_ bytes: [UInt8]) { b = bytes }

    mutating func parseDocument() -> [Node]? {
        skipSpace()
        guard value(depth: 0) else { return nil }
        skipSpace()
        guard i == b.count else { failure = "trailing data at \(i)"; return nil }
        return nodes
    }

    mutating func fail(_ why: String) -> Bool { failure = "\(why) at \(i)"; return false }

    mutating func skipSpace() { while i < b.count, [0x20, 0x09, 0x0A, 0x0D].contains(b[i]) { i += 1 } }

    func at(_ c: Character) -> Bool { i < b.count && b[i] == c.asciiValue! }

    mutating func value(depth: Int) -> Bool {
        guard i < b.count else { return fail("end of input") }
        switch b[i] {
        case UInt8(ascii: "{"), UInt8(ascii: "["): return container(depth: depth + 1)
        case UInt8(ascii: "\""): return string()
        case UInt8(ascii: "t"): return word("true", .bool)
        case UInt8(ascii: "f"): return word("false", .bool)
        case UInt8(ascii: "n"): return word("null", .null)
        default: return number()
        }
    }

    mutating func container(depth: Int) -> Bool {
        guard depth <= 64 else { return fail("too deep") }
        let isObject = at("{")
        let start = i
        let index = nodes.count
        nodes.append(Node(kind: isObject ? .object : .array, range: start..<start, text: nil))
        i += 1
        skipSpace()
        if !at(isObject ? "}" : "]") {
            while true {
                skipSpace()
                if isObject {
                    guard at("\""), string() else { return fail("key") }
                    skipSpace()
                    guard at(":") else { return fail("colon") }
                    i += 1
                    skipSpace()
                }
                guard value(depth: depth) else { return false }
                skipSpace()
                if at(",") { i += 1; continue }
                break
            }
            guard at(isObject ? "}" : "]") else { return fail("close") }
        }
        i += 1
        nodes[index].range = start..<i
        return true
    }

    mutating func word(_ w: String, _ kind: JSONKind) -> Bool {
        let u = Array(w.utf8)
        guard i + u.count <= b.count, Array(b[i..<(i + u.count)]) == u else { return fail("literal") }
        nodes.append(Node(kind: kind, range: i..<(i + u.count), text: nil))
        i += u.count
        return true
    }

    mutating func digits() -> Int {
        let s = i
        while i < b.count, (48...57).contains(b[i]) { i += 1 }
        return i - s
    }

    mutating func number() -> Bool {
        let start = i
        if at("-") { i += 1 }
        if at("0") { i += 1 } else if digits() == 0 { return fail("number") }
        if at(".") { i += 1; if digits() == 0 { return fail("fraction") } }
        if at("e") || at("E") {
            i += 1
            if at("+") || at("-") { i += 1 }
            if digits() == 0 { return fail("exponent") }
        }
        nodes.append(Node(kind: .number, range: start..<i, text: nil))
        return true
    }

    mutating func string() -> Bool {
        let start = i
        i += 1
        var scalars: [Unicode.Scalar] = []
        var run: [UInt8] = []
        var pendingHigh: UInt32?
        func flushRun() -> Bool {
            guard let s = String(validating: run, as: UTF8.self) else { return false }
            scalars += s.unicodeScalars
            run = []
            return true
        }
        func flushHigh() {
            if pendingHigh != nil { scalars.append("\u{FFFD}"); pendingHigh = nil }
        }
        while true {
            guard i < b.count else { return fail("unterminated") }
            let c = b[i]
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 { return fail("control character") }
            if c != UInt8(ascii: "\\") {
                flushHigh()
                run.append(c)
                i += 1
                continue
            }
            guard flushRun() else { return fail("UTF-8") }
            guard i + 1 < b.count else { return fail("escape") }
            let e = b[i + 1]
            i += 2
            let simple: [UInt8: Unicode.Scalar] = [0x22: "\"", 0x5C: "\\", 0x2F: "/", 0x62: "\u{08}", 0x66: "\u{0C}",
                                                    0x6E: "\n", 0x72: "\r", 0x74: "\t"]
            if let s = simple[e] {
                flushHigh()
                scalars.append(s)
                continue
            }
            guard e == UInt8(ascii: "u"), i + 4 <= b.count,
                  let code = UInt32(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16),
                  b[i..<(i + 4)].allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 102) })
            else { return fail("escape") }
            i += 4
            if (0xDC00...0xDFFF).contains(code), let high = pendingHigh {
                scalars.append(Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00))!)
                pendingHigh = nil
            } else {
                flushHigh()
                if (0xD800...0xDBFF).contains(code) { pendingHigh = code } else { scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}") }
            }
        }
        guard flushRun() else { return fail("UTF-8") }
        flushHigh()
        i += 1
        var text = ""
        text.unicodeScalars.append(contentsOf: scalars)
        nodes.append(Node(kind: .string, range: start..<i, text: text))
        return true
    }
}
