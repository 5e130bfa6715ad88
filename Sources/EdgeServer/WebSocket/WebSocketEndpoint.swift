import Glibc
import Logging
import Reactor
import WireProtocol

/// WebSocket frames on a reactor: runs the connection's `WebSocketSession` over what was
/// read, hands complete messages to their endpoint (`/ws` or `/echo`), answers pings, and
/// reports the peer's Close or a protocol failure to the connection's lifecycle.
final class WebSocketEndpoint {
    private unowned(unsafe) let worker: Worker
    private let output: OutputFlusher
    private let pool: BufferPool
    private let stats: WorkerStats

    init(worker: Worker, output: OutputFlusher) {
        self.worker = worker
        self.output = output
        pool = worker.pool
        stats = worker.stats
    }

    /// Runs the session over `buffer[from...]` and carries out its actions. Returns the
    /// position reached (the rest is a partial frame to keep).
    func process(_ c: UnsafeMutablePointer<Connection>, _ buffer: UnsafeMutableRawBufferPointer, from start: Int) -> Int {
        var position = start
        while true {
            let action = c.pointee.session.next(buffer, &position)
            switch action {
            case .needMore:
                return position
            case let .message(opcode, start, count, first, last):
                let piece = UnsafeRawBufferPointer(start: buffer.baseAddress! + start, count: count)
                if c.pointee.session.messageIsCompressed {
                    if !inflated(c, opcode, piece, first: first, last: last) { return buffer.count }
                } else if first && last {
                    // The whole message is in this read: use it in place, no copy.
                    onMessage(c, opcode, piece)
                } else {
                    c.pointee.message.append(piece, pool: pool)
                    if last {
                        onMessage(c, opcode, UnsafeRawBufferPointer(c.pointee.message.readable))
                        c.pointee.message.release(pool: pool)
                    }
                }
                if !c.pointee.lifecycle.decodesFrames { return buffer.count }
            case let .sendPong(start, count):
                if c.pointee.lifecycle.acceptsOutgoingFrames {
                    output.enqueueFrame(c, .pong, UnsafeRawBufferPointer(start: buffer.baseAddress! + start, count: count))
                }
            case .pongReceived:
                break
            case .replyCloseAndDisconnect(let code):
                worker.lifecycle.apply(c, c.pointee.lifecycle.receivedClose(code))
                return buffer.count
            case .disconnect:
                // The peer answered our Close: the closing handshake is complete.
                worker.lifecycle.apply(c, c.pointee.lifecycle.receivedClose(.normalClosure))
                return buffer.count
            case .fail(let error):
                stats.connectionErrors.bump()
                if worker.logger.logLevel <= .error {
                    worker.logger.error("WebSocket connection error: \(error.reason)", metadata: [
                        "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "close_code": "\(error.closeCode.rawValue)",
                    ])
                }
                worker.lifecycle.apply(c, c.pointee.lifecycle.protocolError(error), reason: error.reason)
                return buffer.count
            }
        }
    }

    /// A piece of a compressed message: joined like any other, inflated (on this reactor's
    /// shared inflater, bounded by the message size limit) when its last piece is in. False
    /// when the session failed (1009 or 1007).
    private func inflated(_ c: UnsafeMutablePointer<Connection>, _ opcode: Opcode, _ piece: UnsafeRawBufferPointer, first: Bool, last: Bool) -> Bool {
        if !(first && last) {
            c.pointee.message.append(piece, pool: pool)
            if !last { return true }
        }
        let compressed = first && last ? piece : UnsafeRawBufferPointer(c.pointee.message.readable)
        let outcome = c.pointee.session.inflate(compressed, opcode: opcode, with: worker.compression.inflater)
        if !(first && last) { c.pointee.message.release(pool: pool) }
        switch outcome {
        case .message(let bytes):
            stats.messagesInflated.bump()
            onMessage(c, opcode, bytes)
            return c.pointee.lifecycle.decodesFrames
        case .fail(let error):
            stats.connectionErrors.bump()
            if worker.logger.logLevel <= .error {
                worker.logger.error("WebSocket connection error: \(error.reason)", metadata: [
                    "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "close_code": "\(error.closeCode.rawValue)",
                ])
            }
            worker.lifecycle.apply(c, c.pointee.lifecycle.protocolError(error), reason: error.reason)
            return false
        }
    }

    /// A complete message from the peer.
    private func onMessage(_ c: UnsafeMutablePointer<Connection>, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
        stats.messagesReceived.bump()
        guard c.pointee.lifecycle.acceptsOutgoingFrames else { return }
        switch c.pointee.endpoint {
        case .echo:
            output.enqueueFrame(c, opcode, payload)
            stats.messagesSent.bump()
        case .stream:
            worker.stream.onClientMessage(c, opcode, payload)
        case .none:
            break
        }
    }
}
