import AccessToken
import Logging
import Reactor
import TradingStream
import WireProtocol

/// The broadcast path on a reactor (FR-WEBSOCKET-005, ARCHITECTURE.md "Per-core broadcast
/// queue"): frames arrive through the per-core queue (`inbox`), are appended to the
/// reactor's `log`, and mark their subscribers dirty through the subscription `index`;
/// at the end of the pass `StreamFlusher` writes each of them once, sharing the frames'
/// bytes. Subscribers whose sockets are full sit in `blocked`, which bounds what the log
/// must retain for them; `SlowConsumers` takes over those that fall too far behind.
final class BroadcastPath {
    /// Most frames taken from the per-core queue in one pass, so a burst cannot starve
    /// reads and timers; the rest wait for the next pass.
    static let maxDrainPerPass = 4096
    /// A lagging subscriber more than this many log entries behind moves to its own queue,
    /// which bounds how long the log must keep frames for it.
    static let maxLagEntries: UInt64 = 8192

    private unowned(unsafe) let worker: Worker
    private let table: ConnectionTable
    private let stats: WorkerStats
    private let config: ServerConfiguration
    /// Strong: marking subscribers dirty is on the per-delivery path (no retain per call).
    private let output: OutputFlusher

    /// The per-core broadcast queue: filled by the ingestion actor, drained here.
    let inbox = SPSCQueue<Unmanaged<BroadcastFrame>>()
    let log: BroadcastLog
    let index = SubscriptionIndex()
    /// `max_frequency` subscribers' cohorts and rate groups.
    let rateGroups: RateGroups
    /// Connections whose socket is full (EV_WRITE watched).
    private(set) var blocked: [UInt32] = []
    private var batchNumber: UInt32 = 0
    private var keysScratch: [UInt64] = []
    /// First log index drained in this pass (latency is measured after the flush).
    private var passFirstFrame: UInt64?
    /// The epoch of this reactor's history (PROTOCOL.md "Resume"): what `Connected` names
    /// and resumes must match. Changes only at an epoch marker in the queue, so it always
    /// describes the log.
    private(set) var epoch: String
    /// Epoch changes this reactor applied (metrics, tests).
    private(set) var epochResets = 0

    init(worker: Worker, log: BroadcastLog, output: OutputFlusher) {
        self.worker = worker
        self.log = log
        self.output = output
        table = worker.table
        stats = worker.stats
        config = worker.config
        epoch = worker.context.epoch
        rateGroups = RateGroups(worker: worker, output: output)
    }

    // MARK: - Arrival

    /// Moves frames from the per-core queue into the log and activates their subscribers.
    func drain() {
        var first = log.end
        var n = 0
        while n < Self.maxDrainPerPass, let frame = inbox.pop() {
            n += 1
            if frame.takeUnretainedValue().seq == 0 {
                // An epoch marker: what came before it goes out in the old epoch first.
                if log.end > first { received(from: first) }
                beginEpoch(frame)
                first = log.end
                continue
            }
            log.append(frame)
        }
        if n == Self.maxDrainPerPass { worker.wake() }
        if log.end > first { received(from: first) }
    }

    /// The cluster's Redis lost the stream and a new epoch began (`BroadcastQueues.beginEpoch`).
    /// The history so far belongs to the old epoch: resumes no longer see it. Subscribers
    /// are closed with 1012 after what they were already owed: their clients drop any seq
    /// at or below the last they applied in "the same" epoch, so a new epoch must reach
    /// them as a new connection (`Connected` names it; their resume gets `recovered: false`
    /// and they reload `/api/snapshot`).
    private func beginEpoch(_ marker: Unmanaged<BroadcastFrame>) {
        let newEpoch = String(decoding: marker.takeUnretainedValue().json, as: UTF8.self)
        marker.release()
        guard newEpoch != epoch else { return }
        let old = epoch
        epoch = newEpoch
        epochResets += 1
        log.beginEpoch()
        rateGroups.beginEpoch()
        var closed = 0
        for slot in 0..<table.highWater {
            let c = table.pointer(slot)
            guard c.pointee.isLive, c.pointee.endpoint == .stream, c.pointee.lifecycle.acceptsOutgoingFrames else { continue }
            worker.lifecycle.close(c, .other(.serviceRestart), reason: "the stream's epoch changed; reconnect")
            closed += 1
        }
        // A node joining the cluster adopts its epoch before it has any history: no news.
        let level: Logger.Level = log.end == 0 && closed == 0 ? .debug : .warning
        worker.logger.log(level: level, "stream epoch changed: history reset, subscribers closed with 1012", metadata: [
            "old_epoch": "\(old)", "epoch": "\(newEpoch)", "closed": "\(closed)",
        ])
    }

    /// Frames [first, log.end) are new: every subscriber that may want one is activated.
    func received(from first: UInt64) {
        if passFirstFrame == nil { passFirstFrame = first }
        batchNumber &+= 1
        // The index lists these frames can concern: one per channel, one per (channel, symbol).
        keysScratch.removeAll(keepingCapacity: true)
        var anyPublic = false
        let throttling = rateGroups.isActive
        var i = first
        while i < log.end {
            let e = log.entry(i)
            if throttling && e.pointee.accountHash == 0 && Channel.throttleMask & (1 << e.pointee.channel) != 0 {
                rateGroups.offer(e)
            }
            if e.pointee.accountHash != 0 {
                // Private: only the connections its account's list names are touched.
                let ak = SubscriptionIndex.accountKey(e.pointee.accountHash)
                if !keysScratch.contains(ak) { keysScratch.append(ak) }
                i += 1
                continue
            }
            anyPublic = true
            let ck = SubscriptionIndex.channelKey(e.pointee.channel)
            if !keysScratch.contains(ck) { keysScratch.append(ck) }
            let sk = Self.symbolKey(e)
            if !keysScratch.contains(sk) { keysScratch.append(sk) }
            i += 1
        }
        index.forEachCandidate(keys: keysScratch, everything: anyPublic) { slot in
            activate(table.pointer(slot), first: first)
        }
        if worker.logger.logLevel <= .debug { logBroadcasts(from: first) }
    }

    @inline(__always)
    private static func symbolKey(_ e: UnsafeMutablePointer<LogEntry>) -> UInt64 {
        e.pointee.symbolHash != 0
            ? SubscriptionIndex.symbolKey(e.pointee.channel, e.pointee.symbolHash)
            : SubscriptionIndex.noSymbolKey(e.pointee.channel)
    }

    /// The spec's "Broadcasting {type} message to {count} clients" (DEBUG), per frame:
    /// the count is the subscribers the index names on this reactor.
    private func logBroadcasts(from first: UInt64) {
        var i = first
        while i < log.end {
            let e = log.entry(i)
            let channel = Channel(rawValue: e.pointee.channel)!
            let count = index.everything.count
                + (index.lists[SubscriptionIndex.channelKey(e.pointee.channel)]?.count ?? 0)
                + (index.lists[Self.symbolKey(e)]?.count ?? 0)
            worker.logger.debug("Broadcasting \(channel.typeName) message to \(count) clients", metadata: ["seq": "\(e.pointee.seq)"])
            i += 1
        }
    }

    /// A subscriber has new frames from `first` on.
    @inline(__always)
    private func activate(_ c: UnsafeMutablePointer<Connection>, first: UInt64) {
        if c.pointee.lastBatch == batchNumber { return }
        c.pointee.lastBatch = batchNumber
        if !c.pointee.lifecycle.acceptsOutgoingFrames { return }
        if let queue = Self.slowQueue(c) {
            worker.slowConsumers.append(c, queue, from: first)
            return
        }
        if !c.pointee.flags.contains(.broadcastPending) {
            c.pointee.flags.insert(.broadcastPending)
            c.pointee.cursor = first
            c.pointee.cursorOffset = 0
        }
        if c.pointee.flags.contains(.writeBlocked) {
            // Its socket is full: nothing to write now, but its backlog may be over the bound.
            let estimate = log.bytes(from: c.pointee.cursor) - UInt64(c.pointee.cursorOffset) + UInt64(c.pointee.output.count)
            if estimate > UInt64(config.maxBacklogBytes) || log.end - c.pointee.cursor > Self.maxLagEntries {
                worker.slowConsumers.enforceBacklog(c)
            }
        } else {
            output.markDirty(c)
        }
    }

    /// Whether the log entry is for this subscriber. Static, like the other per-connection
    /// lookups here: they read the connection alone, and a call needs no object.
    @inline(__always)
    static func matches(_ c: UnsafeMutablePointer<Connection>, _ e: UnsafeMutablePointer<LogEntry>) -> Bool {
        if c.pointee.channelMask & (1 << e.pointee.channel) == 0 { return false }
        if e.pointee.seq <= c.pointee.minSeq { return false }
        // A throttled subscriber gets public prices and candles from its rate groups.
        if c.pointee.flags.contains(.throttled) && e.pointee.accountHash == 0 && Channel.throttleMask & (1 << e.pointee.channel) != 0 {
            return false
        }
        if e.pointee.accountHash != 0 {
            guard c.pointee.flags.contains(.hasAccounts), let x = Self.extras(c),
                  x.mayRead(accountHash: e.pointee.accountHash, frame: e.pointee.frame.takeUnretainedValue())
            else { return false }
        }
        if c.pointee.flags.contains(.filtered) && e.pointee.symbolHash != 0 {
            return Subscription.contains(Self.extras(c)!.subscription.symbolHashes, e.pointee.symbolHash)
        }
        return true
    }

    /// Before a per-connection message is queued: if `output` is empty, its place in the
    /// stream is "after everything pending now". Returns the seq to stamp on it.
    func placeControl(_ c: UnsafeMutablePointer<Connection>) -> UInt64 {
        if c.pointee.output.isEmpty {
            if let queue = Self.slowQueue(c) {
                c.pointee.controlMark = queue.end
            } else {
                c.pointee.controlMark = log.end
            }
            c.pointee.controlSeq = max(log.headSeq, c.pointee.minSeq)
        }
        return c.pointee.controlSeq
    }

    // MARK: - Blocked subscribers

    func addBlocked(_ c: UnsafeMutablePointer<Connection>) {
        c.pointee.listIndex = UInt32(blocked.count)
        blocked.append(c.pointee.slot)
    }

    func removeBlocked(_ c: UnsafeMutablePointer<Connection>) {
        let i = Int(c.pointee.listIndex)
        guard i < blocked.count, blocked[i] == c.pointee.slot else { return }
        let last = blocked.removeLast()
        if i < blocked.count {
            blocked[i] = last
            table.pointer(last).pointee.listIndex = UInt32(i)
        }
    }

    // MARK: - Retention and metrics

    /// End of pass: keep the history window plus what blocked subscribers still need,
    /// and record how long this pass's frames took from publish to socket.
    func afterFlush() {
        if let first = passFirstFrame {
            let now = monotonicNanoseconds()
            var i = max(first, log.start)
            while i < log.end {
                stats.observeLatency(nanoseconds: now &- log.entry(i).pointee.acceptedAt)
                i += 1
            }
            passFirstFrame = nil
        }
        let history = UInt64(config.historySize)
        stats.historyMessages.store(min(log.count, config.historySize), ordering: .relaxed)
        var backlog = 0
        for slot in blocked {
            let c = table.pointer(slot)
            if let queue = Self.slowQueue(c) {
                backlog += queue.pendingBytes
            } else if c.pointee.flags.contains(.broadcastPending) {
                backlog += Int(log.bytes(from: c.pointee.cursor)) - Int(c.pointee.cursorOffset)
            }
            backlog += c.pointee.output.count
        }
        stats.backlogBytes.store(backlog, ordering: .relaxed)
        guard UInt64(log.count) > history + 256 else { return }
        var keepFrom = log.end - history
        for slot in blocked {
            let c = table.pointer(slot)
            if c.pointee.flags.contains(.broadcastPending) && Self.slowQueue(c) == nil {
                keepFrom = min(keepFrom, c.pointee.cursor)
            }
        }
        log.trim(below: keepFrom)
    }

    // MARK: - Per-connection state

    @inline(__always)
    static func extras(_ c: UnsafeMutablePointer<Connection>) -> ConnectionExtras? {
        guard let raw = c.pointee.extras else { return nil }
        return Unmanaged<ConnectionExtras>.fromOpaque(raw).takeUnretainedValue()
    }

    func ensureExtras(_ c: UnsafeMutablePointer<Connection>) -> ConnectionExtras {
        if let e = Self.extras(c) { return e }
        let e = ConnectionExtras()
        c.pointee.extras = Unmanaged.passRetained(e).toOpaque()
        return e
    }

    @inline(__always)
    static func slowQueue(_ c: UnsafeMutablePointer<Connection>) -> SlowConsumerQueue? {
        guard c.pointee.extras != nil else { return nil }
        return Self.extras(c)?.slowQueue
    }

    func setSlowQueue(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue?) {
        if queue == nil && c.pointee.extras == nil { return }
        let e = ensureExtras(c)
        e.slowQueue = queue
        releaseExtrasIfEmpty(c)
    }

    private func releaseExtrasIfEmpty(_ c: UnsafeMutablePointer<Connection>) {
        guard let raw = c.pointee.extras else { return }
        let e = Unmanaged<ConnectionExtras>.fromOpaque(raw)
        if e.takeUnretainedValue().isEmpty && !c.pointee.flags.contains(.filtered) {
            e.release()
            c.pointee.extras = nil
        }
    }

    /// Drops all broadcast state (the socket closes).
    func releaseState(_ c: UnsafeMutablePointer<Connection>) {
        leaveIndex(c)
        leaveAccounts(c)
        if let e = Self.extras(c) { rateGroups.leave(c, e) }
        c.pointee.flags.remove([.broadcastPending, .filtered, .sentBroadcast])
        if let raw = c.pointee.extras {
            Unmanaged<ConnectionExtras>.fromOpaque(raw).release()
            c.pointee.extras = nil
        }
        c.pointee.channelMask = 0
    }

    // MARK: - Subscription index

    func joinIndex(_ c: UnsafeMutablePointer<Connection>, _ subscription: Subscription) {
        leaveIndex(c)
        c.pointee.channelMask = subscription.channelMask
        if subscription.isThrottled {
            // Listed only for its unthrottled channels: a price tick never touches it; its
            // rate groups do (RateGroups).
            let e = ensureExtras(c)
            e.subscription = subscription
            if subscription.symbolHashes.isEmpty { c.pointee.flags.remove(.filtered) } else { c.pointee.flags.insert(.filtered) }
            var listed = subscription
            listed.channelMask &= ~Channel.throttleMask
            listed.maxFrequency = 0
            if listed.channelMask != 0 {
                index.add(c.pointee.slot, listed, position: &c.pointee.indexPosition, extras: e)
            }
            rateGroups.join(c, e, subscription, lastSent: max(log.headSeq, c.pointee.minSeq))
            c.pointee.flags.insert(.indexed)
            return
        }
        if let e = Self.extras(c), e.throttle != nil { rateGroups.leave(c, e) }
        if subscription.isEverything {
            c.pointee.flags.remove(.filtered)
            if let e = Self.extras(c) { e.subscription = subscription }
            releaseExtrasIfEmpty(c)
            index.add(c.pointee.slot, subscription, position: &c.pointee.indexPosition, extras: nil)
        } else {
            let e = ensureExtras(c)
            e.subscription = subscription
            if subscription.symbolHashes.isEmpty { c.pointee.flags.remove(.filtered) } else { c.pointee.flags.insert(.filtered) }
            if subscription.channelMask != 0 {
                index.add(c.pointee.slot, subscription, position: &c.pointee.indexPosition, extras: e)
            }
        }
        c.pointee.flags.insert(.indexed)
    }

    // MARK: - Accounts

    /// Records what the connection's token grants, and lists it under each of its accounts.
    func grant(_ c: UnsafeMutablePointer<Connection>, _ grant: AccessGrant) {
        leaveAccounts(c)
        let e = ensureExtras(c)
        e.grant = grant
        e.accountHashes = grant.accounts.map { AccountHash.hash($0) }
        if e.accountHashes.isEmpty { c.pointee.flags.remove(.hasAccounts); return }
        c.pointee.flags.insert(.hasAccounts)
        index.joinAccounts(c.pointee.slot, e.accountHashes, e)
    }

    /// The connection leaves its accounts' lists (its Close, or the socket's).
    func leaveAccounts(_ c: UnsafeMutablePointer<Connection>) {
        guard c.pointee.flags.contains(.hasAccounts), let e = Self.extras(c) else { return }
        c.pointee.flags.remove(.hasAccounts)
        index.leaveAccounts(c.pointee.slot, e, extrasOf: { slot in Self.extras(table.pointer(slot)) })
    }

    /// The token's grant, if the connection has one.
    @inline(__always)
    static func grant(of c: UnsafeMutablePointer<Connection>) -> AccessGrant? {
        guard c.pointee.extras != nil else { return nil }
        return extras(c)?.grant
    }

    /// No broadcast reaches the connection after this (its Close, or a new subscription).
    func leaveIndex(_ c: UnsafeMutablePointer<Connection>) {
        guard c.pointee.flags.contains(.indexed) else { return }
        c.pointee.flags.remove(.indexed)
        index.remove(
            c.pointee.slot, everythingPosition: c.pointee.indexPosition, extras: Self.extras(c),
            setPosition: { slot, position in table.pointer(slot).pointee.indexPosition = position },
            extrasOf: { slot in Self.extras(table.pointer(slot)) }
        )
    }

    /// The subscription a connection has now.
    func currentSubscription(_ c: UnsafeMutablePointer<Connection>) -> Subscription {
        if let e = Self.extras(c), c.pointee.channelMask != Channel.allMask || c.pointee.flags.contains(.filtered) || e.subscription.maxFrequency != 0 {
            return e.subscription
        }
        return c.pointee.channelMask == Channel.allMask ? .everything : Subscription(channelMask: c.pointee.channelMask, symbolHashes: [], symbols: [])
    }
}
