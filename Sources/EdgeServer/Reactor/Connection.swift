import CLibEV
import Reactor
import WireProtocol

/// Where a connection is in its life.
enum ConnectionPhase: UInt8 {
    /// The slot is free.
    case free
    /// Reading HTTP requests (plain requests, or the upgrade).
    case http
    /// An HTTP request is being answered off the reactor (an actor); reading is paused.
    case awaitingReply
    /// A WebSocket session (open, or in its closing handshake).
    case webSocket
    /// Our last bytes are written and our side is shut down; reading until the peer's
    /// EOF (bounded by the close timeout) so that a reset cannot destroy what we sent.
    case draining
    /// Closed; the slot is freed after the current dispatch pass.
    case dead
}

/// What the WebSocket session is for.
enum Endpoint: UInt8 {
    case none
    /// `/ws`: the trading stream.
    case stream
    /// `/echo`: messages come back unchanged.
    case echo
}

struct ConnectionFlags: OptionSet {
    var rawValue: UInt16
    /// In the reactor's dirty list: has output to flush at the end of this pass.
    static let dirty = ConnectionFlags(rawValue: 1 << 0)
    /// The socket refused bytes; EV_WRITE is watched until it drains.
    static let writeBlocked = ConnectionFlags(rawValue: 1 << 1)
    /// Once output is flushed, shut our side down and drain (Close sent, or HTTP "close").
    static let closeAfterFlush = ConnectionFlags(rawValue: 1 << 2)
    /// Reading is paused (output over its bound, or waiting for an off-reactor reply).
    static let readPaused = ConnectionFlags(rawValue: 1 << 3)
    /// Counted against --max-connections.
    static let admitted = ConnectionFlags(rawValue: 1 << 4)
    /// The current HTTP request asked for `Connection: close` (or is HTTP/1.0 without keep-alive).
    static let httpClose = ConnectionFlags(rawValue: 1 << 5)
    /// The peer's side reached EOF.
    static let peerClosed = ConnectionFlags(rawValue: 1 << 6)
    /// In the reactor's blocked list (for the broadcast log's retention).
    static let listedBlocked = ConnectionFlags(rawValue: 1 << 7)
    /// Has broadcast frames pending from `cursor` in the reactor's log.
    static let broadcastPending = ConnectionFlags(rawValue: 1 << 8)
    /// The subscription has a symbol filter (kept in `extras`).
    static let filtered = ConnectionFlags(rawValue: 1 << 9)
    /// At least one broadcast frame has been written to this connection.
    static let sentBroadcast = ConnectionFlags(rawValue: 1 << 10)
    /// In the subscription index.
    static let indexed = ConnectionFlags(rawValue: 1 << 11)
    /// A `100 Continue` was sent for the current request.
    static let continueSent = ConnectionFlags(rawValue: 1 << 12)
}

/// One connection's state. A plain struct with no references (so no ARC), living at a
/// fixed address in a `ConnectionTable` page for its whole life: libev holds a pointer to
/// `io`, which is the first field, so the io callback finds the connection by casting.
/// Everything a busy connection needs beyond this (buffers, a message being assembled,
/// a symbol filter) hangs off pointers that are nil while it is idle.
struct Connection {
    var io = ev_io()
    var fd: Int32 = -1
    var slot: UInt32 = 0
    /// Bumped each time the slot is reused, so that a reply or event meant for an earlier
    /// occupant is recognised and dropped (nginx's "instance" bit, widened).
    var generation: UInt32 = 0
    var phase: ConnectionPhase = .free
    var endpoint: Endpoint = .none
    var flags: ConnectionFlags = []
    /// Handshake, idle or closing timeout, depending on the phase.
    var timeout = DeadlineLinks()
    /// Next server ping (WebSocket only).
    var heartbeat = DeadlineLinks()
    var session = WebSocketSession(maxMessageSize: 0)
    /// Bytes received but not yet consumed: a partial head, frame header or control frame,
    /// or a request body still arriving.
    var input = ByteQueue()
    /// A data message being assembled from pieces.
    var message = ByteQueue()
    /// Bytes for this connection alone: HTTP responses, Connected, pongs, echoes, Close.
    var output = ByteQueue()
    /// Index in the reactor's blocked/dirty bookkeeping.
    var listIndex: UInt32 = 0
    /// Wall-clock-free timing for the disconnect log: monotonic ms at accept.
    var acceptedAt: UInt64 = 0
    var id: UInt64 = 0
    var peer = PeerAddress()
    /// Bytes of the current HTTP request's body still expected (0: none).
    var bodyRemaining: Int = 0
    /// Where the blank-line search for a partial head may resume.
    var headScanned: UInt32 = 0
    /// The close code we sent or received, for the disconnect log.
    var closeCode: UInt16 = 0

    // Broadcast state (the trading stream).
    /// Channels wanted (bit per `Channel`); 0 for connections that are not subscribers.
    var channelMask: UInt8 = 0
    /// Position in the index's "everything" list (default subscribers).
    var indexPosition: UInt32 = 0
    /// The last broadcast batch that touched this connection (one activation per batch).
    var lastBatch: UInt32 = 0
    /// Bytes of the frame at `cursor` already written.
    var cursorOffset: UInt32 = 0
    /// Next log index to send from (while `.broadcastPending`).
    var cursor: UInt64 = 0
    /// `output` (this connection's own messages) goes out before the frame at this log
    /// index, or before this slow-queue index for a slow consumer: so per-connection and
    /// broadcast messages keep the order they were produced in.
    var controlMark: UInt64 = 0
    /// The seq stamped on per-connection messages queued behind `controlMark`.
    var controlSeq: UInt64 = 0
    /// Frames with seq at or below this are skipped (a resume ahead of this reactor).
    var minSeq: UInt64 = 0
    /// The reactor's head seq when this stream went live.
    var liveFromSeq: UInt64 = 0
    /// `ConnectionExtras` (retained), only for narrowed subscriptions and slow consumers.
    var extras: UnsafeMutableRawPointer?
}
