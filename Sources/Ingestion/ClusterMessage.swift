import TradingStream

/// One validated message as it travels through the cluster's stream: what the publishing
/// node knew about it (channel, keys, text, its accept time), not yet framed, because its
/// `seq` is only known once the publish script ran. Every node, the publisher too, frames
/// it from these bytes, so every node's envelope is byte-for-byte the same.
///
///     version(1) channel(1) flags(1) acceptedWallNanoseconds(8, LE)
///     account symbol timeframe side message   ; each: u32 LE (0: absent, n+1: n bytes) + bytes
///     data                                    ; the `data` JSON object, to the end
///
/// Binary rather than JSON: receiving nodes decode it per message, and this costs a few
/// loads instead of a JSON parse.
struct ClusterMessage: Sendable, Equatable {
    static let version: UInt8 = 1

    var channel: Channel
    var keys: StreamPublisher.Keys
    var message: String?
    /// Wall-clock ns when the publishing node accepted it: the envelope's timestamp, and
    /// (against this node's clock) the start of its broadcast latency.
    var acceptedWallNanoseconds: UInt64
    var data: ArraySlice<UInt8>

    static func == (a: ClusterMessage, b: ClusterMessage) -> Bool {
        a.channel == b.channel && a.keys.account == b.keys.account && a.keys.symbol == b.keys.symbol
            && a.keys.timeframe == b.keys.timeframe && a.keys.side == b.keys.side && a.keys.closed == b.keys.closed
            && a.message == b.message && a.acceptedWallNanoseconds == b.acceptedWallNanoseconds && a.data == b.data
    }

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + 64)
        out.append(Self.version)
        out.append(channel.rawValue)
        out.append(keys.closed ? 1 : 0)
        withUnsafeBytes(of: acceptedWallNanoseconds.littleEndian) { out.append(contentsOf: $0) }
        for field in [keys.account, keys.symbol, keys.timeframe, keys.side, message] {
            guard let field else { Self.appendLength(0, to: &out); continue }
            Self.appendLength(UInt32(field.utf8.count) + 1, to: &out)
            out.append(contentsOf: field.utf8)
        }
        out.append(contentsOf: data)
        return out
    }

    /// Decodes a payload; nil for anything malformed (a stream written by another
    /// version, or not by Tickwire at all): never traps on hostile bytes.
    init?(_ bytes: ArraySlice<UInt8>) {
        var i = bytes.startIndex
        guard bytes.count >= 11, bytes[i] == Self.version, let channel = Channel(rawValue: bytes[i + 1]) else { return nil }
        let closed = bytes[i + 2] & 1 != 0
        var wall: UInt64 = 0
        for k in 0..<8 { wall |= UInt64(bytes[i + 3 + k]) << (8 * UInt64(k)) }
        i += 11
        var fields: [String?] = []
        for _ in 0..<5 {
            guard bytes.endIndex - i >= 4 else { return nil }
            var n: UInt32 = 0
            for k in 0..<4 { n |= UInt32(bytes[i + k]) << (8 * UInt32(k)) }
            i += 4
            if n == 0 { fields.append(nil); continue }
            let count = Int(n - 1)
            guard bytes.endIndex - i >= count else { return nil }
            fields.append(String(decoding: bytes[i..<(i + count)], as: UTF8.self))
            i += count
        }
        guard i < bytes.endIndex else { return nil }
        self.channel = channel
        keys = StreamPublisher.Keys(symbol: fields[1], timeframe: fields[2], side: fields[3], closed: closed, account: fields[0])
        message = fields[4]
        acceptedWallNanoseconds = wall
        data = bytes[i...]
    }

    init(channel: Channel, keys: StreamPublisher.Keys, message: String?, acceptedWallNanoseconds: UInt64, data: ArraySlice<UInt8>) {
        self.channel = channel
        self.keys = keys
        self.message = message
        self.acceptedWallNanoseconds = acceptedWallNanoseconds
        self.data = data
    }

    private static func appendLength(_ n: UInt32, to out: inout [UInt8]) {
        withUnsafeBytes(of: n.littleEndian) { out.append(contentsOf: $0) }
    }
}
