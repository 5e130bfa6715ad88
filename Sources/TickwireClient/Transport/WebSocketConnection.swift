#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

/// One client WebSocket connection (RFC 6455) on its own thread: TCP connect, the opening
/// handshake, masked frames out, frames in, pings answered, the closing handshake.
///
/// The thread blocks in `poll` on the socket and a wake pipe, so neither reads nor the
/// blocking name lookup ever occupy the cooperative pool. Other threads talk to it only
/// through a command queue plus the wake pipe; it reports through `events`, an
/// `AsyncStream` that preserves order. Frame parsing and the close/ping rules are
/// WireProtocol's `WebSocketSession` in the client role; this type only carries out its
/// actions.
final class WebSocketConnection: Sendable {
    enum Event: Sendable, Equatable {
        /// The handshake succeeded.
        case opened
        /// A complete text message.
        case text([UInt8])
        /// A complete binary message (not part of the protocol; reported, not decoded).
        case binary(count: Int)
        /// The connection is over; no more events follow.
        case closed(Ending)
    }

    struct Ending: Sendable, Equatable {
        /// Whether the handshake had succeeded.
        var wasOpen: Bool
        /// The Close code the server sent, when it started or answered a closing handshake.
        var serverCloseCode: UInt16?
        /// What went wrong; nil for a completed closing handshake.
        var error: TransportError?
    }

    struct Settings: Sendable {
        var connectTimeout: Duration
        var closeTimeout: Duration
        var maxMessageSize: Int
    }

    fileprivate enum Command {
        case send([UInt8])
        case close(CloseCode, String)
        case abort
    }

    let events: AsyncStream<Event>
    /// Monotonic nanoseconds of the last byte received (heartbeat staleness check).
    let lastReceived = Atomic<UInt64>(0)
    private let continuation: AsyncStream<Event>.Continuation
    private let commands = Mutex<[Command]>([])
    private let isOpen = Atomic<Bool>(false)
    private let wake: WakePipe?

    /// Starts connecting at once.
    init(endpoint: TickwireEndpoint, target: String, settings: Settings) {
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

    /// Sends a masked text frame; false when the connection is not open.
    @discardableResult
    func send(text: [UInt8]) -> Bool {
        guard isOpen.load(ordering: .acquiring) else { return false }
        var rng = SystemRandomNumberGenerator()
        // A fresh masking key per frame from a strong source (RFC 6455 §5.3, §10.3).
        let frame = FrameEncoder.frame(opcode: .text, payload: text, mask: rng.next())
        post(.send(frame))
        return true
    }

    /// Starts the closing handshake; the connection ends when the server answers or
    /// `closeTimeout` passes.
    func close(code: CloseCode = .normalClosure, reason: String = "") {
        post(.close(code, reason))
    }

    /// Drops the TCP connection at once, without a closing handshake (a lost network).
    func abort() {
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

    fileprivate func markOpen() {
        isOpen.store(true, ordering: .releasing)
        continuation.yield(.opened)
    }

    fileprivate func deliver(_ event: Event) {
        continuation.yield(event)
    }

    /// The thread's own state: only the connection's thread touches it.
    private struct ConnectionLoop {
        unowned let connection: WebSocketConnection
        let wake: WakePipe
        let settings: Settings
        var fd: Int32 = -1
        var session: WebSocketSession
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
            defer {
                if fd >= 0 { Posix.closeDescriptor(fd) }
            }
            do {
                try open(endpoint: endpoint, target: target)
            } catch {
                return Ending(wasOpen: false, error: error)
            }
            connection.markOpen()
            return serve()
        }

        /// TCP connect and the opening handshake, all within `connectTimeout`.
        mutating func open(endpoint: TickwireEndpoint, target: String) throws(TransportError) {
            let deadline = Posix.monotonicNanoseconds() + Posix.nanoseconds(settings.connectTimeout)
            let connection = self.connection
            fd = try Posix.openConnection(host: endpoint.host, port: endpoint.port, deadline: deadline, wake: wake) {
                connection.hasStopCommand()
            }
            var rng = SystemRandomNumberGenerator()
            let handshake = ClientHandshake(using: &rng)
            try Posix.sendAll(fd, handshake.request(hostHeader: endpoint.hostHeader, target: target), deadline: deadline, wake: nil,
                              what: "sending the WebSocket handshake")
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                switch HTTPResponseHead.parse(received) {
                case .invalid(let why):
                    throw .handshake(why)
                case .head(let head):
                    if let problem = handshake.problem(with: head) { throw .handshake(problem) }
                    // Frames may follow the head in the same read (the server's greeting).
                    let leftover = received[head.length...]
                    if leftover.count > input.count { input = [UInt8](repeating: 0, count: leftover.count) }
                    input.replaceSubrange(0..<leftover.count, with: leftover)
                    inputEnd = leftover.count
                    return
                case .needMore:
                    // A response head larger than this is not a WebSocket server's.
                    if received.count > 16 << 10 { throw .handshake("response head over 16 KiB") }
                }
                switch Posix.wait(fd, Int16(POLLIN), wake: wake, deadline: deadline) {
                case .timedOut: throw .timedOut("the WebSocket handshake")
                case .woken:
                    if connection.hasStopCommand() { throw .cancelled }
                    continue
                case .ready: break
                }
                let n = try Posix.receive(fd, into: &chunk)
                guard let n else { continue }
                if n == 0 { throw .handshake("the server closed the connection during the handshake") }
                received += chunk[..<n]
                connection.lastReceived.store(Posix.monotonicNanoseconds(), ordering: .relaxed)
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
                        case .send(let frame):
                            if session.state == .open { output += frame }
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
                    if outputSent < output.count { events |= Int16(POLLOUT) }
                    switch Posix.wait(fd, events, wake: wake, deadline: closeDeadline) {
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
            let n = try Posix.receive(fd, into: &input, at: end)
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
                        if last {
                            delivered.append(opcode == .text ? .text(message) : .binary(count: message.count))
                            message = []
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
            while outputSent < output.count {
                try flush()
                if outputSent < output.count, Posix.wait(fd, Int16(POLLOUT), wake: nil, deadline: deadline) == .timedOut { return ending }
            }
            if ending.error != nil { return ending }
            shutdown(fd, Int32(SHUT_WR))
            var scratch = [UInt8](repeating: 0, count: 4096)
            while Posix.wait(fd, Int16(POLLIN), wake: nil, deadline: deadline) != .timedOut {
                // EOF or a reset both end a connection that is already closed.
                let n: Int?
                do { n = try Posix.receive(fd, into: &scratch) } catch { break }
                if n == 0 { break }
            }
            return ending
        }

        mutating func flush() throws(TransportError) {
            guard outputSent < output.count else { return }
            let sent = outputSent
            let n = try Posix.send(fd, output, from: sent)
            outputSent += n
            if outputSent == output.count {
                output.removeAll(keepingCapacity: output.count <= 64 << 10)
                outputSent = 0
            }
        }

        func now() -> UInt64 { Posix.monotonicNanoseconds() }

        func nextMask() -> UInt32 {
            var rng = SystemRandomNumberGenerator()
            return rng.next()
        }
    }
}
