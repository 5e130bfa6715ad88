// permessage-deflate (RFC 7692): negotiation, MessageInflater, MessageDeflater. Byte 0 picks
// what the rest of the input is; bytes 1-2 are a setting. Checked:
//  - negotiation (byte 0 % 3 == 0): never traps; an accepted offer's answer negotiates back to
//    the same parameters; the value split in two header lines negotiates as the first line,
//    else the second; declining 8-bit windows only ever turns an 8-bit answer into another one;
//  - inflate (1): with a limit from bytes 1-2, a message is never longer than the limit and
//    never more than limit + 1 bytes are produced; the limit is exact: the same data inflates
//    to the same bytes with the limit set to their length, and is too large one byte under;
//  - round trip (2): deflate with the window bits and level of bytes 1-2 (8 bits meaning
//    run-length only), then inflate, gives the input back, within maxCompressedSize, without
//    the 00 00 FF FF tail, and a true 8-bit inflater reads the run-length-only output.
// One inflater and one deflater per setting are reused across inputs, as a reactor reuses
// them across connections: a stream not reset after a message would show here.
import CZlib
import WireProtocol

nonisolated(unsafe) private let inflater = MessageInflater(initialCapacity: 256, retainedCapacity: 4096)
nonisolated(unsafe) private var deflaters: [Int: MessageDeflater] = [:]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDeflate(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 3 else { return 0 }
    let setting = Int(data[1]) << 8 | Int(data[2])
    let rest = UnsafeRawBufferPointer(start: data + 3, count: size - 3)
    switch data[0] % 3 {
    case 0: checkNegotiation(rest, split: setting)
    case 1: checkInflate(rest, setting: setting)
    default: checkRoundTrip(rest, setting: setting)
    }
    return 0
}

private func checkNegotiation(_ value: UnsafeRawBufferPointer, split: Int) {
    let p = DeflateNegotiation.negotiate(value)
    if let p {
        require((8...15).contains(p.serverWindowBits), "server window \(p.serverWindowBits)")
        require(p.clientMaxWindowBits.map { (8...15).contains($0) } ?? true, "client window")
        let again = DeflateNegotiation.negotiate(p.responseHeaderValue)
        require(again == p, "answer \(p.responseHeaderValue) negotiates to \(String(describing: again))")
    }
    let strict = DeflateNegotiation.negotiate(value, policy: DeflatePolicy(acceptsEightBitServerWindow: false))
    if let strict { require(strict.serverWindowBits != 8, "an 8-bit window accepted when declined") }
    if p?.serverWindowBits != 8 { require(strict == p, "the policy changed a non-8-bit answer") }
    // Two header lines: the first line's answer, else the second's.
    let cut = value.count == 0 ? 0 : split % (value.count + 1)
    let first = UnsafeRawBufferPointer(rebasing: value[..<cut]), second = UnsafeRawBufferPointer(rebasing: value[cut...])
    let lines = DeflateNegotiation.negotiate([first, second])
    let expected = DeflateNegotiation.negotiate(first) ?? DeflateNegotiation.negotiate(second)
    require(lines == expected, "two lines \(String(describing: lines)) != \(String(describing: expected))")
}

private func checkInflate(_ compressed: UnsafeRawBufferPointer, setting: Int) {
    // Limits from 0 to about 1 MiB, small ones often.
    let limit = setting & 0x8000 == 0 ? setting & 0x3FF : (setting & 0x7FFF) << 5
    switch inflater.inflate(compressed, limit: limit) {
    case .message(let bytes):
        require(bytes.count <= limit, "\(bytes.count) bytes over the limit \(limit)")
        require(inflater.bytesInflated == bytes.count, "bytesInflated")
        let copy = Array(bytes)
        guard case .message(let exact) = inflater.inflate(compressed, limit: copy.count), Array(exact) == copy else {
            fatalError("property violated: not the same message at limit = its length \(copy.count)")
        }
        if copy.count > 0 {
            guard case .tooLarge = inflater.inflate(compressed, limit: copy.count - 1) else {
                fatalError("property violated: a \(copy.count)-byte message not too large for limit \(copy.count - 1)")
            }
        }
    case .tooLarge:
        require(inflater.bytesInflated == limit + 1, "tooLarge after \(inflater.bytesInflated) bytes, limit \(limit)")
    case .invalid:
        require(inflater.bytesInflated <= limit, "invalid after \(inflater.bytesInflated) bytes, limit \(limit)")
    }
}

private func checkRoundTrip(_ message: UnsafeRawBufferPointer, setting: Int) {
    let bits = 8 + (setting >> 8) % 8                  // 8...15
    let level = Int32(setting & 0xFF) % 11 - 1         // -1...9
    let key = bits << 8 | Int(level + 1)
    let deflater = deflaters[key] ?? {
        let d = MessageDeflater(DeflateParameters(serverMaxWindowBits: UInt8(bits)), level: level)
        deflaters[key] = d
        return d
    }()
    let compressed = deflater.compress(message)
    require(compressed.count <= deflater.maxCompressedSize(message.count), "over maxCompressedSize")
    require(compressed.count < 4 || Array(compressed.suffix(4)) != [0, 0, 0xFF, 0xFF], "tail not stripped")
    let back: [UInt8]? = compressed.withUnsafeBytes { raw in
        if case .message(let bytes) = inflater.inflate(raw, limit: message.count) { return Array(bytes) }
        return nil
    }
    require(back == Array(message), "round trip of \(message.count) bytes, \(bits) bits, level \(level)")
    if bits == 8 { require(inflateEightBit(compressed, count: message.count) == Array(message), "8-bit window") }
}

/// A raw inflate with a true 8-bit window (zlib inflates with one, though it cannot deflate).
private func inflateEightBit(_ compressed: [UInt8], count: Int) -> [UInt8]? {
    var stream = z_stream()
    guard tw_inflate_init2(&stream, -8) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var input = compressed + [0, 0, 0xFF, 0xFF]
    var output = [UInt8](repeating: 0, count: count + 1)
    let status: Int32 = input.withUnsafeMutableBufferPointer { i in
        output.withUnsafeMutableBufferPointer { o in
            stream.next_in = i.baseAddress
            stream.avail_in = uInt(i.count)
            stream.next_out = o.baseAddress
            stream.avail_out = uInt(o.count)
            return inflate(&stream, Z_SYNC_FLUSH)
        }
    }
    guard status == Z_OK || status == Z_STREAM_END || (status == Z_BUF_ERROR && count == 0) else { return nil }
    return Array(output[..<Int(stream.total_out)])
}
