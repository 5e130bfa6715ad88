@testable import WireProtocol

/// The one helper every frame test uses: feeds `bytes` to a decoder in chunks of the given
/// sizes (cycled), and collects what came out: whole messages (pieces joined), control
/// frames, and the first failure. Each chunk is appended to the unconsumed leftover, as
/// a reactor does between reads, so the decoder sees every possible split.
struct DecodeResult: Equatable {
    var messages: [(Opcode, [UInt8])] = []
    var controls: [(Opcode, [UInt8])] = []
    var failure: WebSocketError?
    /// Pieces delivered for data messages (to check streaming).
    var pieces = 0

    static func == (a: DecodeResult, b: DecodeResult) -> Bool {
        a.messages.map { "\($0.0)\($0.1)" } == b.messages.map { "\($0.0)\($0.1)" }
            && a.controls.map { "\($0.0)\($0.1)" } == b.controls.map { "\($0.0)\($0.1)" }
            && a.failure == b.failure
    }
}

func decode(
    _ bytes: [UInt8], chunks: [Int] = [Int.max], role: WebSocketRole = .server,
    maxMessageSize: UInt64 = 1 << 20
) -> DecodeResult {
    var decoder = FrameDecoder(role: role, maxMessageSize: maxMessageSize)
    var result = DecodeResult()
    var pending: [UInt8] = []
    var partial: [UInt8] = []
    var offset = 0
    var chunkIndex = 0
    while offset < bytes.count || (offset == bytes.count && bytes.isEmpty && chunkIndex == 0) {
        let size = min(chunks[chunkIndex % chunks.count], bytes.count - offset)
        chunkIndex += 1
        pending += bytes[offset..<(offset + size)]
        offset += size
        var consumed = 0
        pending.withUnsafeMutableBytes { buffer in
            var position = 0
            loop: while true {
                switch decoder.next(buffer, &position) {
                case .needMore:
                    break loop
                case let .data(opcode, start, count, first, last):
                    if first { partial = [] }
                    partial += buffer[start..<(start + count)]
                    result.pieces += 1
                    if last { result.messages.append((opcode, partial)) }
                case let .control(opcode, start, count):
                    result.controls.append((opcode, Array(buffer[start..<(start + count)])))
                case .failure(let error):
                    result.failure = error
                    break loop
                }
            }
            consumed = position
        }
        if result.failure != nil { return result }
        pending.removeFirst(consumed)
        if bytes.isEmpty { break }
    }
    return result
}

/// A masked client frame, built independently of `FrameEncoder` so encoder bugs cannot hide.
func clientFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D], masked: Bool = true) -> [UInt8] {
    var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
    let maskBit: UInt8 = masked ? 0x80 : 0
    if payload.count < 126 {
        out.append(maskBit | UInt8(payload.count))
    } else if payload.count <= 0xFFFF {
        out.append(maskBit | 126)
        out += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
    } else {
        out.append(maskBit | 127)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((payload.count >> shift) & 0xFF)) }
    }
    if masked {
        out += mask
        for (i, b) in payload.enumerated() { out.append(b ^ mask[i % 4]) }
    } else {
        out += payload
    }
    return out
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
