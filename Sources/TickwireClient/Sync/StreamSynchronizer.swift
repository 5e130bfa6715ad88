/// Keeps the client in step with the server's sequenced stream across connections
/// (PROTOCOL.md "Resume"): remembers the epoch and the highest broadcast seq applied,
/// decides between replay and snapshot after each connect, buffers the live stream while
/// a snapshot loads, and drops what was already applied. A pure state machine: it is fed
/// messages and results and returns actions; it touches no socket, timer or task.
struct StreamSynchronizer {
    enum Phase: Equatable {
        /// No connection.
        case idle
        /// Connected; waiting for the server's `Connected`.
        case awaitingGreeting
        /// Asked to resume; waiting for `SubscriptionConfirmed.recovered`.
        case awaitingConfirmation
        /// Loading `GET /api/snapshot`; live messages are buffered.
        case loadingSnapshot
        /// In step: messages are applied as they arrive.
        case live
    }

    enum Action: Equatable {
        /// Hand the message to the application.
        case deliver(TickwireEnvelope)
        /// Fetch `GET /api/snapshot` and report it with `snapshotLoaded`.
        case loadSnapshot
        /// Hand the snapshot to the application.
        case deliverSnapshot(TickwireSnapshot)
        /// In step from here on.
        case synchronized(epoch: String, seq: UInt64, source: SyncSource)
    }

    enum SnapshotVerdict: Equatable {
        case applied([Action])
        /// The snapshot does not fit this connection's stream; try again or reconnect.
        case mismatch(String)
        /// No snapshot was expected (the connection changed meanwhile).
        case ignored
    }

    /// The epoch of the applied state.
    private(set) var epoch: String?
    /// The highest broadcast seq applied within `epoch`.
    private(set) var seq: UInt64?
    private(set) var phase = Phase.idle
    /// Broadcast messages dropped because they were already applied.
    private(set) var duplicatesDropped = 0

    let loadSnapshotOnFirstConnect: Bool
    private var resumeRequested = false
    private var connectionEpoch: String?
    /// The head seq at connect (`Connected.data.seq`): the connection's stream holds
    /// everything after it, so a snapshot must be at least this new.
    private var streamStart: UInt64?
    private var buffer: [TickwireEnvelope] = []
    private var resyncOnConfirmation = false

    init(loadSnapshotOnFirstConnect: Bool = true) {
        self.loadSnapshotOnFirstConnect = loadSnapshotOnFirstConnect
    }

    /// Where the next connection resumes from (`?epoch=E&since=S`), once there is state.
    var resumePoint: (epoch: String, since: UInt64)? {
        guard let epoch, let seq else { return nil }
        return (epoch, seq)
    }

    /// A new connection is starting; `resuming` says whether its URL carries `resumePoint`.
    mutating func connectionStarted(resuming: Bool) {
        resumeRequested = resuming
        phase = .awaitingGreeting
        connectionEpoch = nil
        streamStart = nil
        buffer.removeAll()
        resyncOnConfirmation = false
    }

    /// The connection ended; whatever was buffered is dropped (the next one resumes
    /// from the last applied seq, so it comes again).
    mutating func connectionEnded() {
        phase = .idle
        buffer.removeAll()
        resyncOnConfirmation = false
    }

    /// A `Subscribe` went out: its confirmation triggers a snapshot reload, because newly
    /// added channels or symbols have state that only the snapshot holds.
    mutating func subscriptionChangeSent() {
        resyncOnConfirmation = true
    }

    /// The server did not send `Connected` or the resume confirmation in time.
    mutating func confirmationTimedOut() -> [Action] {
        guard phase == .awaitingGreeting || phase == .awaitingConfirmation else { return [] }
        phase = .loadingSnapshot
        return [.loadSnapshot]
    }

    mutating func receive(_ message: TickwireEnvelope) -> [Action] {
        switch message.payload {
        case .connected(let info):
            guard phase == .awaitingGreeting else { return [.deliver(message)] }
            connectionEpoch = info.epoch
            streamStart = info.seq
            var actions: [Action] = [.deliver(message)]
            if resumeRequested && info.epoch == epoch {
                phase = .awaitingConfirmation
            } else if epoch == nil && !loadSnapshotOnFirstConnect {
                epoch = info.epoch
                seq = info.seq
                actions += goLive(.live)
            } else {
                // First connect, or the server restarted (a new epoch): nothing to replay.
                phase = .loadingSnapshot
                actions.append(.loadSnapshot)
            }
            return actions

        case .subscriptionConfirmed(let confirmation):
            var actions: [Action] = [.deliver(message)]
            if phase == .awaitingConfirmation, let recovered = confirmation.recovered {
                if recovered {
                    actions += goLive(.resumed(replayed: confirmation.replayed ?? 0))
                } else {
                    phase = .loadingSnapshot
                    actions.append(.loadSnapshot)
                }
            } else if resyncOnConfirmation {
                resyncOnConfirmation = false
                // While a load is under way it serves the new subscription too.
                if phase == .live {
                    phase = .loadingSnapshot
                    actions.append(.loadSnapshot)
                }
            }
            return actions

        case .pong:
            // A Pong follows every broadcast message up to its seq in this connection's
            // stream, so resuming from it skips nothing and keeps a narrow subscription's
            // resume point inside the server's history.
            if phase == .live, let s = message.seq, let current = seq, s > current { seq = s }
            return [.deliver(message)]

        default:
            if phase == .live { return apply(message) }
            buffer.append(message)
            return []
        }
    }

    mutating func snapshotLoaded(_ snapshot: TickwireSnapshot) -> SnapshotVerdict {
        guard phase == .loadingSnapshot else { return .ignored }
        if let connectionEpoch, snapshot.epoch != connectionEpoch {
            return .mismatch("snapshot epoch \(snapshot.epoch) is not the stream's epoch \(connectionEpoch)")
        }
        if let streamStart, snapshot.seq < streamStart {
            return .mismatch("snapshot at seq \(snapshot.seq) is older than the stream's start at \(streamStart)")
        }
        if snapshot.epoch == epoch, let seq, snapshot.seq < seq {
            return .mismatch("snapshot at seq \(snapshot.seq) is older than seq \(seq), already applied")
        }
        epoch = snapshot.epoch
        seq = snapshot.seq
        return .applied([.deliverSnapshot(snapshot)] + goLive(.snapshot))
    }

    private mutating func goLive(_ source: SyncSource) -> [Action] {
        phase = .live
        if epoch == nil { epoch = connectionEpoch }
        if seq == nil { seq = streamStart }
        var actions: [Action] = []
        if let epoch, let seq { actions.append(.synchronized(epoch: epoch, seq: seq, source: source)) }
        let buffered = buffer
        buffer.removeAll()
        for message in buffered { actions += apply(message) }
        return actions
    }

    /// Applies a sequenced message: state messages at most once and in seq order; notices
    /// (errors, unknown types) always, since a per-connection one repeats an old seq.
    private mutating func apply(_ message: TickwireEnvelope) -> [Action] {
        guard let s = message.seq else { return [.deliver(message)] }
        switch message.payload.sequencing {
        case .state:
            if let current = seq, s <= current {
                duplicatesDropped += 1
                return []
            }
            seq = s
        case .notice:
            if seq.map({ s > $0 }) ?? true { seq = s }
        case .connection:
            break
        }
        return [.deliver(message)]
    }
}

extension StreamSynchronizer {
    /// Test hook: pretend the state came from `epoch` at `seq`.
    mutating func setResumePointForTesting(epoch: String, seq: UInt64) {
        self.epoch = epoch
        self.seq = seq
    }
}
