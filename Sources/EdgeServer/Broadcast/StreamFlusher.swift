import Glibc
import Reactor
import TradingStream

/// Writes a `/ws` subscriber: its pending broadcast frames, straight from the shared log
/// (or its slow-consumer queue), with its own messages (`output`) at their place in the
/// stream, in as few gathered writes as the socket accepts. No frame byte is copied: each
/// iovec points into a frame every subscriber shares. After a partial write the cursor
/// and offsets say exactly where to resume.
///
/// Split over three files by what is written: this one (the shared log, the connection's own
/// bytes, --max-bandwidth and the write itself), `StreamFlusher+Throttled.swift` (max_frequency
/// subscribers) and `StreamFlusher+SlowQueue.swift` (slow consumers' private queues).
final class StreamFlusher {
    static let maxIovecs = 1024   // IOV_MAX on Linux

    unowned(unsafe) let worker: Worker
    /// The broadcast log (strong: it is read for every frame written).
    let log: BroadcastLog
    let pool: BufferPool
    let stats: WorkerStats
    /// The socket write (see `OutputFlusher.Send`); set with the flusher's.
    var send: OutputFlusher.Send = OutputFlusher.socketSend
    /// Per-reactor scratch: one iovec array for every connection.
    let iovecs: UnsafeMutablePointer<iovec>
    /// Per iovec: the log index it writes, or UInt64.max for a connection's own bytes.
    let iovKinds: UnsafeMutablePointer<UInt64>
    /// For throttled connections, per iovec: what it is (`Piece`), its seq and its entry.
    let iovPieces: UnsafeMutablePointer<Piece>
    let iovSeqs: UnsafeMutablePointer<UInt64>
    let iovEntries: UnsafeMutablePointer<UnsafeMutablePointer<LogEntry>?>
    /// Per-reactor scratch: a throttled connection's group updates due now.
    var held: [HeldUpdate] = []

    enum Piece: UInt8 { case log, control, group, partialGroup }

    /// Connections waiting for their bandwidth tokens, and when the first is due.
    var bandwidthWaiters: [(slot: UInt32, generation: UInt32)] = []
    private(set) var bandwidthDeadline: UInt32?
    /// An iovec shortened to fit the bucket, and its real length (restored after the write).
    var cutIndex = -1
    var cutLength = 0

    /// The bytes of a log entry for this subscriber: the shared plain frame, or the shared
    /// compressed one for a connection that negotiated permessage-deflate.
    @inline(__always)
    func wire(_ c: UnsafeMutablePointer<Connection>, _ e: UnsafeMutablePointer<LogEntry>) -> (UnsafeMutableRawPointer, UInt32) {
        if c.pointee.flags.contains(.deflateBroadcasts) { return compression.wire(e) }
        return (e.pointee.bytes, e.pointee.count)
    }

    /// Strong: consulted per delivery for compressing subscribers.
    let compression: Compression

    init(worker: Worker, log: BroadcastLog, compression: Compression) {
        self.worker = worker
        self.log = log
        self.compression = compression
        pool = worker.pool
        stats = worker.stats
        iovecs = .allocate(capacity: Self.maxIovecs)
        iovKinds = .allocate(capacity: Self.maxIovecs)
        iovPieces = .allocate(capacity: Self.maxIovecs)
        iovSeqs = .allocate(capacity: Self.maxIovecs)
        iovEntries = .allocate(capacity: Self.maxIovecs)
        held.reserveCapacity(256)
    }

    deinit {
        iovecs.deallocate()
        iovKinds.deallocate()
        iovPieces.deallocate()
        iovSeqs.deallocate()
        iovEntries.deallocate()
    }

    /// Writes what the subscriber has pending. Returns false if the connection was closed.
    @discardableResult
    func flush(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        if let queue = BroadcastPath.slowQueue(c) { return flushSlowQueue(c, queue) }
        if c.pointee.flags.contains(.throttled), let t = BroadcastPath.extras(c)?.throttle { return flushThrottled(c, t) }
        let sessionOpen = c.pointee.lifecycle.acceptsOutgoingFrames
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
                if BroadcastPath.matches(c, e) {
                    let (bytes, count) = wire(c, e)
                    let length = Int(count) - offset
                    iovecs[n] = iovec(iov_base: bytes + offset, iov_len: length)
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
            let written: Int, cut: Bool
            switch writeGathered(c, n, total: total) {
            case .interrupted: continue
            case .stopped(let keepOpen): return keepOpen
            case .wrote(let count, let bucketCut): (written, cut) = (count, bucketCut)
            }
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
                if n == Self.maxIovecs { continue }   // more than one write's worth
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
            if cut { bandwidthLimited(c); return c.pointee.isLive }
            watchWrites(c, true)
            return true
        }
        if c.pointee.tls != nil && !worker.tls.flushHeld(c) {
            if c.pointee.isLive { watchWrites(c, true) }
            return c.pointee.isLive
        }
        watchWrites(c, false)
        return true
    }

    // MARK: - --max-bandwidth

    /// The bytes `c` may be sent now (its bucket refilled), or Int.max without a cap.
    @inline(__always)
    func allowance(_ c: UnsafeMutablePointer<Connection>) -> Int {
        let maxBandwidth = c.pointee.bandwidthCap   // per connection: the token may lower it
        if maxBandwidth == 0 { return Int.max }
        let now = worker.clock.now
        // The bucket holds one second: a longer gap fills it, and cannot overflow the product.
        let elapsed = min(1000, Int(now &- c.pointee.bandwidthStamp))
        c.pointee.bandwidthStamp = now
        c.pointee.bandwidthTokens = min(maxBandwidth, c.pointee.bandwidthTokens + elapsed * maxBandwidth / 1000)
        return c.pointee.bandwidthTokens
    }

    /// What one gathered write came to, for the flush loops.
    enum GatheredWrite {
        /// `count` bytes went out (counted in `bytesSent`); `cut`: the bandwidth bucket, not
        /// the socket, stopped the write.
        case wrote(Int, cut: Bool)
        /// EINTR: write again.
        case interrupted
        /// The flush ends here: `keepOpen` is false when the connection was closed.
        case stopped(keepOpen: Bool)
    }

    /// Writes iovecs [0, n) and handles what every flush loop handles the same way: EAGAIN
    /// (wait for writability), a failed write (close), and a bandwidth bucket that let nothing out.
    @inline(__always)
    func writeGathered(_ c: UnsafeMutablePointer<Connection>, _ n: Int, total: Int) -> GatheredWrite {
        let (written, cut) = writeWithin(c, n, total: total)
        if written < 0 {
            let err = errno
            if err == EINTR { return .interrupted }
            if err == EAGAIN { watchWrites(c, true); return .stopped(keepOpen: true) }
            worker.lifecycle.writeFailed(c, errno: err)
            return .stopped(keepOpen: false)
        }
        if written == 0 && cut { bandwidthLimited(c); return .stopped(keepOpen: c.pointee.isLive) }
        stats.bytesSent.bump(UInt64(written))
        return .wrote(written, cut: cut)
    }

    /// Writes iovecs [0, n) (`total` bytes), at most what the bucket allows. Returns what
    /// was written (or -1 with errno), and whether the bucket, not the socket, stopped it.
    @inline(__always)
    func writeWithin(_ c: UnsafeMutablePointer<Connection>, _ n: Int, total: Int) -> (written: Int, cut: Bool) {
        let maxBandwidth = c.pointee.bandwidthCap   // per connection: the token may lower it
        let allowed = allowance(c)
        if allowed >= total {
            let written = write(c, n)
            if maxBandwidth > 0 && written > 0 { c.pointee.bandwidthTokens -= written }
            return (written, false)
        }
        if allowed <= 0 { return (0, true) }
        var left = allowed
        var count = n
        for k in 0..<n {
            if iovecs[k].iov_len >= left {
                cutIndex = k
                cutLength = iovecs[k].iov_len
                iovecs[k].iov_len = left
                count = k + 1
                break
            }
            left -= iovecs[k].iov_len
        }
        let written = write(c, count)
        if cutIndex >= 0 { iovecs[cutIndex].iov_len = cutLength; cutIndex = -1 }
        if written > 0 { c.pointee.bandwidthTokens -= written }
        return (written, written == allowed)
    }

    /// The bucket is empty: no write interest (the socket is not what waits), prices and
    /// candles conflate in the connection's own queue, and it is flushed again once tokens
    /// return (one retry list and the reactor's one timer, not a timer per connection).
    func bandwidthLimited(_ c: UnsafeMutablePointer<Connection>) {
        let maxBandwidth = c.pointee.bandwidthCap   // per connection: the token may lower it
        stats.bandwidthLimited.bump()
        watchWrites(c, false)
        worker.slowConsumers.holdForBandwidth(c)
        guard c.pointee.isLive, !c.pointee.flags.contains(.bandwidthWaiting) else { return }
        c.pointee.flags.insert(.bandwidthWaiting)
        bandwidthWaiters.append((c.pointee.slot, c.pointee.generation))
        // When one more full frame's worth (about 1/100 s of the cap) is back, at least 10 ms on.
        let deficit = max(0, -c.pointee.bandwidthTokens) + maxBandwidth / 100
        let wait = UInt32(max(10, min(1000, deficit * 1000 / maxBandwidth)))
        let due = worker.clock.now &+ wait
        if let d = bandwidthDeadline, DeadlineList.hasPassed(d, now: due) { return }
        bandwidthDeadline = due
    }

    /// The retry time came: every waiting connection is flushed again (and waits again if
    /// its bucket is still short).
    func retryBandwidth(now: UInt32) {
        guard let d = bandwidthDeadline, DeadlineList.hasPassed(d, now: now) else { return }
        bandwidthDeadline = nil
        let waiters = bandwidthWaiters
        bandwidthWaiters.removeAll(keepingCapacity: true)
        for w in waiters {
            let c = worker.table.pointer(w.slot)
            guard c.pointee.isLive, c.pointee.generation == w.generation else { continue }
            c.pointee.flags.remove(.bandwidthWaiting)
            worker.output.markDirty(c)
        }
    }

    /// The gathered iovecs to the socket, through the TLS session when there is one.
    @inline(__always)
    func write(_ c: UnsafeMutablePointer<Connection>, _ n: Int) -> Int {
        if let session = c.pointee.tls { return worker.tls.write(c, session, iovecs, n) }
        return send(c.pointee.fd, iovecs, n)
    }

    /// EV_WRITE on or off; the flusher is called only when that changes (rarely).
    @inline(__always)
    func watchWrites(_ c: UnsafeMutablePointer<Connection>, _ on: Bool) {
        if c.pointee.flags.contains(.writeBlocked) != on { worker.output.setWriteWatch(c, on) }
    }

    /// Everything up to `index` has been written or skipped.
    @inline(__always)
    func finishScan(_ c: UnsafeMutablePointer<Connection>, at index: UInt64) {
        c.pointee.cursor = index
        c.pointee.cursorOffset = 0
        if index >= log.end || !c.pointee.lifecycle.acceptsOutgoingFrames {
            c.pointee.flags.remove(.broadcastPending)
        }
    }
}
