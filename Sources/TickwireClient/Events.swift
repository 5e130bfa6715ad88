import Synchronization

/// FR-WEBSOCKET-003's connection states.
public enum ConnectionState: String, Sendable, Hashable, CustomStringConvertible {
    /// Not connected and not trying: before `connect()`, after `disconnect()`, or after
    /// giving up.
    case disconnected
    /// Opening the TCP connection and doing the WebSocket handshake.
    case connecting
    /// The WebSocket is open.
    case connected
    /// The connection was lost; the next attempt waits for its backoff delay.
    case reconnecting

    public var description: String { rawValue }
}

/// How the client got (back) in step with the server's stream; from this point on the
/// messages it delivers have no gap.
public enum SyncSource: Sendable, Hashable {
    /// The server replayed `replayed` missed messages after a reconnect (they follow).
    case resumed(replayed: Int)
    /// State was (re)loaded from `GET /api/snapshot` (delivered as `.snapshot` just before).
    case snapshot
    /// No snapshot was loaded (`loadSnapshotOnFirstConnect` off): live messages from the
    /// server's head at connect time.
    case live
}

/// Something the client reports to the application.
public enum TickwireEvent: Sendable {
    /// The connection state changed.
    case state(ConnectionState)
    /// A server message, in stream order, each broadcast message at most once.
    case message(TickwireEnvelope)
    /// State reloaded from `GET /api/snapshot` (filtered by the current subscription):
    /// replace what was derived from earlier messages with it.
    case snapshot(TickwireSnapshot)
    /// In step with the stream at `epoch`/`seq`.
    case synchronized(epoch: String, seq: UInt64, source: SyncSource)
    /// The connection was lost; reconnection attempt `attempt` starts after `delay`.
    case reconnectScheduled(attempt: Int, delay: Duration)
    /// Something went wrong that the client handled (skipped a message, reconnected,
    /// gave up); for logs and user notifications.
    case diagnostic(TickwireDiagnostic)
}

/// A problem the client handled: what happened, in words, with what it did about it.
public struct TickwireDiagnostic: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// A message that is not JSON, lacks a string `type`, or whose `data` does not match
        /// its type; it was skipped.
        case invalidMessage
        /// A binary frame on the JSON stream; skipped.
        case unexpectedBinary
        /// TCP connect or name resolution failed.
        case connectFailed
        /// The server did not accept the WebSocket handshake.
        case handshakeFailed
        /// An open connection ended (closed by the server, reset, or a protocol error).
        case connectionLost
        /// Nothing arrived within the stale timeout; the connection was dropped.
        case stale
        /// `GET /api/snapshot` failed after its retries; the connection was dropped.
        case snapshotFailed
        /// The snapshot did not match the stream (another epoch, or older than the
        /// connection's start) after its retries; the connection was dropped.
        case snapshotMismatch
        /// Reconnection stopped after `maxAttempts`; the client is disconnected.
        case gaveUp
        /// TLS failed: the settings (`tls.caFile`), the server's certificate (not trusted,
        /// not for this host, expired), or the handshake itself.
        case tlsFailed
        /// `tokenProvider` threw, timed out or returned something that is not a token.
        case tokenFailed
    }

    /// The longest `raw` excerpt kept.
    static let rawLimit = 512

    public var kind: Kind
    public var message: String
    /// The seq of the message concerned, when known.
    public var seq: UInt64?
    /// The close code the server sent, when the connection was closed with one.
    public var closeCode: UInt16?
    /// The start of the offending text, for invalid messages.
    public var raw: String?

    public init(_ kind: Kind, _ message: String, seq: UInt64? = nil, closeCode: UInt16? = nil, raw: String? = nil) {
        self.kind = kind
        self.message = message
        self.seq = seq
        self.closeCode = closeCode
        self.raw = raw
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// The client's events as an `AsyncSequence`. Every call to `TickwireClient.events` makes
/// a new, independent sequence that sees the events from then on.
public typealias TickwireEvents = AsyncStream<TickwireEvent>

/// Fans events out to every live `events` sequence. Yielding never blocks, so the client
/// never waits on a slow consumer; each sequence buffers per its policy.
final class EventHub: Sendable {
    private struct State {
        var next = 0
        var continuations: [Int: AsyncStream<TickwireEvent>.Continuation] = [:]
        var finished = false
    }

    private let state = Mutex(State())

    func makeStream(bufferingPolicy: AsyncStream<TickwireEvent>.Continuation.BufferingPolicy) -> AsyncStream<TickwireEvent> {
        let (stream, continuation) = AsyncStream<TickwireEvent>.makeStream(bufferingPolicy: bufferingPolicy)
        let id: Int? = state.withLock { s in
            if s.finished { return nil }
            s.next += 1
            s.continuations[s.next] = continuation
            return s.next
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    func emit(_ event: TickwireEvent) {
        // Yield outside the lock: a termination handler may run inside yield and take it.
        let targets = state.withLock { Array($0.continuations.values) }
        for continuation in targets { continuation.yield(event) }
    }

    /// Ends every sequence; later `makeStream` calls return finished sequences.
    func finish() {
        let targets = state.withLock { s in
            s.finished = true
            defer { s.continuations.removeAll() }
            return Array(s.continuations.values)
        }
        for continuation in targets { continuation.finish() }
    }
}
