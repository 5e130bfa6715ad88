/// The lifecycle of one WebSocket connection after the handshake (RFC 6455 §5-§7), as a
/// state machine: feed it bytes, get back what to do. The reactor carries the actions
/// out (writes frames, closes sockets); this type touches no socket, so its tests need none.
public struct WebSocketSession: Sendable {
    public enum State: UInt8, Sendable {
        /// Messages flow both ways.
        case open
        /// We sent Close and wait for the peer's (§7.1.2); incoming data is discarded.
        case closeSent
        /// The closing handshake is done or the connection failed: nothing more is read.
        case closed
    }

    /// What the connection should do next.
    public enum Action: Equatable, Sendable {
        /// Keep `buffer[position...]` and wait for more bytes.
        case needMore
        /// A piece of a data message (see `FrameEvent.data`).
        case message(opcode: Opcode, start: Int, count: Int, first: Bool, last: Bool)
        /// Answer a ping with a pong carrying the same payload (§5.5.2, §5.5.3).
        case sendPong(start: Int, count: Int)
        /// The peer answered a ping (or sent an unsolicited pong, which §5.5.3 allows).
        case pongReceived
        /// The peer started the closing handshake: send Close with `code` (its own code
        /// echoed, or 1000 when it sent none), then close the TCP connection (§7.1.1: the
        /// server closes first).
        case replyCloseAndDisconnect(code: CloseCode)
        /// The peer answered our Close: close the TCP connection.
        case disconnect
        /// The peer broke the protocol: send Close with `error.closeCode`, then disconnect.
        case fail(WebSocketError)
    }

    public var state: State = .open
    public var decoder: FrameDecoder

    /// `permessageDeflate`: the connection negotiated RFC 7692, so RSV1 marks compressed messages.
    @inlinable
    public init(role: WebSocketRole = .server, maxMessageSize: UInt64, permessageDeflate: Bool = false) {
        decoder = FrameDecoder(role: role, maxMessageSize: maxMessageSize, permessageDeflate: permessageDeflate)
    }

    /// Whether the message `.message` is delivering is compressed (RSV1 on its first frame).
    /// Its pieces are then deflate bytes: join them and pass the whole to `inflate`. Valid from
    /// the first piece through the last, until the next message begins.
    @inlinable public var messageIsCompressed: Bool { decoder.messageIsCompressed }

    /// What `inflate` made of a compressed message.
    public enum Inflated {
        /// The message's bytes, in the inflater's buffer: valid until its next use.
        case message(UnsafeRawBufferPointer)
        /// Fail the connection like `Action.fail`: 1009 over the size limit, 1007 for corrupt
        /// data or text that is not UTF-8. The session is closed already.
        case fail(WebSocketError)
    }

    /// Inflates a whole compressed message (its pieces joined, in order) with the thread's
    /// shared inflater. `maxMessageSize` applies to the inflated size, and the inflater stops
    /// there, so a decompression bomb costs at most that much; text is UTF-8 checked after.
    public mutating func inflate(_ compressed: UnsafeRawBufferPointer, opcode: Opcode, with inflater: MessageInflater) -> Inflated {
        let limit = decoder.maxMessageSize > UInt64(Int.max) ? Int.max : Int(decoder.maxMessageSize)
        let error: WebSocketError
        switch inflater.inflate(compressed, limit: limit) {
        case .message(let bytes):
            if opcode != .text || UTF8Validator.isValid(bytes) { return .message(bytes) }
            error = .invalidUTF8
        case .tooLarge:
            error = .messageTooBig(limit: decoder.maxMessageSize)
        case .invalid:
            error = .invalidCompressedData
        }
        state = .closed
        return .fail(error)
    }

    /// Decodes the next action from `buffer[position...]`.
    @inlinable
    public mutating func next(_ buffer: UnsafeMutableRawBufferPointer, _ position: inout Int) -> Action {
        while true {
            if state == .closed { return .needMore }
            switch decoder.next(buffer, &position) {
            case .needMore:
                return .needMore
            case let .data(opcode, start, count, first, last):
                // After our Close, data is read (to find the peer's Close) but dropped.
                if state == .closeSent { continue }
                return .message(opcode: opcode, start: start, count: count, first: first, last: last)
            case let .control(opcode, start, count):
                switch opcode {
                case .ping:
                    if state == .closeSent { continue }
                    return .sendPong(start: start, count: count)
                case .pong:
                    return .pongReceived
                case .close:
                    let wasOpen = state == .open
                    state = .closed
                    if !wasOpen { return .disconnect }
                    var code = CloseCode.normalClosure
                    if count >= 2 {
                        code = CloseCode(rawValue: UInt16(buffer[start]) << 8 | UInt16(buffer[start + 1]))
                    }
                    return .replyCloseAndDisconnect(code: code)
                default:
                    continue
                }
            case .failure(let error):
                state = .closed
                return .fail(error)
            }
        }
    }

    /// Starts a closing handshake from our side; false if one is already under way.
    @inlinable
    public mutating func beginClose() -> Bool {
        guard state == .open else { return false }
        state = .closeSent
        return true
    }

    /// Marks the session closed without a handshake (the socket failed or timed out).
    @inlinable
    public mutating func abandon() {
        state = .closed
    }
}
