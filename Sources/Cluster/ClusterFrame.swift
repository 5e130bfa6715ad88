/// What the publish script PUBLISHes: one batch of consecutive messages of one epoch.
///
///     frame = epoch SP first-seq SP count LF { length LF payload }   ; `count` times
///
/// `epoch` is 1-64 bytes of [0-9A-Za-z], `first-seq` and `count` and each `length` are
/// decimal; payloads are raw bytes (lengths, not separators, delimit them, so a payload
/// may hold anything). The messages have seqs first-seq, first-seq+1, ...
public struct ClusterFrame: Sendable, Equatable {
    public let epoch: String
    public let firstSeq: UInt64
    public let payloads: [ArraySlice<UInt8>]

    public var lastSeq: UInt64 { firstSeq + UInt64(payloads.count) - 1 }

    public init(epoch: String, firstSeq: UInt64, payloads: [ArraySlice<UInt8>]) {
        self.epoch = epoch
        self.firstSeq = firstSeq
        self.payloads = payloads
    }

    /// Decodes a frame; nil for anything malformed (never traps on hostile bytes).
    public init?(_ bytes: [UInt8]) {
        var i = bytes.startIndex
        func number(until terminator: UInt8) -> UInt64? {
            var v: UInt64 = 0
            let start = i
            while i < bytes.endIndex, bytes[i] != terminator {
                let d = bytes[i] &- UInt8(ascii: "0")
                guard d < 10, i - start < 19 else { return nil }
                v = v * 10 + UInt64(d)
                i += 1
            }
            guard i > start, i < bytes.endIndex else { return nil }
            i += 1
            return v
        }
        let epochStart = i
        while i < bytes.endIndex, bytes[i] != UInt8(ascii: " ") {
            guard ClusterFrame.isEpochByte(bytes[i]) else { return nil }
            i += 1
        }
        guard i > epochStart, i - epochStart <= 64, i < bytes.endIndex else { return nil }
        let epoch = String(decoding: bytes[epochStart..<i], as: UTF8.self)
        i += 1
        guard let first = number(until: UInt8(ascii: " ")), first > 0,
              let count = number(until: 10), count > 0, count <= UInt64(bytes.count) else { return nil }
        var payloads: [ArraySlice<UInt8>] = []
        payloads.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let n = number(until: 10), n <= UInt64(bytes.endIndex - i) else { return nil }
            payloads.append(bytes[i..<(i + Int(n))])
            i += Int(n)
        }
        guard i == bytes.endIndex else { return nil }
        self.init(epoch: epoch, firstSeq: first, payloads: payloads)
    }

    /// The same bytes the script builds (for tests and for a node that frames locally).
    public func encoded() -> [UInt8] {
        var out = Array("\(epoch) \(firstSeq) \(payloads.count)\n".utf8)
        for p in payloads {
            out.append(contentsOf: "\(p.count)\n".utf8)
            out.append(contentsOf: p)
        }
        return out
    }

    static func isEpochByte(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
    }
}
