// QueryParameters. The input is used twice:
//  - as a query string: parsing never traps, and decode agrees with a reference decoder
//    (RFC 3986 percent-encoding: '%' and exactly two hex digits; '+' is a space; the
//    result must be UTF-8) on every key and value of it;
//  - as key/value pairs separated by 0x00 bytes, each percent-encoded by this harness
//    (hex case, and '+' or %20 for a space, varying): decode(encode(v)) == v for UTF-8
//    values, and QueryParameters of the joined query returns each key's last value.
import WireProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQuery(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))

    let query = String(decoding: input, as: UTF8.self)
    let parameters = QueryParameters(query)
    for pair in query.split(separator: "&") {
        let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        for part in parts {
            let got = QueryParameters.decode(part)
            let want = referenceDecode(Array(part.utf8))
            require(got == want, "decode(\(part.debugDescription)) = \(String(describing: got)), reference \(String(describing: want))")
        }
        if let key = referenceDecode(Array(parts[0].utf8)), parameters[key] == nil {
            require(false, "key \(key.debugDescription) of the query is missing")
        }
    }

    var chunker = Chunker(seed: fnv1a(UnsafeRawBufferPointer(start: data, count: size)))
    let fields = input.split(separator: 0, omittingEmptySubsequences: false).map { Array($0) }
    var expected: [String: String] = [:]
    var pairs: [String] = []
    for k in stride(from: 0, to: fields.count - 1, by: 2) {
        guard let key = String(validating: fields[k], as: UTF8.self),
              let value = String(validating: fields[k + 1], as: UTF8.self) else { continue }
        let encodedKey = percentEncode(fields[k], &chunker)
        let encodedValue = percentEncode(fields[k + 1], &chunker)
        require(QueryParameters.decode(Substring(encodedValue)) == value, "decode(\(encodedValue)) != \(value.debugDescription)")
        expected[key] = value
        pairs.append(encodedKey + "=" + encodedValue)
    }
    let parsed = QueryParameters(pairs.joined(separator: "&"))
    for (key, value) in expected {
        require(parsed[key] == value, "[\(key.debugDescription)] = \(String(describing: parsed[key])), expected \(value.debugDescription)")
    }
    return 0
}

/// Unreserved characters (RFC 3986 §2.3) as they are, a space as '+' or %20, anything else %XX.
func percentEncode(_ bytes: [UInt8], _ chunker: inout Chunker) -> String {
    let upper = Array("0123456789ABCDEF".utf8), lower = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in bytes {
        let r = chunker.next()
        let unreserved = (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E
        if unreserved && r & 3 != 0 {
            out.append(b)
        } else if b == 0x20 && r & 4 != 0 {
            out.append(UInt8(ascii: "+"))
        } else {
            let hex = r & 8 != 0 ? upper : lower
            out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 15)]]
        }
    }
    return String(decoding: out, as: UTF8.self)
}

func referenceDecode(_ bytes: [UInt8]) -> String? {
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    var i = 0
    while i < bytes.count {
        switch bytes[i] {
        case UInt8(ascii: "+"):
            out.append(0x20)
            i += 1
        case UInt8(ascii: "%"):
            guard i + 2 < bytes.count, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) else { return nil }
            out.append(h << 4 | l)
            i += 3
        default:
            out.append(bytes[i])
            i += 1
        }
    }
    return String(validating: out, as: UTF8.self)
}
