import Glibc
import WireProtocol

/// One published message, serialised and framed once: the WebSocket text frame (header
/// and JSON) that every subscriber on every core is sent, unchanged. Immutable after
/// creation; reactors hold it through retained `Unmanaged` references in their logs.
public final class BroadcastFrame: @unchecked Sendable {
    // @unchecked: immutable after init; the bytes are never written again.

    /// Header + payload, ready for writev.
    public let bytes: UnsafeMutableRawPointer
    public let count: Int
    /// Where the JSON starts (after the frame header).
    public let payloadOffset: Int
    public let seq: UInt64
    public let channel: Channel
    /// Hash of `data.symbol`, 0 when the message has none.
    public let symbolHash: UInt64
    /// Messages with the same key supersede each other under conflation
    /// (channel, symbol, and timeframe for candles).
    public let conflationKey: UInt64
    /// Monotonic nanoseconds when the publish was accepted (broadcast latency).
    public let acceptedAt: UInt64
    /// The account a private message is for (PROTOCOL.md "Private messages"); nil: public.
    public let account: String?
    /// Hash of `account`, 0 when public: routing compares this first, then the name.
    public let accountHash: UInt64

    public init(
        json: UnsafeRawBufferPointer, seq: UInt64, channel: Channel, symbolHash: UInt64, conflationKey: UInt64, acceptedAt: UInt64,
        account: String? = nil
    ) {
        let header = FrameEncoder.headerSize(payloadLength: json.count, masked: false)
        count = header + json.count
        bytes = malloc(count)!
        FrameEncoder.writeHeader(into: bytes, opcode: .text, payloadLength: json.count)
        if json.count > 0 { (bytes + header).copyMemory(from: json.baseAddress!, byteCount: json.count) }
        payloadOffset = header
        self.seq = seq
        self.channel = channel
        self.symbolHash = symbolHash
        self.conflationKey = conflationKey
        self.acceptedAt = acceptedAt
        self.account = account
        accountHash = account.map { AccountHash.hash($0) } ?? 0
    }

    deinit { free(bytes) }

    /// The JSON text.
    public var json: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: bytes + payloadOffset, count: count - payloadOffset)
    }
}

/// Account names hashed for routing; never 0, which means "public".
public enum AccountHash {
    @inlinable
    public static func hash(_ account: String) -> UInt64 {
        let h = SymbolHash.hash(account) ^ 0xA5A5_5A5A_C3C3_3C3C
        return h == 0 ? 1 : h
    }
}
