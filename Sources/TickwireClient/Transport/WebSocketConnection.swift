#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

/// One client WebSocket connection (RFC 6455) on its own thread: TCP connect (and TLS for
/// `wss://`), the opening handshake, masked frames out, frames in, pings answered, the
/// closing handshake, permessage-deflate (RFC 7692) when the server agrees to it.
///
/// The thread blocks in `poll` on the socket and a wake pipe, so neither reads nor the
/// blocking name lookup ever occupy the cooperative pool. Other threads talk to it only
/// through a command queue plus the wake pipe; it reports through `events`, an
/// `AsyncStream` that preserves order. Frame parsing and the close/ping rules are
/// WireProtocol's `WebSocketSession` in the client role; this type only carries out its
/// actions.
package final class WebSocketConnection: Sendable {
    package enum Event: Sendable, Equatable {
        /// The handshake succeeded; `compression`: permessage-deflate was agreed.
        case opened(compression: Bool)
        /// A complete text message; `compressed`: it came deflated (and was inflated).
        case text([UInt8], compressed: Bool)
        /// A complete binary message (not part of the protocol; reported, not decoded).
        case binary(count: Int)
        /// The connection is over; no more events follow.
        case closed(Ending)
    }

    package struct Ending: Sendable, Equatable {
        /// Whether the handshake had succeeded.
        package var wasOpen: Bool
        /// The Close code the server sent, when it started or answered a closing handshake.
        package var serverCloseCode: UInt16?
        /// What went wrong; nil for a completed closing handshake.
        package var error: TransportError?
        /// When the server refused the upgrade: its HTTP status (401 for a bad token).
        package var refusalStatus: Int?

        package init(wasOpen: Bool, serverCloseCode: UInt16? = nil, error: TransportError?, refusalStatus: Int? = nil) {
            self.wasOpen = wasOpen
            self.serverCloseCode = serverCloseCode
            self.error = error
            self.refusalStatus = refusalStatus
        }
    }

    package struct Settings: Sendable {
        package var connectTimeout: Duration
        package var closeTimeout: Duration
        /// Applies to a compressed message's inflated size too (1009 past it).
        package var maxMessageSize: Int
        /// `wss://`: the trust settings; nil: plain TCP.
        package var tls: TLSClientContext?
        /// `Sec-WebSocket-Protocol` entries to offer (`tickwire`, `bearer.<token>`).
        package var protocols: [String]
        /// Offer permessage-deflate.
        package var offersCompression: Bool

        package init(connectTimeout: Duration, closeTimeout: Duration, maxMessageSize: Int, tls: TLSClientContext? = nil,
                     protocols: [String] = [], offersCompression: Bool = false) {
            self.connectTimeout = connectTimeout
            self.closeTimeout = closeTimeout
            self.maxMessageSize = maxMessageSize
            self.tls = tls
            self.protocols = protocols
            self.offersCompression = offersCompression
        }
    }

    /// 128 bytes, the server's default `--compression-min-size`: below it deflate's block
    /// header and the CPU cost buy nothing (a Ping is 15 bytes, a Refresh a few hundred).
    package static let compressionMinBytes = 128

    fileprivate enum Command {
        case send([UInt8])
        case close(CloseCode, String)
        case abort
    }

    package let events: AsyncStream<Event>
    /// Monotonic nanoseconds of the last byte received (heartbeat staleness check).
    package let lastReceived = Atomic<UInt64>(0)
    private let continuation: AsyncStream<Event>.Continuation
    private let commands = Mutex<[Command]>([])
    private let isOpen = Atomic<Bool>(false)
    private let wake: WakePipe?

    /// Starts connecting at once.
    package init(endpoint: TickwireEndpoint, target: String, settings: Settings) {
        (events, continuation) = AsyncStream<Event>.makeStream()
        wake = try? WakePipe()
        lastReceived.store(Posix.monotonicNanoseconds(), ordering: .relaxed)
        guard let wake else {
            continuation.yield(.closed(Ending(wasOpen: false, error: .io("pipe", errno: errno))))
            continuation.finish()
            return
        }
        let started = DedicatedThread.start { [self] in
            var loop = ConnectionLoop(connection: self, wake: wake, settings: settings)
            let ending = loop.run(endpoint: endpoint, target: target)
            isOpen.store(false, ordering: .releasing)
            continuation.yield(.closed(ending))
            continuation.finish()
        }
        if !started {
            continuation.yield(.closed(Ending(wasOpen: false, error: .io("pthread_create", errno: EAGAIN))))
            continuation.finish()
        }
    }

    deinit {
        // Nobody listens any more: end the thread without a closing handshake.
        abort()
    }

    /// Sends a text message (masked, and compressed when agreed and worth it); false when
    /// the connection is not open.
    @discardableResult
    package func send(text: [UInt8]) -> Bool {
        guard isOpen.load(ordering: .acquiring) else { return false }
        // Framed on the connection's thread, which owns the deflater.
        post(.send(text))
        return true
    }

    /// Starts the closing handshake; the connection ends when the server answers or
    /// `closeTimeout` passes.
    package func close(code: CloseCode = .normalClosure, reason: String = "") {
        post(.close(code, reason))
    }

    /// Drops the TCP connection at once, without a closing handshake (a lost network).
    package func abort() {
        post(.abort)
    }

    private func post(_ command: Command) {
        commands.withLock { $0.append(command) }
        wake?.wake()
    }

    fileprivate func takeCommands() -> [Command] {
        commands.withLock { queue in
            defer { queue.removeAll() }
            return queue
        }
    }

    fileprivate func hasStopCommand() -> Bool {
        commands.withLock { queue in
            queue.contains { if case .send = $0 { return false } else { return true } }
        }
    }

    fileprivate func markOpen(compression: Bool) {
        isOpen.store(true, ordering: .releasing)
        continuation.yield(.opened(compression: compression))
    }

    fileprivate func deliver(_ event: Event) {
        continuation.yield(event)
    }

    /// The thread's own state: only the connection's thread touches it.
    private struct ConnectionLoop {
        unowned let connection: WebSocketConnection
        let wake: WakePipe
        let settings: Settings
        var socket: ClientSocket?
        var session: WebSocketSession
        /// permessage-deflate's terms, once agreed.
        var deflate: ClientDeflateTerms?
        /// Made at the first message worth compressing (a zlib deflater holds ~256 KiB).
        var deflater: MessageDeflater?
        /// Made at the first compressed message received; its buffer shrinks back after a
        /// large one.
        var inflater: MessageInflater?
        var input: [UInt8]
        var inputEnd = 0
        var message: [UInt8] = []
        var output: [UInt8] = []
        var outputSent = 0
        /// Set once our Close went out: when the connection ends at the latest.
        var closeDeadline: UInt64?

        init(connection: WebSocketConnection, wake: WakePipe, settings: Settings) {
            self.connection = connection
            self.wake = wake
            self.settings = settings
            session = WebSocketSession(role: .client, maxMessageSize: UInt64(settings.maxMessageSize))
            input = [UInt8](repeating: 0, count: 64 << 10)
        }

        mutating func run(endpoint: TickwireEndpoint, target: String) -> Ending {
            // Releasing the socket closes it (close_notify first under TLS).
            defer { socket = nil }
            do {
                try open(endpoint: endpoint, target: target)
            } catch let refusal as HandshakeRefusal {
                return Ending(wasOpen: false, error: .handshake(refusal.reason), refusalStatus: refusal.status)
            } catch let error as TransportError {
                return Ending(wasOpen: false, error: error)
            } catch {
                return Ending(wasOpen: false, error: .handshake("\(error)"))
            }
            connection.markOpen(compression: deflate != nil)
            return serve()
        }

        /// TCP connect (and TLS) and the opening handshake, all within `connectTimeout`.
        /// Throws `TransportError`, or `HandshakeRefusal` when the server's answer is not an
        /// acceptable upgrade.
        mutating func open(endpoint: TickwireEndpoint, target: String) throws {
            let deadline = Posix.monotonicNanoseconds() + Posix.nanoseconds(settings.connectTimeout)
            let connection = self.connection
            let socket = try ClientSocket.open(host: endpoint.host, port: endpoint.port, tls: settings.tls, deadline: deadline, wake: wake) {
                connection.hasStopCommand()
            }
            self.socket = socket
            var rng = SystemRandomNumberGenerator()
            let handshake = ClientHandshake(using: &rng, protocols: settings.protocols, offersDeflate: settings.offersCompression)
            try socket.sendAll(handshake.request(hostHeader: endpoint.hostHeader, target: target), deadline: deadline,
                               what: "sending the WebSocket handshake")
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            /// Reads more of the answer; false at EOF.
            func readMore() throws -> Bool {
                while true {
                    switch socket.wait(Int16(POLLIN), wake: wake, deadline: deadline) {
                    case .timedOut: throw TransportError.timedOut("the WebSocket handshake")
                    case .woken:
                        if connection.hasStopCommand() { throw TransportError.cancelled }
                        continue
                    case .ready: break
                    }
                    guard let n = try socket.receive(into: &chunk) else { continue }
                    if n == 0 { return false }
                    received += chunk[..<n]
                    connection.lastReceived.store(Posix.monotonicNanoseconds(), ordering: .relaxed)
                    return true
                }
            }
            while true {
                switch HTTPResponseHead.parse(received) {
                case .invalid(let why):
                    throw TransportError.handshake(why)
                case .head(let head):
                    if head.status != 101 {
                        // A refusal's JSON body says which check failed (401 `expired`, 429
                        // `connections_per_ip`): read what the head announces, up to 4 KiB.
                        let announced = head.value("content-length").flatMap { Int($0) } ?? 0
                        let wanted = head.length + min(max(announced, 0), 4096)
                        while received.count < wanted, try readMore() {}
                    }
                    let agreement = try handshake.accept(head, body: received[head.length...]).get()
                    deflate = agreement.deflate
                    session = WebSocketSession(role: .client, maxMessageSize: UInt64(settings.maxMessageSize),
                                               permessageDeflate: agreement.deflate != nil)
                    // Frames may follow the head in the same read (the server's greeting).
                    let leftover = received[head.length...]
                    if leftover.count > input.count { input = [UInt8](repeating: 0, count: leftover.count) }
                    input.replaceSubrange(0..<leftover.count, with: leftover)
                    inputEnd = leftover.count
                    return
                case .needMore:
                    // A response head larger than this is not a WebSocket server's.
                    if received.count > 16 << 10 { throw TransportError.handshake("response head over 16 KiB") }
                }
                guard try readMore() else { throw TransportError.handshake("the server closed the connection during the handshake") }
            }
        }

        /// The open connection: until it closes, fails or is aborted.
        mutating func serve() -> Ending {
            do {
                // Frames that came with the handshake response.
                if inputEnd > 0, let ending = decode() { return try finish(ending) }
                while true {
                    for command in connection.takeCommands() {
                        switch command {
                        case .send(let text):
                            if session.state == .open { output += frame(text: text) }
                        case let .close(code, reason):
                            if session.beginClose() {
                                output += FrameEncoder.frame(opcode: .close, payload: FrameEncoder.closePayload(code: code, reason: reason),
                                                             mask: nextMask())
                                closeDeadline = now() + Posix.nanoseconds(settings.closeTimeout)
                            }
                        case .abort:
                            return Ending(wasOpen: true, error: .cancelled)
                        }
                    }
                    try flush()
                    var events = Int16(POLLIN)
                    if hasOutput { events |= Int16(POLLOUT) }
                    switch socket!.wait(events, wake: wake, deadline: closeDeadline) {
                    case .woken:
                        continue
                    case .timedOut:
                        return Ending(wasOpen: true, error: .timedOut("the closing handshake"))
                    case .ready(let revents):
                        if revents & Int16(POLLOUT) != 0 { try flush() }
                        if revents & Int16(POLLIN | POLLERR | POLLHUP) != 0, let ending = try readAndDecode() {
                            return try finish(ending)
                        }
                    }
                }
            } catch {
                return Ending(wasOpen: true, error: error)
            }
        }

        /// Reads what is there and decodes it; an ending when the connection is over.
        mutating func readAndDecode() throws(TransportError) -> Ending? {
            let end = inputEnd
            let n = try socket!.receive(into: &input, at: end)
            guard let n else { return nil }
            if n == 0 {
                // EOF before the closing handshake completed (RFC 6455 §7.1.5: 1006).
                session.abandon()
                return Ending(wasOpen: true, error: .closedAbnormally)
            }
            connection.lastReceived.store(Posix.monotonicNanoseconds(), ordering: .relaxed)
            inputEnd += n
            return decode()
        }

        /// Runs the session over the input buffer; an ending when the connection must end
        /// (after `finish` flushes what is queued).
        mutating func decode() -> Ending? {
            var position = 0
            var result: Ending?
            let end = inputEnd
            var outgoing: [[UInt8]] = []
            var delivered: [Event] = []
            // The buffer leaves `self` while the session (part of `self`) works on it.
            var bytes: [UInt8] = []
            swap(&bytes, &input)
            bytes.withUnsafeMutableBytes { raw in
                let buffer = UnsafeMutableRawBufferPointer(rebasing: raw[..<end])
                loop: while true {
                    switch session.next(buffer, &position) {
                    case .needMore:
                        break loop
                    case let .message(opcode, start, count, first, last):
                        if first { message.removeAll() }
                        message.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[start..<(start + count)]))
                        guard last else { break }
                        var whole: [UInt8] = []
                        swap(&whole, &message)
                        if !session.messageIsCompressed {
                            delivered.append(opcode == .text ? .text(whole, compressed: false) : .binary(count: whole.count))
                            break
                        }
                        // RFC 7692 §7.2.2; the size limit holds for the inflated message.
                        let inflater = self.inflater ?? MessageInflater()
                        self.inflater = inflater
                        let inflated = whole.withUnsafeBytes { compressed -> Result<[UInt8], WebSocketError> in
                            switch session.inflate(compressed, opcode: opcode, with: inflater) {
                            case .message(let bytes): return .success(Array(bytes))
                            case .fail(let error): return .failure(error)
                            }
                        }
                        switch inflated {
                        case .success(let bytes):
                            delivered.append(opcode == .text ? .text(bytes, compressed: true) : .binary(count: bytes.count))
                        case .failure(let error):
                            outgoing.append(FrameEncoder.frame(opcode: .close, payload: FrameEncoder.closePayload(code: error.closeCode, reason: error.reason),
                                                               mask: nextMask()))
                            result = Ending(wasOpen: true, error: .protocolViolation(error.reason, closeCode: error.closeCode.rawValue))
                            break loop
                        }
                    case let .sendPong(start, count):
                        // Answered here, on the I/O thread: a busy consumer never delays it.
                        outgoing.append(FrameEncoder.frame(opcode: .pong, payload: UnsafeRawBufferPointer(rebasing: buffer[start..<(start + count)]),
                                                           mask: nextMask()))
                    case .pongReceived:
                        break
                    case .replyCloseAndDisconnect(let code):
                        // Echo the server's code (§5.5.1), then wait for it to close TCP.
                        let echo = code.isValidOnWire ? code : .normalClosure
                        outgoing.append(FrameEncoder.frame(opcode: .close, payload: FrameEncoder.closePayload(code: echo), mask: nextMask()))
                        result = Ending(wasOpen: true, serverCloseCode: code.rawValue, error: nil)
                        break loop
                    case .disconnect:
                        // The server answered our Close.
                        result = Ending(wasOpen: true, serverCloseCode: nil, error: nil)
                        break loop
                    case .fail(let error):
                        outgoing.append(FrameEncoder.frame(opcode: .close, payload: FrameEncoder.closePayload(code: error.closeCode, reason: error.reason),
                                                           mask: nextMask()))
                        result = Ending(wasOpen: true, error: .protocolViolation(error.reason, closeCode: error.closeCode.rawValue))
                        break loop
                    }
                }
            }
            swap(&bytes, &input)
            for event in delivered { connection.deliver(event) }
            for frame in outgoing { output += frame }
            // Keep only the undecoded tail (a partial header or control frame, never payload).
            if position > 0 {
                input.withUnsafeMutableBytes { raw in
                    let base = raw.baseAddress!
                    _ = memmove(base, base + position, end - position)  // may overlap
                }
                inputEnd = end - position
            }
            if inputEnd == input.count {
                input += [UInt8](repeating: 0, count: input.count)
            }
            return result
        }

        /// Flushes what is queued (a Close echo or error Close), then, after a clean closing
        /// handshake, waits briefly for the server to close TCP first (RFC 6455 §7.1.1).
        mutating func finish(_ ending: Ending) throws(TransportError) -> Ending {
            let deadline = closeDeadline ?? (now() + Posix.nanoseconds(settings.closeTimeout))
            guard let socket else { return ending }
            while hasOutput {
                try flush()
                if hasOutput, socket.wait(Int16(POLLOUT), wake: nil, deadline: deadline) == .timedOut { return ending }
            }
            if ending.error != nil { return ending }
            socket.shutdownWrite()
            var scratch = [UInt8](repeating: 0, count: 4096)
            while socket.wait(Int16(POLLIN), wake: nil, deadline: deadline) != .timedOut {
                // EOF or a reset both end a connection that is already closed.
                let n: Int?
                do { n = try socket.receive(into: &scratch) } catch { break }
                if n == 0 { break }
            }
            return ending
        }

        /// Frames still to write: ours, or a TLS record the socket has not taken yet.
        var hasOutput: Bool { outputSent < output.count || socket?.hasHeldOutput == true }

        mutating func flush() throws(TransportError) {
            guard let socket, hasOutput else { return }
            let sent = outputSent
            let n = try socket.send(output, from: sent)
            outputSent += n
            if outputSent == output.count {
                output.removeAll(keepingCapacity: output.count <= 64 << 10)
                outputSent = 0
            }
        }

        /// A client text frame: masked with a fresh key from a strong source (RFC 6455
        /// §5.3, §10.3), and deflated when agreed and the message is big enough to gain.
        mutating func frame(text: [UInt8]) -> [UInt8] {
            guard let deflate, text.count >= WebSocketConnection.compressionMinBytes else {
                return FrameEncoder.frame(opcode: .text, payload: text, mask: nextMask())
            }
            let deflater = self.deflater ?? MessageDeflater(windowBits: deflate.deflaterWindowBits, runLengthOnly: deflate.deflaterRunLengthOnly)
            self.deflater = deflater
            let compressed = deflater.compress(text)
            // Deflate that does not shrink the message is not worth the peer's inflate.
            guard compressed.count < text.count else { return FrameEncoder.frame(opcode: .text, payload: text, mask: nextMask()) }
            return FrameEncoder.frame(opcode: .text, payload: compressed, mask: nextMask(), compressed: true)
        }

        func now() -> UInt64 { Posix.monotonicNanoseconds() }

        func nextMask() -> UInt32 {
            var rng = SystemRandomNumberGenerator()
            return rng.next()
        }
    }
}
