import Glibc
import Synchronization
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

    /// The permessage-deflate form of the frame (RSV1 set, payload compressed with no context
    /// takeover), made once by whichever reactor first needs it and shared by all: a block
    /// holding its length then its bytes; `notCompressed` when compressing did not pay.
    private let compressedBlock = Atomic<UnsafeMutableRawPointer?>(nil)
    /// Never a real block (malloc never returns 1).
    private static var notCompressed: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: 1)! }

    deinit {
        free(bytes)
        if let block = compressedBlock.load(ordering: .acquiring), block != Self.notCompressed { free(block) }
    }

    /// The compressed frame, made by `make` on first use: `make` gets the JSON and returns a
    /// malloc'd block (an `Int` length, then the frame) or nil when compression does not pay.
    /// Reactors may race to make it; one block wins and the others are freed.
    public func compressedFrame(orMake make: (UnsafeRawBufferPointer) -> UnsafeMutableRawPointer?) -> UnsafeRawBufferPointer? {
        var block = compressedBlock.load(ordering: .acquiring)
        if block == nil {
            let made = make(json) ?? Self.notCompressed
            let (won, current) = compressedBlock.compareExchange(expected: nil, desired: made, ordering: .acquiringAndReleasing)
            if !won && made != Self.notCompressed { free(made) }
            block = won ? made : current
        }
        guard let block, block != Self.notCompressed else { return nil }
        return UnsafeRawBufferPointer(start: block + 8, count: block.load(as: Int.self))
    }

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
