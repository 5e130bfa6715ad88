/// Which side of the connection decodes: servers require masked frames, clients forbid them (§5.1).
public enum WebSocketRole: Sendable {
    case server
    case client
}

/// What the decoder found next in the bytes it was given.
public enum FrameEvent: Equatable, Sendable {
    /// Everything decodable was decoded; keep `buffer[position...]` and call again with more bytes.
    case needMore
    /// A piece of a data message's payload, unmasked in place at `buffer[start ..< start+count]`.
    /// `first` marks the message's first piece and `last` its end (the final frame's last byte):
    /// both true means the whole message is in this one piece.
    case data(opcode: Opcode, start: Int, count: Int, first: Bool, last: Bool)
    /// A complete control frame (ping, pong or close), payload unmasked in place.
    /// A close frame's payload has already been validated (§5.5.1, §7.4).
    case control(opcode: Opcode, start: Int, count: Int)
    /// The peer broke the protocol; fail the connection with `error.closeCode`.
    case failure(WebSocketError)
}

/// Streaming RFC 6455 frame decoder.
///
/// Data payloads are delivered in pieces as they arrive, unmasked and (for text) UTF-8
/// validated in place, so a connection never buffers a partial data frame: the only bytes
/// it keeps between reads are a partial header (at most 14 bytes) or an incomplete control
/// frame (at most 131 bytes). Control frames are delivered whole; they may arrive between
/// the fragments of a data message (§5.4). The state is a few words per connection.
///
/// With `permessageDeflate` (RFC 7692), RSV1 on a message's first frame marks it compressed
/// (`messageIsCompressed`): its pieces are the compressed bytes, not UTF-8 checked here; the
/// caller inflates the whole message (`WebSocketSession.inflate`), which applies the size limit
/// and the UTF-8 check to the inflated bytes.
public struct FrameDecoder: Sendable {
    public let role: WebSocketRole
    /// The largest message, summed over its fragments, before failing with 1009. For a
    /// compressed message it bounds the inflated size; on the wire it may take a little more
    /// (`compressedSizeLimit`), as incompressible data grows slightly when deflated.
    public var maxMessageSize: UInt64
    /// RSV1 marks a compressed message (RFC 7692 §6); off, RSV1 fails with 1002 as RFC 6455 says.
    public var permessageDeflate: Bool

    // The frame being read.
    @usableFromInline var remaining: UInt64 = 0          // payload bytes left in the current data frame
    @usableFromInline var maskKey: UInt32 = 0
    @usableFromInline var maskPhase: UInt8 = 0
    @usableFromInline var inPayload = false
    @usableFromInline var frameFin = false
    // The message being read (possibly over several frames).
    @usableFromInline var messageOpcode: UInt8 = 0       // 0: no message open
    @usableFromInline var messageLength: UInt64 = 0
    @usableFromInline var messageStarted = false         // a piece of it was already delivered
    @usableFromInline var messageCompressed = false      // RSV1 on its first frame; kept until the next message
    @usableFromInline var utf8 = UTF8Validator()
    @usableFromInline var failed = false

    @inlinable
    public init(role: WebSocketRole, maxMessageSize: UInt64, permessageDeflate: Bool = false) {
        self.role = role
        self.maxMessageSize = maxMessageSize
        self.permessageDeflate = permessageDeflate
    }

    /// True while a data message has been started but not finished.
    @inlinable public var isInsideMessage: Bool { messageOpcode != 0 }

    /// Whether the message whose pieces are being delivered is compressed: valid from its
    /// first piece until the next message begins (so also with its last piece).
    @inlinable public var messageIsCompressed: Bool { messageCompressed }

    /// The wire size allowed for a compressed message: `maxMessageSize` plus deflate's worst
    /// case growth (5 bytes per 16 KiB stored block, rounded up generously), saturating.
    @inlinable public var compressedSizeLimit: UInt64 {
        let (sum, overflow) = maxMessageSize.addingReportingOverflow((maxMessageSize >> 10) &+ 64)
        return overflow ? .max : sum
    }

    /// Decodes the next event from `buffer`, starting at `position` and advancing it past
    /// what was consumed. After `.failure` the decoder stays failed.
    @inlinable
    public mutating func next(_ buffer: UnsafeMutableRawBufferPointer, _ position: inout Int) -> FrameEvent {
        if failed { return .needMore }
        guard let base = buffer.baseAddress else { return .needMore }
        let end = buffer.count
        if inPayload {
            return payloadPiece(base, end, &position)
        }
        // Header: 2 bytes, then 0/2/8 bytes of extended length, then 0/4 bytes of mask.
        let available = end &- position
        if available < 2 { return .needMore }
        let b0 = base.load(fromByteOffset: position, as: UInt8.self)
        let b1 = base.load(fromByteOffset: position &+ 1, as: UInt8.self)
        let rawOpcode = b0 & 0x0F
        var compressed = false
        if b0 & 0x70 != 0 {
            // RFC 7692 §6: RSV1 only with the extension, and only on a message's first frame.
            guard b0 & 0x70 == 0x40, permessageDeflate else { return fail(.reservedBitsSet) }
            if rawOpcode == 0 || rawOpcode & 0x8 != 0 { return fail(.compressedBitMisplaced) }
            compressed = true
        }
        let fin = b0 & 0x80 != 0
        let masked = b1 & 0x80 != 0
        switch role {
        case .server where !masked: return fail(.unmaskedClientFrame)
        case .client where masked: return fail(.maskedServerFrame)
        default: break
        }
        let length7 = b1 & 0x7F
        let isControl = rawOpcode & 0x8 != 0
        if isControl {
            // Control frames: checked before waiting for the rest (§5.5).
            guard rawOpcode <= 0xA else { return fail(.reservedOpcode(rawOpcode)) }
            if !fin { return fail(.fragmentedControlFrame) }
            if length7 > 125 { return fail(.controlFrameTooLong) }
        } else if rawOpcode > 0x2 {
            return fail(.reservedOpcode(rawOpcode))
        }
        var headerLength = 2
        var length = UInt64(length7)
        if length7 == 126 {
            headerLength = 4
            if available < 4 { return .needMore }
            length = UInt64(base.load(fromByteOffset: position &+ 2, as: UInt8.self)) << 8
                | UInt64(base.load(fromByteOffset: position &+ 3, as: UInt8.self))
        } else if length7 == 127 {
            headerLength = 10
            if available < 10 { return .needMore }
            length = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: position &+ 2, as: UInt64.self))
            if length & (1 << 63) != 0 { return fail(.payloadLengthTooLarge) }
        }
        var key: UInt32 = 0
        if masked {
            if available < headerLength &+ 4 { return .needMore }
            key = base.loadUnaligned(fromByteOffset: position &+ headerLength, as: UInt32.self)
            headerLength &+= 4
        }

        if isControl {
            let total = headerLength &+ Int(length)
            if available < total { return .needMore }
            let start = position &+ headerLength
            if masked { applyMask(base + start, count: Int(length), key: key, phase: 0) }
            position &+= total
            let opcode = Opcode(rawValue: rawOpcode)!
            if opcode == .close {
                if let error = Self.validateClosePayload(UnsafeRawBufferPointer(start: base + start, count: Int(length))) {
                    return fail(error)
                }
            }
            return .control(opcode: opcode, start: start, count: Int(length))
        }

        // Data frame header.
        if rawOpcode == 0 {
            if messageOpcode == 0 { return fail(.unexpectedContinuation) }
        } else {
            if messageOpcode != 0 { return fail(.expectedContinuation) }
            messageOpcode = rawOpcode
            messageStarted = false
            messageCompressed = compressed
        }
        let limit = messageCompressed ? compressedSizeLimit : maxMessageSize
        if length > limit || messageLength > limit &- length {
            return fail(.messageTooBig(limit: maxMessageSize))
        }
        messageLength &+= length
        position &+= headerLength
        remaining = length
        maskKey = key
        maskPhase = 0
        frameFin = fin
        inPayload = true
        return payloadPiece(base, end, &position)
    }

    @inlinable
    mutating func payloadPiece(_ base: UnsafeMutableRawPointer, _ end: Int, _ position: inout Int) -> FrameEvent {
        let available = end &- position
        if available == 0 && remaining > 0 { return .needMore }
        let count = Int(min(UInt64(available), remaining))
        let start = position
        if role == .server {
            maskPhase = UInt8(applyMask(base + start, count: count, key: maskKey, phase: Int(maskPhase)))
        }
        let opcode: Opcode = messageOpcode == 1 ? .text : .binary
        // Compressed text is checked once inflated (WebSocketSession.inflate).
        let checkUTF8 = opcode == .text && !messageCompressed
        if checkUTF8 && !utf8.feed(UnsafeRawBufferPointer(start: base + start, count: count)) {
            return fail(.invalidUTF8)
        }
        remaining &-= UInt64(count)
        position &+= count
        let frameDone = remaining == 0
        let last = frameDone && frameFin
        if frameDone { inPayload = false }
        if last && checkUTF8 && !utf8.isComplete {
            return fail(.invalidUTF8)
        }
        let first = !messageStarted
        messageStarted = true
        if last {
            messageOpcode = 0
            messageLength = 0
            utf8 = UTF8Validator()
        }
        return .data(opcode: opcode, start: start, count: count, first: first, last: last)
    }

    @inlinable
    mutating func fail(_ error: WebSocketError) -> FrameEvent {
        failed = true
        return .failure(error)
    }

    /// Checks a Close payload: empty, or a valid code followed by a UTF-8 reason (§5.5.1, §7.4).
    @inlinable
    public static func validateClosePayload(_ payload: UnsafeRawBufferPointer) -> WebSocketError? {
        if payload.count == 0 { return nil }
        if payload.count == 1 { return .closePayloadTooShort }
        let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
        if !CloseCode(rawValue: code).isValidOnWire { return .invalidCloseCode(code) }
        if !UTF8Validator.isValid(UnsafeRawBufferPointer(rebasing: payload[2...])) { return .invalidCloseReason }
        return nil
    }
}
