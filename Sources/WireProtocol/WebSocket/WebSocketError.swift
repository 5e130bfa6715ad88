/// Everything a peer can get wrong at the frame level, each mapped to exactly one close code.
/// The reason strings go into the Close frame and the log, so they say what was wrong.
public enum WebSocketError: Error, Equatable, Sendable {
    case reservedBitsSet
    /// RSV1 (permessage-deflate) on a continuation or control frame (RFC 7692 §6.1).
    case compressedBitMisplaced
    case reservedOpcode(UInt8)
    case unmaskedClientFrame
    case maskedServerFrame
    case controlFrameTooLong
    case fragmentedControlFrame
    case unexpectedContinuation
    case expectedContinuation
    case payloadLengthTooLarge
    case messageTooBig(limit: UInt64)
    case invalidUTF8
    case closePayloadTooShort
    case invalidCloseCode(UInt16)
    case invalidCloseReason
    /// A compressed message that is not a valid deflate stream (RFC 7692 §7.2.2).
    case invalidCompressedData

    /// The close code that §7.4.1 prescribes for this failure.
    @inlinable
    public var closeCode: CloseCode {
        switch self {
        case .invalidUTF8, .invalidCloseReason, .invalidCompressedData: return .invalidPayload
        case .messageTooBig: return .messageTooBig
        default: return .protocolError
        }
    }

    /// A short human-readable reason; Close-frame reasons must fit in 123 bytes.
    public var reason: String {
        switch self {
        case .reservedBitsSet: return "reserved bits set without a negotiated extension"
        case .compressedBitMisplaced: return "RSV1 on a continuation or control frame"
        case .reservedOpcode(let op): return "reserved opcode \(op)"
        case .unmaskedClientFrame: return "client frames must be masked"
        case .maskedServerFrame: return "server frames must not be masked"
        case .controlFrameTooLong: return "control frame payload over 125 bytes"
        case .fragmentedControlFrame: return "control frames must not be fragmented"
        case .unexpectedContinuation: return "continuation frame without a message to continue"
        case .expectedContinuation: return "new data frame while a fragmented message is open"
        case .payloadLengthTooLarge: return "64-bit payload length has its top bit set"
        case .messageTooBig(let limit): return "message larger than \(limit) bytes"
        case .invalidUTF8: return "text message is not valid UTF-8"
        case .closePayloadTooShort: return "close frame payload of 1 byte"
        case .invalidCloseCode(let code): return "invalid close code \(code)"
        case .invalidCloseReason: return "close reason is not valid UTF-8"
        case .invalidCompressedData: return "compressed message is not a valid deflate stream"
        }
    }
}
