import CLibEV
import Glibc
import Logging
import Reactor
import TradingStream
import WireProtocol

/// The broadcast path on a reactor (FR-WEBSOCKET-005, ARCHITECTURE.md "Per-core broadcast
/// queue"): frames arrive through the per-core queue, are appended to the reactor's log,
/// mark their subscribers dirty through the subscription index, and go out once per loop
/// pass in one writev per connection that shares the frames' bytes.
extension Worker {
    /// Most frames taken from the per-core queue in one pass, so a burst cannot starve
    /// reads and timers; the rest wait for the next pass.
    static let maxDrainPerPass = 4096
    /// A lagging subscriber more than this many log entries behind moves to its own queue,
    /// which bounds how long the log must keep frames for it.
    static let maxLagEntries: UInt64 = 8192

    // MARK: - Arrival

    /// Moves frames from the per-core queue into the log and activates their subscribers.
    func drainBroadcasts() {
        let first = log.end
        var n = 0
        while n < Self.maxDrainPerPass, let frame = inbox.pop() {
            log.append(frame)
            n += 1
        }
        if n == 0 { return }
        if n == Self.maxDrainPerPass { wakeSelf() }
        if passFirstFrame == nil { passFirstFrame = first }
        batchNumber &+= 1
        // The index lists these frames can concern: one per channel, one per (channel, symbol).
        keysScratch.removeAll(keepingCapacity: true)
        var index = first
        while index < log.end {
            let e = log.entry(index)
            let ck = SubscriptionIndex.channelKey(e.pointee.channel)
            if !keysScratch.contains(ck) { keysScratch.append(ck) }
            let sk = e.pointee.symbolHash != 0
                ? SubscriptionIndex.symbolKey(e.pointee.channel, e.pointee.symbolHash)
                : SubscriptionIndex.noSymbolKey(e.pointee.channel)
            if !keysScratch.contains(sk) { keysScratch.append(sk) }
            index += 1
        }
        subscriptions.forEachCandidate(keys: keysScratch) { slot in
            activate(table.pointer(slot), first: first)
        }
        if logger.logLevel <= .debug { logBroadcasts(from: first) }
    }

    /// The spec's "Broadcasting {type} message to {count} clients" (DEBUG), per frame:
    /// the count is the subscribers the index names on this reactor.
    private func logBroadcasts(from first: UInt64) {
        var index = first
        while index < log.end {
            let e = log.entry(index)
            let channel = Channel(rawValue: e.pointee.channel)!
            let symbolKey = e.pointee.symbolHash != 0
                ? SubscriptionIndex.symbolKey(e.pointee.channel, e.pointee.symbolHash)
                : SubscriptionIndex.noSymbolKey(e.pointee.channel)
            let count = subscriptions.everything.count
                + (subscriptions.lists[SubscriptionIndex.channelKey(e.pointee.channel)]?.count ?? 0)
                + (subscriptions.lists[symbolKey]?.count ?? 0)
            logger.debug("Broadcasting \(channel.typeName) message to \(count) clients", metadata: ["seq": "\(e.pointee.seq)"])
            index += 1
        }
    }

    /// A subscriber has new frames from `first` on.
    @inline(__always)
    private func activate(_ c: UnsafeMutablePointer<Connection>, first: UInt64) {
        if c.pointee.lastBatch == batchNumber { return }
        c.pointee.lastBatch = batchNumber
        if c.pointee.phase != .webSocket { return }
        if let queue = slowQueue(c) {
            appendMatching(c, queue, from: first)
            if queue.pendingBytes > config.maxBacklogBytes + queue.allowance {
                disconnectSlowConsumer(c, queue)
            } else if !c.pointee.flags.contains(.writeBlocked) {
                markDirty(c)
            }
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
                enforceBacklog(c)
            }
        } else {
            markDirty(c)
        }
    }

    @inline(__always)
    func matches(_ c: UnsafeMutablePointer<Connection>, _ e: UnsafeMutablePointer<LogEntry>) -> Bool {
        if c.pointee.channelMask & (1 << e.pointee.channel) == 0 { return false }
        if e.pointee.seq <= c.pointee.minSeq { return false }
        if c.pointee.flags.contains(.filtered) && e.pointee.symbolHash != 0 {
            return Subscription.contains(extras(c)!.subscription.symbolHashes, e.pointee.symbolHash)
        }
        return true
    }

    // MARK: - Writing

    /// Writes a subscriber's pending frames and its own messages, in order, with as few
    /// writev calls as the socket accepts. Returns false if the connection was closed.
    @discardableResult
    func flushStream(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        if let queue = slowQueue(c) { return flushSlowQueue(c, queue) }
        let fd = c.pointee.fd
        let sessionOpen = c.pointee.session.state == .open
        while true {
            let pending = c.pointee.flags.contains(.broadcastPending)
            let hasControl = !c.pointee.output.isEmpty
            // After our Close, nothing queued behind it may follow it.
            let limit = (!sessionOpen && hasControl) ? min(c.pointee.controlMark, log.end) : (sessionOpen ? log.end : c.pointee.cursor)
            var n = 0
            var total = 0
            var index = pending ? c.pointee.cursor : log.end
            var offset = Int(c.pointee.cursorOffset)
            var controlAdded = !hasControl
            while n < Self.maxIovecs {
                if !controlAdded && (!pending || index >= c.pointee.controlMark || index >= limit) {
                    let out = c.pointee.output.readable
                    iovecs[n] = iovec(iov_base: out.baseAddress, iov_len: out.count)
                    iovKinds[n] = UInt64.max
                    total += out.count
                    n += 1
                    controlAdded = true
                    continue
                }
                if !pending || index >= limit { break }
                let e = log.entry(index)
                if matches(c, e) {
                    let length = Int(e.pointee.count) - offset
                    iovecs[n] = iovec(iov_base: e.pointee.bytes + offset, iov_len: length)
                    iovKinds[n] = index
                    total += length
                    n += 1
                }
                offset = 0
                index += 1
            }
            let scannedTo = index
            if n == 0 {
                finishScan(c, at: scannedTo)
                break
            }
            let written = Socket.send(fd, iovecs, count: n)
            if written < 0 {
                let err = errno
                if err == EINTR { continue }
                if err == EAGAIN { setWriteWatch(c, true); return true }
                closeAfterWriteError(c, err)
                return false
            }
            stats.bytesSent.bump(UInt64(written))
            if written == total {
                var sent: UInt64 = 0
                for k in 0..<n where iovKinds[k] != UInt64.max { sent += 1 }
                if sent > 0 {
                    stats.messagesSent.bump(sent)
                    c.pointee.flags.insert(.sentBroadcast)
                }
                if hasControl { c.pointee.output.release(pool: pool) }
                c.pointee.cursorOffset = 0
                finishScan(c, at: scannedTo)
                if n == Self.maxIovecs { continue }   // more than one writev's worth
                break
            }
            // Partial write: find where it stopped.
            var left = written
            var sent: UInt64 = 0
            for k in 0..<n {
                let length = iovecs[k].iov_len
                if iovKinds[k] == UInt64.max {
                    let done = min(left, length)
                    c.pointee.output.consume(done, pool: pool)
                    left -= done
                    if done < length {
                        // Stopped inside our own bytes: frames before the mark are all out.
                        c.pointee.cursor = max(c.pointee.cursor, min(c.pointee.controlMark, scannedTo))
                        c.pointee.cursorOffset = 0
                        break
                    }
                } else {
                    if left >= length {
                        left -= length
                        sent += 1
                        c.pointee.cursor = iovKinds[k] + 1
                        c.pointee.cursorOffset = 0
                    } else {
                        let alreadyOut = (iovKinds[k] == c.pointee.cursor) ? Int(c.pointee.cursorOffset) : 0
                        c.pointee.cursor = iovKinds[k]
                        c.pointee.cursorOffset = UInt32(alreadyOut + left)
                        if left > 0 { c.pointee.flags.insert(.sentBroadcast) }
                        left = 0
                        break
                    }
                }
            }
            if sent > 0 {
                stats.messagesSent.bump(sent)
                c.pointee.flags.insert(.sentBroadcast)
            }
            setWriteWatch(c, true)
            return true
        }
        setWriteWatch(c, false)
        return true
    }

    /// Everything up to `index` has been written or skipped.
    @inline(__always)
    private func finishScan(_ c: UnsafeMutablePointer<Connection>, at index: UInt64) {
        c.pointee.cursor = index
        c.pointee.cursorOffset = 0
        if index >= log.end || c.pointee.session.state != .open {
            c.pointee.flags.remove(.broadcastPending)
        }
    }

    /// The slow consumer's private queue, written like the log (own messages at their mark).
    private func flushSlowQueue(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue) -> Bool {
        let fd = c.pointee.fd
        while true {
            queue.skipDead()
            let hasControl = !c.pointee.output.isEmpty
            var n = 0
            var total = 0
            var index = queue.base
            var offset = Int(queue.frontOffset)
            var controlAdded = !hasControl
            while n < Self.maxIovecs {
                if !controlAdded && index >= c.pointee.controlMark {
                    let out = c.pointee.output.readable
                    iovecs[n] = iovec(iov_base: out.baseAddress, iov_len: out.count)
                    total += out.count
                    n += 1
                    controlAdded = true
                    continue
                }
                if index >= queue.end { break }
                let item = queue.item(index)
                if item.alive {
                    let length = Int(item.count) - offset
                    iovecs[n] = iovec(iov_base: item.bytes + offset, iov_len: length)
                    total += length
                    n += 1
                }
                offset = 0
                index += 1
            }
            if !controlAdded && n < Self.maxIovecs {
                let out = c.pointee.output.readable
                iovecs[n] = iovec(iov_base: out.baseAddress, iov_len: out.count)
                total += out.count
                n += 1
            }
            if n == 0 { break }
            let written = Socket.send(fd, iovecs, count: n)
            if written < 0 {
                let err = errno
                if err == EINTR { continue }
                if err == EAGAIN { setWriteWatch(c, true); return true }
                closeAfterWriteError(c, err)
                return false
            }
            stats.bytesSent.bump(UInt64(written))
            // Split the written bytes between the queue (before the mark) and our own bytes.
            var left = written
            let beforeMark = hasControl ? queueBytes(queue, upTo: c.pointee.controlMark) : queue.pendingBytes
            let fromQueue = min(left, beforeMark)
            let framesBefore = queue.liveCount
            queue.consume(fromQueue)
            stats.messagesSent.bump(UInt64(framesBefore - queue.liveCount))
            left -= fromQueue
            if hasControl && left > 0 {
                let done = min(left, c.pointee.output.count)
                c.pointee.output.consume(done, pool: pool)
                left -= done
                if left > 0 { queue.consume(left) }
            }
            if written < total {
                setWriteWatch(c, true)
                return true
            }
        }
        if queue.isEmpty && c.pointee.output.isEmpty {
            // Caught up: back to the shared log.
            setSlowQueue(c, nil)
            c.pointee.flags.remove(.broadcastPending)
        }
        setWriteWatch(c, false)
        return true
    }

    private func queueBytes(_ queue: SlowConsumerQueue, upTo mark: UInt64) -> Int {
        var bytes = 0
        var index = queue.base
        var first = true
        while index < min(mark, queue.end) {
            let item = queue.item(index)
            if item.alive { bytes += Int(item.count) - (first ? Int(queue.frontOffset) : 0) }
            first = false
            index += 1
        }
        return bytes
    }

    // MARK: - Slow consumers

    /// A blocked subscriber's estimate passed the bound: count exactly, and move it to its
    /// own conflating queue if it really is over.
    private func enforceBacklog(_ c: UnsafeMutablePointer<Connection>) {
        var exact = c.pointee.output.count
        var index = c.pointee.cursor
        var first = true
        while index < log.end {
            let e = log.entry(index)
            if matches(c, e) { exact += Int(e.pointee.count) - (first ? Int(c.pointee.cursorOffset) : 0) }
            first = false
            index += 1
        }
        if exact <= config.maxBacklogBytes && log.end - c.pointee.cursor <= Self.maxLagEntries { return }
        let queue = moveToSlowQueue(c)
        if queue.pendingBytes > config.maxBacklogBytes {
            disconnectSlowConsumer(c, queue)
        }
    }

    /// Copies a subscriber's pending frames (conflating as it goes) into a private queue.
    @discardableResult
    func moveToSlowQueue(_ c: UnsafeMutablePointer<Connection>) -> SlowConsumerQueue {
        let queue = SlowConsumerQueue()
        var newMark: UInt64?
        let hasControl = !c.pointee.output.isEmpty
        if c.pointee.flags.contains(.broadcastPending) {
            var index = c.pointee.cursor
            while index < log.end {
                if hasControl && newMark == nil && index >= c.pointee.controlMark { newMark = queue.end }
                let e = log.entry(index)
                if matches(c, e) || (index == c.pointee.cursor && c.pointee.cursorOffset > 0) {
                    let key = Channel(rawValue: e.pointee.channel)!.isConflatable ? e.pointee.conflationKey : 0
                    queue.append(e.pointee.frame, bytes: e.pointee.bytes, count: e.pointee.count, key: key)
                    if index == c.pointee.cursor && c.pointee.cursorOffset > 0 {
                        queue.consume(Int(c.pointee.cursorOffset))
                    }
                }
                index += 1
            }
        }
        c.pointee.controlMark = newMark ?? queue.end
        stats.conflated.bump(queue.conflated)
        queue.conflated = 0
        c.pointee.flags.remove(.broadcastPending)
        c.pointee.cursorOffset = 0
        setSlowQueue(c, queue)
        return queue
    }

    /// Appends the frames in [first, end) that match to a slow consumer's queue.
    private func appendMatching(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue, from first: UInt64) {
        var index = first
        while index < log.end {
            let e = log.entry(index)
            if matches(c, e) {
                let key = Channel(rawValue: e.pointee.channel)!.isConflatable ? e.pointee.conflationKey : 0
                queue.append(e.pointee.frame, bytes: e.pointee.bytes, count: e.pointee.count, key: key)
            }
            index += 1
        }
        if queue.conflated > 0 {
            stats.conflated.bump(queue.conflated)
            queue.conflated = 0
        }
    }

    /// Events alone exceed the backlog: close 1013 so the client resumes losslessly,
    /// rather than drop a trade or position update silently.
    private func disconnectSlowConsumer(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue) {
        let backlog = queue.pendingBytes
        queue.dropAllButPartialFront()
        c.pointee.output.release(pool: pool)
        c.pointee.controlMark = queue.end
        stats.slowConsumerDisconnects.bump()
        stats.broadcastFailures.bump()
        logger.warning("Failed to broadcast message: slow consumer over its backlog, closing with 1013", metadata: [
            "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)",
            "backlog_bytes": "\(backlog)", "limit_bytes": "\(config.maxBacklogBytes)",
        ])
        leaveIndex(c)
        startClose(c, code: .tryAgainLater, reason: "slow consumer: backlog over \(config.maxBacklogBytes) bytes; reconnect and resume")
    }

    // MARK: - Log retention and metrics

    /// End of pass: keep the history window plus what blocked subscribers still need,
    /// and record how long this pass's frames took from publish to socket.
    func afterBroadcastFlush() {
        if let first = passFirstFrame {
            let now = monotonicNanoseconds()
            var index = max(first, log.start)
            while index < log.end {
                let accepted = log.entry(index).pointee.acceptedAt
                stats.observeLatency(nanoseconds: now &- accepted)
                index += 1
            }
            passFirstFrame = nil
        }
        let history = UInt64(config.historySize)
        stats.historyMessages.store(min(log.count, config.historySize), ordering: .relaxed)
        var backlog = 0
        for slot in blocked {
            let c = table.pointer(slot)
            if let queue = slowQueue(c) {
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
            if c.pointee.flags.contains(.broadcastPending) && slowQueue(c) == nil {
                keepFrom = min(keepFrom, c.pointee.cursor)
            }
        }
        log.trim(below: keepFrom)
    }

    // MARK: - Extras

    @inline(__always)
    func extras(_ c: UnsafeMutablePointer<Connection>) -> ConnectionExtras? {
        guard let raw = c.pointee.extras else { return nil }
        return Unmanaged<ConnectionExtras>.fromOpaque(raw).takeUnretainedValue()
    }

    func ensureExtras(_ c: UnsafeMutablePointer<Connection>) -> ConnectionExtras {
        if let e = extras(c) { return e }
        let e = ConnectionExtras()
        c.pointee.extras = Unmanaged.passRetained(e).toOpaque()
        return e
    }

    @inline(__always)
    func slowQueue(_ c: UnsafeMutablePointer<Connection>) -> SlowConsumerQueue? {
        guard c.pointee.extras != nil else { return nil }
        return extras(c)?.slowQueue
    }

    func setSlowQueue(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue?) {
        if queue == nil && c.pointee.extras == nil { return }
        let e = ensureExtras(c)
        e.slowQueue = queue
        releaseExtrasIfEmpty(c)
    }

    func releaseExtrasIfEmpty(_ c: UnsafeMutablePointer<Connection>) {
        guard let raw = c.pointee.extras else { return }
        let e = Unmanaged<ConnectionExtras>.fromOpaque(raw)
        if e.takeUnretainedValue().isEmpty && !c.pointee.flags.contains(.filtered) {
            e.release()
            c.pointee.extras = nil
        }
    }

    /// Drops all broadcast state (on close and before freeing the slot).
    func releaseBroadcastState(_ c: UnsafeMutablePointer<Connection>) {
        leaveIndex(c)
        c.pointee.flags.remove([.broadcastPending, .filtered])
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
        if subscription.isEverything {
            c.pointee.flags.remove(.filtered)
            if let e = extras(c) { e.subscription = .everything }
            releaseExtrasIfEmpty(c)
            subscriptions.add(c.pointee.slot, subscription, position: &c.pointee.indexPosition, extras: nil)
        } else {
            let e = ensureExtras(c)
            e.subscription = subscription
            if subscription.symbolHashes.isEmpty { c.pointee.flags.remove(.filtered) } else { c.pointee.flags.insert(.filtered) }
            if subscription.channelMask != 0 {
                subscriptions.add(c.pointee.slot, subscription, position: &c.pointee.indexPosition, extras: e)
            }
        }
        c.pointee.flags.insert(.indexed)
    }

    func leaveIndex(_ c: UnsafeMutablePointer<Connection>) {
        guard c.pointee.flags.contains(.indexed) else { return }
        c.pointee.flags.remove(.indexed)
        subscriptions.remove(
            c.pointee.slot, everythingPosition: c.pointee.indexPosition, extras: extras(c),
            setPosition: { slot, position in table.pointer(slot).pointee.indexPosition = position },
            extrasOf: { slot in extras(table.pointer(slot)) }
        )
    }

    /// The subscription a connection has now.
    func currentSubscription(_ c: UnsafeMutablePointer<Connection>) -> Subscription {
        if let e = extras(c), c.pointee.channelMask != Channel.allMask || c.pointee.flags.contains(.filtered) {
            return e.subscription
        }
        return c.pointee.channelMask == Channel.allMask ? .everything : Subscription(channelMask: c.pointee.channelMask, symbolHashes: [], symbols: [])
    }
}
