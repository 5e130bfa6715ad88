// Resume (PROTOCOL.md "Resume"): replaying what a reconnecting client missed.
import AccessToken
import Logging
import Reactor
import TradingStream
import WireProtocol

extension StreamEndpoint {
    // MARK: - Resume

    /// Replays what a reconnecting client missed (PROTOCOL.md "Resume"). Positions the
    /// connection's own messages (the confirmation) just before the replay.
    func resume(_ c: UnsafeMutablePointer<Connection>, epoch: String, since: UInt64) -> (recovered: Bool, replayed: Int) {
        stats.resumes.bump()
        let head = log.headSeq
        guard epoch == path.epoch else { return (false, 0) }
        // A resume point this epoch never issued (a `since` beyond its head) cannot be
        // honoured: claiming it would silently skip everything up to that seq.
        if since > context.queues.headSeq.load(ordering: .acquiring) { return (false, 0) }
        if since >= head {
            // Nothing missed yet; this reactor may even be behind the client.
            c.pointee.minSeq = max(c.pointee.minSeq, since)
            if let t = BroadcastPath.extras(c)?.throttle { t.lastSent = max(t.lastSent, since) }
            c.pointee.controlSeq = since
            stats.resumesRecovered.bump()
            return (true, 0)
        }
        let window = UInt64(min(log.epochCount, config.historySize))
        guard window > 0 else { return (false, 0) }
        let oldest = log.entry(log.end - window).pointee.seq
        guard since + 1 >= oldest else { return (false, 0) }
        let from = log.firstIndex(afterSeq: since)
        c.pointee.minSeq = since
        var replayed = 0
        if !c.pointee.flags.contains(.sentBroadcast) && BroadcastPath.slowQueue(c) == nil {
            // Nothing sent live yet: rewind the cursor; the confirmation goes first. A throttled
            // subscriber's prices and candles replay conflated: its groups' newest update
            // per key after `since`.
            if let x = BroadcastPath.extras(c), let t = x.throttle {
                t.lastSent = since
                path.rateGroups.seed(c, t, x.subscription, log: log, from: from)
            }
            var index = from
            while index < log.end {
                if BroadcastPath.matches(c, log.entry(index)) { replayed += 1 }
                index += 1
            }
            c.pointee.cursor = from
            c.pointee.cursorOffset = 0
            if from < log.end { c.pointee.flags.insert(.broadcastPending) }
            c.pointee.controlMark = from
            c.pointee.controlSeq = since
        } else {
            // Frames already went out live: replay the ones from before this stream began
            // through the connection's own queue, ahead of anything still pending.
            let queue = SlowConsumerQueue()
            let existing = BroadcastPath.slowQueue(c)
            var pendingFrom = log.end
            if existing == nil && c.pointee.flags.contains(.broadcastPending) {
                pendingFrom = c.pointee.cursor
                if c.pointee.cursorOffset > 0 {
                    let e = log.entry(c.pointee.cursor)
                    let (bytes, count) = worker.streamFlusher.wire(c, e)
                    queue.append(e.pointee.frame, bytes: bytes, count: count, key: 0)
                    queue.consume(Int(c.pointee.cursorOffset))
                    pendingFrom += 1
                }
            }
            let mark = queue.end
            let to = log.firstIndex(afterSeq: c.pointee.liveFromSeq)
            var index = from
            var replayBytes = 0
            while index < to {
                let e = log.entry(index)
                if BroadcastPath.matches(c, e) {
                    let (bytes, count) = worker.streamFlusher.wire(c, e)
                    queue.append(e.pointee.frame, bytes: bytes, count: count, key: 0)
                    replayed += 1
                    replayBytes += Int(count)
                }
                index += 1
            }
            index = max(pendingFrom, to)
            while index < log.end {
                let e = log.entry(index)
                if BroadcastPath.matches(c, e) {
                    let key = Channel(rawValue: e.pointee.channel)!.isConflatable ? e.pointee.conflationKey : 0
                    let (bytes, count) = worker.streamFlusher.wire(c, e)
                    queue.append(e.pointee.frame, bytes: bytes, count: count, key: key)
                }
                index += 1
            }
            queue.allowance = replayBytes
            if existing == nil {
                c.pointee.flags.remove(.broadcastPending)
                c.pointee.cursorOffset = 0
                path.setSlowQueue(c, queue)
                c.pointee.controlMark = mark
            }
            // (A client already in slow-consumer mode resumes via reconnect instead.)
            c.pointee.controlSeq = since
        }
        stats.resumesRecovered.bump()
        output.markDirty(c)
        return (true, replayed)
    }
}
