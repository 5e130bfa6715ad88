import CLibEV
import Reactor
import WireProtocol

/// What the WebSocket session is for.
enum Endpoint: UInt8 {
    case none
    /// `/ws`: the trading stream.
    case stream
    /// `/echo`: messages come back unchanged.
    case echo
}

/// The reactor's bookkeeping bits for one connection. Where the connection is in its
/// life is not here: that is `Connection.lifecycle`.
struct ConnectionFlags: OptionSet {
    var rawValue: UInt32
    /// In the reactor's dirty list: has output to flush at the end of this pass.
    static let dirty = ConnectionFlags(rawValue: 1 << 0)
    /// The socket refused bytes; EV_WRITE is watched until it drains.
    static let writeBlocked = ConnectionFlags(rawValue: 1 << 1)
    /// Reading is paused because the peer sends faster than it reads (output over its bound).
    static let readPaused = ConnectionFlags(rawValue: 1 << 2)
    /// Reading is stopped by the lifecycle (a reply is awaited, or the peer's EOF came).
    static let inputStopped = ConnectionFlags(rawValue: 1 << 3)
    /// Counted against --max-connections.
    static let admitted = ConnectionFlags(rawValue: 1 << 4)
    /// Has broadcast frames pending from `cursor` in the reactor's log.
    static let broadcastPending = ConnectionFlags(rawValue: 1 << 5)
    /// The subscription has a symbol filter (kept in `extras`).
    static let filtered = ConnectionFlags(rawValue: 1 << 6)
    /// At least one broadcast frame has been written to this connection.
    static let sentBroadcast = ConnectionFlags(rawValue: 1 << 7)
    /// In the subscription index.
    static let indexed = ConnectionFlags(rawValue: 1 << 8)
    /// A `100 Continue` was sent for the current request.
    static let continueSent = ConnectionFlags(rawValue: 1 << 9)
    /// On a TLS port, before the first byte says whether the peer speaks TLS.
    static let tlsSniffing = ConnectionFlags(rawValue: 1 << 10)
    /// Plain HTTP arrived on the TLS port: its request is answered 400, then closed.
    static let plainOnTLSPort = ConnectionFlags(rawValue: 1 << 11)
    /// The TLS handshake is complete (and counted).
    static let tlsEstablished = ConnectionFlags(rawValue: 1 << 12)
    /// The TLS handshake must write before it reads on, and the socket was full.
    static let tlsReadWantsWrite = ConnectionFlags(rawValue: 1 << 13)
    /// Its token names accounts: it is in their index lists (`extras.accountHashes`).
    static let hasAccounts = ConnectionFlags(rawValue: 1 << 14)
    /// The upgrade carried a valid token (`extras.grant`).
    static let authenticated = ConnectionFlags(rawValue: 1 << 15)
    /// Counted under its client address (`addressCells`) for --max-connections-per-ip.
    static let addressCounted = ConnectionFlags(rawValue: 1 << 16)
    /// Counted under its account (`accountCells`) for --max-connections-per-account.
    static let accountCounted = ConnectionFlags(rawValue: 1 << 17)
    /// Negotiated permessage-deflate: its own messages are compressed (`deflateWindow`).
    static let deflate = ConnectionFlags(rawValue: 1 << 18)
    /// ...and with a full window, so broadcasts go in their shared compressed form.
    static let deflateBroadcasts = ConnectionFlags(rawValue: 1 << 19)
    /// Its subscription has a `max_frequency`: price and candle updates come from its rate
    /// groups (`extras.throttle`), not from the log.
    static let throttled = ConnectionFlags(rawValue: 1 << 20)
    /// Held back by --max-bandwidth: in the stream flusher's retry list until tokens return.
    static let bandwidthWaiting = ConnectionFlags(rawValue: 1 << 21)
}

/// One connection's state. A plain struct with no references (so no ARC), living at a
/// fixed address in a `ConnectionTable` page for its whole life: libev holds a pointer to
/// `io`, which is the first field, so the io callback finds the connection by casting.
/// Everything a busy connection needs beyond this (buffers, a message being assembled,
/// a symbol filter) hangs off pointers that are nil while it is idle.
struct Connection {
    var io = ev_io()
    /// -1 while the slot is free or its socket closed.
    var fd: Int32 = -1
    var slot: UInt32 = 0
    /// Bumped each time the slot is reused, so that a reply or event meant for an earlier
    /// occupant is recognised and dropped (nginx's "instance" bit, widened).
    var generation: UInt32 = 0
    /// Where the connection is in its life; the reactor only carries out its actions.
    var lifecycle = ConnectionLifecycle()
    var endpoint: Endpoint = .none
    var flags: ConnectionFlags = []
    /// Request, idle or closing deadline, depending on the lifecycle.
    var timeout = DeadlineLinks()
    /// Next server ping (WebSocket only).
    var heartbeat = DeadlineLinks()
    /// The frame-level protocol of an open session.
    var session = WebSocketSession(maxMessageSize: 0)
    /// Bytes received but not yet consumed: a partial head, frame header or control frame,
    /// or a request body still arriving.
    var input = ByteQueue()
    /// A data message being assembled from pieces.
    var message = ByteQueue()
    /// Bytes for this connection alone: HTTP responses, Connected, pongs, echoes, Close.
    var output = ByteQueue()
    /// Index in the reactor's blocked list.
    var listIndex: UInt32 = 0
    /// Wall-clock-free timing for the disconnect log: monotonic ms at accept.
    var acceptedAt: UInt64 = 0
    var id: UInt64 = 0
    var peer = PeerAddress()
    /// Bytes of the current HTTP request's body still expected (0: none).
    var bodyRemaining: Int = 0
    /// Where the blank-line search for a partial head may resume.
    var headScanned: UInt32 = 0

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
    /// The server window bits negotiated for permessage-deflate (8: run-length only).
    var deflateWindow: UInt8 = 15
    /// Its client address's cells in the shared per-address counts.
    var addressCells: UInt32 = 0
    /// Its account's cells in the shared per-account counts.
    var accountCells: UInt32 = 0
    /// The inbound message bucket (--max-messages-per-second): tokens, when last filled
    /// (reactor milliseconds, wrapping), and messages dropped since the last one let through.
    var rateTokens: Float = 0
    var rateStamp: UInt32 = 0
    var rateDropped: UInt32 = 0
    /// The --max-bandwidth bucket: bytes it may send now (one second's worth at most), and
    /// when it was last filled (reactor milliseconds, wrapping).
    var bandwidthTokens: Int = 0
    var bandwidthStamp: UInt32 = 0
    /// This connection's cap in bytes/s (0: none): --max-bandwidth or its token's `max_bandwidth`, the lower.
    var bandwidthCap: Int = 0
    /// The TLS session (OpenSSL) of a connection on a TLS port; nil for plain sockets.
    var tls: OpaquePointer?

    /// The slot holds a live socket.
    @inline(__always) var isLive: Bool { fd >= 0 }
}
