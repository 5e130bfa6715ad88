import Glibc
import Logging
import Reactor
import WireProtocol

extension Worker {
    /// Runs the session state machine over `buffer[from...]` and carries out its actions.
    /// Returns the position reached (the rest is a partial frame to keep).
    func processWebSocket(_ c: UnsafeMutablePointer<Connection>, _ buffer: UnsafeMutableRawBufferPointer, from start: Int) -> Int {
        var position = start
        while true {
            let action = c.pointee.session.next(buffer, &position)
            switch action {
            case .needMore:
                if c.pointee.session.state == .closed { return buffer.count }
                return position
            case let .message(opcode, start, count, first, last):
                let piece = UnsafeRawBufferPointer(start: buffer.baseAddress! + start, count: count)
                if first && last {
                    // The whole message is in this read: use it in place, no copy.
                    onMessage(c, opcode, piece)
                } else {
                    c.pointee.message.append(piece, pool: pool)
                    if last {
                        let whole = UnsafeRawBufferPointer(c.pointee.message.readable)
                        onMessage(c, opcode, whole)
                        c.pointee.message.release(pool: pool)
                    }
                }
                if c.pointee.phase != .webSocket { return buffer.count }
            case let .sendPong(start, count):
                enqueueFrame(c, .pong, UnsafeRawBufferPointer(start: buffer.baseAddress! + start, count: count))
            case .pongReceived:
                break
            case .replyCloseAndDisconnect(let code):
                // Echo the peer's code (§5.5.1); 1005 means it sent none, which we answer with 1000.
                let reply = code == .noStatusReceived ? CloseCode.normalClosure : code
                c.pointee.closeCode = code.rawValue
                leaveIndex(c)
                enqueueClose(c, reply, reason: "")
                c.pointee.flags.insert(.closeAfterFlush)
                return buffer.count
            case .disconnect:
                // The peer answered our Close: the handshake is complete.
                c.pointee.flags.insert(.closeAfterFlush)
                markDirty(c)
                return buffer.count
            case .fail(let error):
                c.pointee.closeCode = error.closeCode.rawValue
                leaveIndex(c)
                stats.connectionErrors.bump()
                logger.error("WebSocket connection error: \(error.reason)", metadata: [
                    "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "close_code": "\(error.closeCode.rawValue)",
                ])
                enqueueClose(c, error.closeCode, reason: error.reason)
                c.pointee.flags.insert(.closeAfterFlush)
                return buffer.count
            }
        }
    }

    /// A complete message from the peer.
    private func onMessage(_ c: UnsafeMutablePointer<Connection>, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
        stats.messagesReceived.bump()
        switch c.pointee.endpoint {
        case .echo:
            enqueueFrame(c, opcode, payload)
            stats.messagesSent.bump()
        case .stream:
            onClientMessage(c, opcode, payload)
        case .none:
            break
        }
    }

    /// Sends Close with `code` and waits (bounded by the close timeout) for the peer's
    /// Close; used for idle timeouts, shutdown and slow consumers.
    func startClose(_ c: UnsafeMutablePointer<Connection>, code: CloseCode, reason: String) {
        guard c.pointee.phase == .webSocket, c.pointee.session.beginClose() else { return }
        c.pointee.closeCode = code.rawValue
        // No broadcast may follow our Close.
        leaveIndex(c)
        enqueueClose(c, code, reason: reason)
        idleList.remove(c.pointee.slot) { timeoutLinks($0) }
        pingList.remove(c.pointee.slot) { heartbeatLinks($0) }
        if c.pointee.timeout.list == 0 {
            appendDeadline(&closingList, c.pointee.slot)
        }
    }

    func enqueueClose(_ c: UnsafeMutablePointer<Connection>, _ code: CloseCode, reason: String) {
        let payload = FrameEncoder.closePayload(code: code, reason: reason)
        payload.withUnsafeBytes { enqueueFrame(c, .close, $0) }
    }
}
