/// The life of one server connection, from accept to close, as a state machine: the
/// reactor tells it what happened (a request was answered, the peer sent Close, a
/// deadline passed, the socket drained) and carries out the actions it returns. It
/// touches no socket and no timer, so every path can be tested without either.
///
/// `WebSocketSession` decides what frames mean; this type decides what the connection
/// does about it. Its rules:
/// - Every path into closing arms exactly one closing deadline, and when it passes the
///   socket is closed whatever else is pending (a peer that stops reading cannot hold a
///   slot). Nothing re-arms or extends it.
/// - After our Close nothing is queued: no data, no ping, no second Close.
/// - HTTP/1.1: once a response says `Connection: close`, no later request is processed
///   (RFC 9112 §9.6); a request answered off the reactor holds the input, so pipelined
///   requests are answered strictly in order.
/// - Our last bytes go out before the TCP close: we shut our side down and read to the
///   peer's EOF, so a reset cannot destroy what we sent (RFC 9112 §9.6, RFC 6455 §7.1.1).
///
/// | state | event | next state | actions |
/// |---|---|---|---|
/// | http | `requestAnswered(keepAlive: true)` | http | armRequestDeadline |
/// | http | `requestAnswered(keepAlive: false)` | flushing | cancelRequestDeadline, armClosingDeadline, flushOutput |
/// | http | `handedOff` | awaitingReply | cancelRequestDeadline, stopReading |
/// | awaitingReply | `replyArrived(keepAlive: true)` | http | resumeReading, armRequestDeadline, flushOutput |
/// | awaitingReply | `replyArrived(keepAlive: false)`, or after `close`/`peerEOF` | flushing | flushOutput (+ armClosingDeadline once) |
/// | http | `upgraded` | open | cancelRequestDeadline, armSessionTimers |
/// | http | `requestDeadlineExpired` | closed | closeSocket |
/// | open | `close(cause)` (idle, shutdown, slow consumer) | closeSent | stopBroadcasts, sendClose, cancelSessionTimers, armClosingDeadline, flushOutput |
/// | open | `receivedClose(code)` | flushing | stopBroadcasts, sendClose (echo), cancelSessionTimers, armClosingDeadline, flushOutput |
/// | open | `protocolError(e)` | flushing | stopBroadcasts, sendClose (e's code), cancelSessionTimers, armClosingDeadline, flushOutput |
/// | open | `pingDue` | open | sendPing |
/// | closeSent | `receivedClose` / `protocolError` | flushing | flushOutput |
/// | flushing | `outputDrained` | draining (closed if the peer's EOF came) | shutdownWrite (closeSocket) |
/// | draining | `peerEOF` | closed | closeSocket |
/// | open, closeSent, draining | `peerEOF` | closed | closeSocket |
/// | http | `peerEOF` | flushing if output is pending, else closed | stopReading, ... / closeSocket |
/// | any closing state | `closingDeadlineExpired` | closed | closeSocket |
/// | any | `ioFailed` | closed | closeSocket |
public struct ConnectionLifecycle: Sendable, Hashable {
    public enum State: UInt8, Sendable {
        /// Reading HTTP requests (plain requests, or the upgrade); the request deadline runs.
        case http
        /// A request is being answered off the reactor; input is held, so that pipelined
        /// requests are answered in order.
        case awaitingReply
        /// A WebSocket session; messages flow both ways.
        case open
        /// We sent Close and read frames until the peer's Close (§7.1.2).
        case closeSent
        /// Our last bytes are queued (a `Connection: close` response, or the Close that
        /// ends a session); what the peer sends is read and dropped.
        case flushing
        /// Our bytes are out and our side is shut down; reading to the peer's EOF.
        case draining
        /// The socket is closed; the slot is freed after the current pass.
        case closed
    }

    /// Why we close (for the Close code, the reason text and the logs).
    public enum CloseCause: Sendable, Hashable {
        /// Nothing came from the peer for the idle timeout: 1001.
        case idleTimeout
        /// The server is shutting down: 1001.
        case shutdown
        /// A subscriber's backlog of must-deliver messages passed the bound: 1013.
        case slowConsumer
        /// A policy refusal after the upgrade (authentication, limits): 1008.
        case policy
        /// Any other code the reactor chooses.
        case other(CloseCode)

        public var code: CloseCode {
            switch self {
            case .idleTimeout, .shutdown: return .goingAway
            case .slowConsumer: return .tryAgainLater
            case .policy: return .policyViolation
            case .other(let code): return code
            }
        }
    }

    public struct Actions: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        /// Queue our Close frame with `Transition.closeCode`. Nothing may be queued after it.
        public static let sendClose = Actions(rawValue: 1 << 0)
        /// Leave the broadcast path: no broadcast frame may follow.
        public static let stopBroadcasts = Actions(rawValue: 1 << 1)
        /// Stop watching for input (a reply is awaited, or the peer's EOF came).
        public static let stopReading = Actions(rawValue: 1 << 2)
        /// Watch for input again.
        public static let resumeReading = Actions(rawValue: 1 << 3)
        /// Our bytes are all out: shutdown(SHUT_WR), then read until the peer's EOF.
        public static let shutdownWrite = Actions(rawValue: 1 << 4)
        /// Close the socket now.
        public static let closeSocket = Actions(rawValue: 1 << 5)
        /// (Re)start the request deadline (also the keep-alive timeout).
        public static let armRequestDeadline = Actions(rawValue: 1 << 6)
        public static let cancelRequestDeadline = Actions(rawValue: 1 << 7)
        /// Start the idle deadline and the ping interval.
        public static let armSessionTimers = Actions(rawValue: 1 << 8)
        public static let cancelSessionTimers = Actions(rawValue: 1 << 9)
        /// Start the one closing deadline.
        public static let armClosingDeadline = Actions(rawValue: 1 << 10)
        /// Queue a ping.
        public static let sendPing = Actions(rawValue: 1 << 11)
        /// Write what is queued; report `outputDrained` when it is all out.
        public static let flushOutput = Actions(rawValue: 1 << 12)

        public var description: String {
            let names: [(Actions, String)] = [
                (.sendClose, "sendClose"), (.stopBroadcasts, "stopBroadcasts"), (.stopReading, "stopReading"),
                (.resumeReading, "resumeReading"), (.shutdownWrite, "shutdownWrite"), (.closeSocket, "closeSocket"),
                (.armRequestDeadline, "armRequestDeadline"), (.cancelRequestDeadline, "cancelRequestDeadline"),
                (.armSessionTimers, "armSessionTimers"), (.cancelSessionTimers, "cancelSessionTimers"),
                (.armClosingDeadline, "armClosingDeadline"), (.sendPing, "sendPing"), (.flushOutput, "flushOutput"),
            ]
            return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ", ") + "]"
        }
    }

    /// What to do after an event.
    public struct Transition: Sendable, Equatable {
        public var actions: Actions
        /// The code of the Close to send (with `.sendClose`).
        public var closeCode: CloseCode

        public static let none = Transition(actions: [], closeCode: .normalClosure)

        @inlinable
        public init(actions: Actions, closeCode: CloseCode = .normalClosure) {
            self.actions = actions
            self.closeCode = closeCode
        }
    }

    public private(set) var state: State = .http
    /// The peer's side reached EOF.
    public private(set) var peerEOF = false
    /// The closing deadline was armed (once; it is never re-armed).
    public private(set) var closingDeadlineArmed = false
    /// Close once the awaited reply is written (it said, or the server decided, so).
    public private(set) var closeAfterReply = false
    /// The Close code sent or received, for the disconnect log (0: none).
    public private(set) var closeCode: UInt16 = 0
    /// A WebSocket session was established (it may be closing now).
    public private(set) var isWebSocket = false

    @inlinable
    public init() {}

    // MARK: - Queries

    /// HTTP requests may be parsed and answered.
    @inlinable public var acceptsRequests: Bool { state == .http }
    /// Frames for the peer may be queued: data, pings, per-connection messages.
    @inlinable public var acceptsOutgoingFrames: Bool { state == .open }
    /// Incoming frames are decoded (an open session, or looking for the peer's Close).
    @inlinable public var decodesFrames: Bool { state == .open || state == .closeSent }
    /// Closing has begun (the closing deadline runs).
    @inlinable public var isClosing: Bool { state == .closeSent || state == .flushing || state == .draining }
    @inlinable public var isClosed: Bool { state == .closed }

    // MARK: - HTTP

    /// A request was answered on the reactor; `keepAlive` false means the response said
    /// `Connection: close` (or the request was HTTP/1.0 without keep-alive).
    public mutating func requestAnswered(keepAlive: Bool) -> Transition {
        guard state == .http else { return .none }
        if keepAlive { return Transition(actions: .armRequestDeadline) }
        return enterFlushing([.cancelRequestDeadline])
    }

    /// The current request is answered off the reactor; hold the input until the reply.
    public mutating func handedOff() -> Transition {
        guard state == .http else { return .none }
        state = .awaitingReply
        return Transition(actions: [.cancelRequestDeadline, .stopReading])
    }

    /// The reply to a handed-off request was queued.
    public mutating func replyArrived(keepAlive: Bool) -> Transition {
        guard state == .awaitingReply else { return .none }
        if keepAlive && !closeAfterReply && !peerEOF {
            state = .http
            return Transition(actions: [.resumeReading, .armRequestDeadline, .flushOutput])
        }
        return enterFlushing([])
    }

    /// The request was a valid WebSocket upgrade and the 101 is queued.
    public mutating func upgraded() -> Transition {
        guard state == .http else { return .none }
        state = .open
        isWebSocket = true
        return Transition(actions: [.cancelRequestDeadline, .armSessionTimers])
    }

    /// No complete request within the request (or keep-alive) timeout.
    public mutating func requestDeadlineExpired() -> Transition {
        guard state == .http else { return .none }
        return enterClosed()
    }

    // MARK: - Closing

    /// We close: idle timeout, shutdown, slow consumer, policy. In HTTP, a connection with
    /// nothing queued closes now (`outputPending` false); otherwise its output is flushed.
    public mutating func close(_ cause: CloseCause, outputPending: Bool = false) -> Transition {
        switch state {
        case .open:
            state = .closeSent
            closeCode = cause.code.rawValue
            return Transition(actions: [.stopBroadcasts, .sendClose, .cancelSessionTimers, .flushOutput] + armClosing(),
                              closeCode: cause.code)
        case .http:
            if !outputPending { return enterClosed() }
            return enterFlushing([.cancelRequestDeadline])
        case .awaitingReply:
            closeAfterReply = true
            return Transition(actions: armClosing())
        case .closeSent, .flushing, .draining, .closed:
            return .none
        }
    }

    /// The peer's Close frame arrived (`code`: what it sent, 1005 for none).
    public mutating func receivedClose(_ code: CloseCode) -> Transition {
        switch state {
        case .open:
            // Echo the peer's code (§5.5.1); 1005 means it sent none, answered with 1000.
            let reply = code == .noStatusReceived ? CloseCode.normalClosure : code
            closeCode = code.rawValue
            return enterFlushing([.stopBroadcasts, .sendClose, .cancelSessionTimers], closeCode: reply)
        case .closeSent:
            // The closing handshake is complete: close TCP once our bytes are out (§7.1.1).
            return enterFlushing([])
        default:
            return .none
        }
    }

    /// The peer broke the protocol.
    public mutating func protocolError(_ error: WebSocketError) -> Transition {
        switch state {
        case .open:
            closeCode = error.closeCode.rawValue
            return enterFlushing([.stopBroadcasts, .sendClose, .cancelSessionTimers], closeCode: error.closeCode)
        case .closeSent:
            // Our Close is already queued; a second one is never sent.
            return enterFlushing([])
        default:
            return .none
        }
    }

    /// Everything queued for the peer has been written.
    public mutating func outputDrained() -> Transition {
        guard state == .flushing else { return .none }
        if peerEOF { return enterClosed() }
        state = .draining
        return Transition(actions: .shutdownWrite)
    }

    /// The peer's side reached EOF. `outputPending`: bytes are still queued for it.
    public mutating func peerClosedInput(outputPending: Bool) -> Transition {
        if peerEOF || state == .closed { return .none }
        peerEOF = true
        switch state {
        case .http:
            // It may only have shut down its writes: answer what is queued, then close.
            if !outputPending { return enterClosed() }
            return enterFlushing([.cancelRequestDeadline, .stopReading])
        case .awaitingReply:
            // The reply is on its way; it is written, then the socket closes.
            closeAfterReply = true
            return Transition(actions: armClosing())
        case .open:
            // Gone without a closing handshake: 1006 (§7.1.5).
            closeCode = CloseCode.abnormalClosure.rawValue
            return enterClosed()
        case .closeSent, .draining:
            return enterClosed()
        case .flushing:
            return Transition(actions: .stopReading)
        case .closed:
            return .none
        }
    }

    /// The closing deadline passed: close whatever is still pending.
    public mutating func closingDeadlineExpired() -> Transition {
        guard closingDeadlineArmed, state != .closed else { return .none }
        return enterClosed()
    }

    /// The idle deadline passed.
    public mutating func idleDeadlineExpired() -> Transition {
        close(.idleTimeout)
    }

    /// The ping interval passed.
    public mutating func pingDue() -> Transition {
        state == .open ? Transition(actions: .sendPing) : .none
    }

    /// A read or write failed (reset, or an error): close now.
    public mutating func ioFailed() -> Transition {
        guard state != .closed else { return .none }
        if state == .open { closeCode = CloseCode.abnormalClosure.rawValue }
        return enterClosed()
    }

    // MARK: - Helpers

    private mutating func armClosing() -> Actions {
        if closingDeadlineArmed { return [] }
        closingDeadlineArmed = true
        return .armClosingDeadline
    }

    private mutating func enterFlushing(_ actions: Actions, closeCode: CloseCode = .normalClosure) -> Transition {
        state = .flushing
        return Transition(actions: actions.union([.flushOutput]).union(armClosing()), closeCode: closeCode)
    }

    private mutating func enterClosed() -> Transition {
        state = .closed
        return Transition(actions: .closeSocket)
    }
}

extension ConnectionLifecycle.Actions {
    @inlinable
    static func + (lhs: Self, rhs: Self) -> Self { lhs.union(rhs) }
}
