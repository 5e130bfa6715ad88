import Logging
import Reactor
import TradingStream

/// The slow-consumer policy (PROTOCOL.md "Slow consumers", STYLE.md rule 6): a subscriber
/// whose unsent backlog passes --max-backlog (or that lags the log by more than
/// `BroadcastPath.maxLagEntries`) moves off the shared log into a private queue where
/// market data is conflated, newest wins. Trades, positions and signals are never dropped:
/// when they alone exceed the bound the connection is closed with 1013, and the client
/// resumes losslessly. Allocation here is per slow client, never on the fast path.
final class SlowConsumers {
    private unowned(unsafe) let worker: Worker
    private let path: BroadcastPath
    private let output: OutputFlusher
    private let stats: WorkerStats
    private let maxBacklogBytes: Int

    init(worker: Worker, path: BroadcastPath, output: OutputFlusher) {
        self.worker = worker
        self.path = path
        self.output = output
        stats = worker.stats
        maxBacklogBytes = worker.config.maxBacklogBytes
    }

    /// A blocked subscriber's estimate passed the bound: count exactly, and move it to its
    /// own conflating queue if it really is over.
    func enforceBacklog(_ c: UnsafeMutablePointer<Connection>) {
        let log = path.log
        var exact = c.pointee.output.count
        var index = c.pointee.cursor
        var first = true
        while index < log.end {
            let e = log.entry(index)
            if BroadcastPath.matches(c, e) { exact += Int(worker.streamFlusher.wire(c, e).1) - (first ? Int(c.pointee.cursorOffset) : 0) }
            first = false
            index += 1
        }
        if exact <= maxBacklogBytes && log.end - c.pointee.cursor <= BroadcastPath.maxLagEntries { return }
        let queue = moveToQueue(c)
        if queue.pendingBytes > maxBacklogBytes {
            disconnect(c, queue)
        }
    }

    /// Copies a subscriber's pending frames (conflating as it goes) into a private queue.
    /// --max-bandwidth held the connection back: its pending frames move to its own queue,
    /// where prices and candles conflate while it waits for tokens; events past the bound
    /// close it with 1013, as for any slow consumer.
    func holdForBandwidth(_ c: UnsafeMutablePointer<Connection>) {
        guard BroadcastPath.slowQueue(c) == nil, c.pointee.flags.contains(.broadcastPending) else { return }
        let queue = moveToQueue(c)
        if queue.pendingBytes > maxBacklogBytes { disconnect(c, queue) }
    }

    @discardableResult
    func moveToQueue(_ c: UnsafeMutablePointer<Connection>) -> SlowConsumerQueue {
        let log = path.log
        let queue = SlowConsumerQueue()
        var newMark: UInt64?
        let hasControl = !c.pointee.output.isEmpty
        let throttle = c.pointee.flags.contains(.throttled) ? BroadcastPath.extras(c)?.throttle : nil
        if let t = throttle, let p = t.partial {
            // The rest of a group update the socket took part of goes first.
            queue.append(p.frame, bytes: p.bytes, count: p.count, key: 0)
            queue.consume(Int(p.offset))
            p.frame.release()
            t.partial = nil
        }
        if c.pointee.flags.contains(.broadcastPending) {
            var index = c.pointee.cursor
            while index < log.end {
                if hasControl && newMark == nil && index >= c.pointee.controlMark { newMark = queue.end }
                let e = log.entry(index)
                let partlyWritten = index == c.pointee.cursor && c.pointee.cursorOffset > 0
                if BroadcastPath.matches(c, e) || partlyWritten {
                    if let t = throttle, !partlyWritten { queueHeld(c, t, queue, before: e.pointee.seq) }
                    let (bytes, count) = worker.streamFlusher.wire(c, e)
                    queue.append(e.pointee.frame, bytes: bytes, count: count, key: Self.conflationKey(e))
                    if partlyWritten { queue.consume(Int(c.pointee.cursorOffset)) }
                    if let t = throttle { t.lastSent = max(t.lastSent, e.pointee.seq) }
                }
                index += 1
            }
        }
        c.pointee.controlMark = newMark ?? queue.end
        stats.conflated.bump(queue.conflated)
        queue.conflated = 0
        c.pointee.flags.remove(.broadcastPending)
        c.pointee.cursorOffset = 0
        path.setSlowQueue(c, queue)
        return queue
    }

    /// New frames [first, log.end) for a subscriber already in its own queue.
    func append(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue, from first: UInt64) {
        let log = path.log
        let throttle = c.pointee.flags.contains(.throttled) ? BroadcastPath.extras(c)?.throttle : nil
        var index = first
        while index < log.end {
            let e = log.entry(index)
            if BroadcastPath.matches(c, e) {
                if let t = throttle { queueHeld(c, t, queue, before: e.pointee.seq) }
                let (bytes, count) = worker.streamFlusher.wire(c, e)
                queue.append(e.pointee.frame, bytes: bytes, count: count, key: Self.conflationKey(e))
                if let t = throttle { t.lastSent = max(t.lastSent, e.pointee.seq) }
            }
            index += 1
        }
        if queue.conflated > 0 {
            stats.conflated.bump(queue.conflated)
            queue.conflated = 0
        }
        if queue.pendingBytes > maxBacklogBytes + queue.allowance {
            disconnect(c, queue)
        } else if !c.pointee.flags.contains(.writeBlocked) {
            output.markDirty(c)
        }
    }

    /// A throttled slow consumer: its group updates held below `seq` join its queue ahead
    /// of the frame with that seq, so that its stream stays in seq order.
    private func queueHeld(_ c: UnsafeMutablePointer<Connection>, _ t: ThrottleState, _ queue: SlowConsumerQueue, before seq: UInt64) {
        path.rateGroups.collect(t, includeHeld: true, into: &heldScratch)
        for u in heldScratch where u.seq < seq {
            let (bytes, count) = worker.streamFlusher.wire(c, u.entry)
            queue.append(u.entry.pointee.frame, bytes: bytes, count: count, key: Self.conflationKey(u.entry))
            t.lastSent = max(t.lastSent, u.seq)
        }
    }

    /// A throttled slow consumer's released group updates join its queue (a tick came).
    func queueReleased(_ c: UnsafeMutablePointer<Connection>, _ t: ThrottleState, _ queue: SlowConsumerQueue) {
        path.rateGroups.collect(t, includeHeld: false, into: &heldScratch)
        for u in heldScratch {
            let (bytes, count) = worker.streamFlusher.wire(c, u.entry)
            queue.append(u.entry.pointee.frame, bytes: bytes, count: count, key: Self.conflationKey(u.entry))
            t.lastSent = max(t.lastSent, u.seq)
        }
        if queue.conflated > 0 {
            stats.conflated.bump(queue.conflated)
            queue.conflated = 0
        }
    }

    private var heldScratch: [HeldUpdate] = []

    @inline(__always)
    static func conflationKey(_ e: UnsafeMutablePointer<LogEntry>) -> UInt64 {
        Channel(rawValue: e.pointee.channel)!.isConflatable ? e.pointee.conflationKey : 0
    }

    /// Events alone exceed the backlog: close 1013 so the client resumes losslessly,
    /// rather than drop a trade or position update silently.
    private func disconnect(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue) {
        let backlog = queue.pendingBytes
        queue.dropAllButPartialFront()
        c.pointee.output.release(pool: worker.pool)
        c.pointee.controlMark = queue.end
        stats.slowConsumerDisconnects.bump()
        stats.broadcastFailures.bump()
        let logger = worker.logger
        if logger.logLevel <= .warning {
            logger.warning("Failed to broadcast message: slow consumer over its backlog, closing with 1013", metadata: [
                "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)",
                "backlog_bytes": "\(backlog)", "limit_bytes": "\(maxBacklogBytes)",
            ])
        }
        worker.lifecycle.close(c, .slowConsumer, reason: "slow consumer: backlog over \(maxBacklogBytes) bytes; reconnect and resume")
    }
}
