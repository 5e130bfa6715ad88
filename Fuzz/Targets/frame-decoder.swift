// FrameDecoder (both roles) and WebSocketSession. Input: byte 0 picks the configuration,
// bytes 1-2 seed the chunking, the rest is the byte stream from the peer. The stream is
// decoded whole and again in chunks (each chunk appended to the unconsumed rest, as a
// reactor does between reads); checked:
//  - the position never goes backwards or past the end; every piece lies in the bytes
//    just consumed; control frames are at most 125 bytes and close payloads valid;
//  - message pieces are well formed (first/last, one opcode per message, never over
//    maxMessageSize), and a finished text message is valid UTF-8 by Swift's own decoder;
//  - once failed (or closed, for the session), nothing more comes out, whatever follows;
//  - the transcript (whole messages, control frames, session actions, the failure) is the
//    same whatever the chunking;
//  - with permessage-deflate (config bit 6): a compressed message keeps its mark on every
//    piece and stays within the compressed wire limit; the session inflates it (shared
//    inflater) to at most maxMessageSize bytes, valid UTF-8 for text, or fails 1009/1007.
//    Without it, nothing is ever marked compressed.
import WireProtocol

nonisolated(unsafe) private let inflater = MessageInflater(initialCapacity: 256, retainedCapacity: 4096)

private let messageSizes: [UInt64] = [0, 1, 125, 126, 1000, 65536, 1 << 20, .max]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 3 else { return 0 }
    let config = data[0]
    let role: WebSocketRole = config & 1 == 0 ? .server : .client
    let maxMessageSize = messageSizes[Int(config >> 1) & 7]
    let useSession = config & 0x10 != 0
    let closeFirst = config & 0x20 != 0          // the session starts its own closing handshake
    let deflate = config & 0x40 != 0             // permessage-deflate negotiated
    let stream = Array(UnsafeBufferPointer(start: data + 3, count: size - 3))
    let seed = UInt64(data[1]) << 8 | UInt64(data[2])

    var run = StreamRun(role: role, maxMessageSize: maxMessageSize, useSession: useSession, closeFirst: closeFirst, deflate: deflate)
    let whole = run.decode(stream, chunker: nil)
    var chunker = Chunker(seed: seed)
    run = StreamRun(role: role, maxMessageSize: maxMessageSize, useSession: useSession, closeFirst: closeFirst, deflate: deflate)
    let chunked = run.decode(stream, chunker: &chunker)
    require(whole == chunked, "whole \(whole) != chunked \(chunked)")
    return 0
}

/// What came out of a stream, independent of how it was split into reads.
struct Transcript: Equatable, CustomStringConvertible {
    enum Item: Equatable {
        case message(Opcode, [UInt8])
        /// A compressed message: its wire bytes (decoder), or its inflated bytes (session).
        case compressed(Opcode, [UInt8])
        case control(Opcode, [UInt8])
        case pong([UInt8])
        case pongReceived
        case replyClose(UInt16)
        case disconnect
        case failure(WebSocketError)
    }

    var items: [Item] = []
    /// The unfinished message at the end: compared only when nothing failed (failing fast
    /// on bad UTF-8 delivers a prefix whose length depends on the chunking).
    var open: (Opcode, [UInt8])?

    static func == (a: Transcript, b: Transcript) -> Bool {
        a.items == b.items && a.open?.0 == b.open?.0 && a.open?.1 == b.open?.1
    }

    var description: String { "\(items.count) items \(items.suffix(3)), open \(String(describing: open))" }
}

struct StreamRun {
    var decoder: FrameDecoder
    var session: WebSocketSession?
    let maxMessageSize: UInt64
    let deflate: Bool
    var transcript = Transcript()
    var openCompressed = false
    var finished = false      // failed, or (session) closed

    init(role: WebSocketRole, maxMessageSize: UInt64, useSession: Bool, closeFirst: Bool, deflate: Bool) {
        self.maxMessageSize = maxMessageSize
        self.deflate = deflate
        decoder = FrameDecoder(role: role, maxMessageSize: maxMessageSize, permessageDeflate: deflate)
        if useSession {
            session = WebSocketSession(role: role, maxMessageSize: maxMessageSize, permessageDeflate: deflate)
            if closeFirst { require(session!.beginClose(), "beginClose on a new session") }
        }
    }

    mutating func decode(_ stream: [UInt8], chunker: UnsafeMutablePointer<Chunker>?) -> Transcript {
        var pending: [UInt8] = []
        var offset = 0
        repeat {
            let n = chunker?.pointee.size(remaining: stream.count - offset) ?? stream.count - offset
            pending += stream[offset..<(offset + n)]
            offset += n
            let consumed = pending.withUnsafeMutableBytes { step($0) }
            pending.removeFirst(consumed)
        } while offset < stream.count
        if finished { transcript.open = nil }
        return transcript
    }

    /// Decodes until the decoder wants more bytes; returns how many were consumed.
    mutating func step(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        var position = 0
        while true {
            let before = position
            if session != nil {
                let action = session!.next(buffer, &position)
                require(position >= before && position <= buffer.count, "position \(before) -> \(position) of \(buffer.count)")
                if finished {
                    require(action == .needMore && position == before, "\(action) after the session closed")
                    return position
                }
                switch action {
                case .needMore: return position
                case let .message(opcode, start, count, first, last):
                    piece(buffer, before, position, opcode, start, count, first, last)
                case let .sendPong(start, count):
                    require(start >= before + 2 && start + count == position && count <= 125, "pong \(start)+\(count)")
                    transcript.items.append(.pong(Array(buffer[start..<(start + count)])))
                case .pongReceived:
                    transcript.items.append(.pongReceived)
                case .replyCloseAndDisconnect(let code):
                    transcript.items.append(.replyClose(code.rawValue))
                    closed()
                case .disconnect:
                    transcript.items.append(.disconnect)
                    closed()
                case .fail(let error):
                    transcript.items.append(.failure(error))
                    closed()
                }
            } else {
                let event = decoder.next(buffer, &position)
                require(position >= before && position <= buffer.count, "position \(before) -> \(position) of \(buffer.count)")
                if finished {
                    require(event == .needMore && position == before, "\(event) after the decoder failed")
                    return position
                }
                switch event {
                case .needMore: return position
                case let .data(opcode, start, count, first, last):
                    piece(buffer, before, position, opcode, start, count, first, last)
                case let .control(opcode, start, count):
                    require(opcode.isControl && start >= before + 2 && start + count == position && count <= 125,
                            "control \(opcode) \(start)+\(count) after \(before), now \(position)")
                    let payload = Array(buffer[start..<(start + count)])
                    if opcode == .close {
                        require(payload.count != 1, "close payload of 1 byte")
                        if payload.count >= 2 {
                            require(CloseCode(rawValue: UInt16(payload[0]) << 8 | UInt16(payload[1])).isValidOnWire, "close code")
                            require(String(validating: payload[2...], as: UTF8.self) != nil, "close reason not UTF-8")
                        }
                    }
                    transcript.items.append(.control(opcode, payload))
                case .failure(let error):
                    transcript.items.append(.failure(error))
                    finished = true
                }
            }
        }
    }

    mutating func closed() {
        require(session!.state == .closed, "session not closed after its last action")
        finished = true
    }

    mutating func piece(_ buffer: UnsafeMutableRawBufferPointer, _ before: Int, _ position: Int,
                        _ opcode: Opcode, _ start: Int, _ count: Int, _ first: Bool, _ last: Bool) {
        require(opcode == .text || opcode == .binary, "data piece with opcode \(opcode)")
        require(start >= before && count >= 0 && start + count == position, "piece \(start)+\(count) after \(before), now \(position)")
        require(first == (transcript.open == nil), "first=\(first) with open message \(String(describing: transcript.open))")
        let compressed = session?.messageIsCompressed ?? decoder.messageIsCompressed
        require(deflate || !compressed, "a message marked compressed without permessage-deflate")
        if first {
            transcript.open = (opcode, [])
            openCompressed = compressed
        }
        require(compressed == openCompressed, "the compressed mark changed inside a message")
        require(transcript.open!.0 == opcode, "opcode changed inside a message")
        transcript.open!.1 += buffer[start..<(start + count)]
        let limit = compressed ? decoder.compressedSizeLimit : maxMessageSize
        require(UInt64(transcript.open!.1.count) <= limit, "message over \(limit) bytes")
        if last {
            let (op, bytes) = transcript.open!
            transcript.open = nil
            if compressed {
                guard session != nil else {
                    transcript.items.append(.compressed(op, bytes))
                    return
                }
                switch bytes.withUnsafeBytes({ session!.inflate($0, opcode: op, with: inflater) }) {
                case .message(let inflated):
                    require(UInt64(inflated.count) <= maxMessageSize, "inflated \(inflated.count) bytes over \(maxMessageSize)")
                    if op == .text { require(String(validating: inflated, as: UTF8.self) != nil, "inflated text is not UTF-8") }
                    transcript.items.append(.compressed(op, Array(inflated)))
                case .fail(let error):
                    require([.messageTooBig(limit: maxMessageSize), .invalidCompressedData, .invalidUTF8].contains(error), "inflate failed with \(error)")
                    transcript.items.append(.failure(error))
                    closed()
                }
                return
            }
            if op == .text { require(String(validating: bytes, as: UTF8.self) != nil, "text message is not UTF-8") }
            transcript.items.append(.message(op, bytes))
        }
    }
}
