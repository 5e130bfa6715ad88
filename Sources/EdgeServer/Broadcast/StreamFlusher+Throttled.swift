import Glibc
import Reactor
import TradingStream

extension StreamFlusher {
    /// A `max_frequency` subscriber: its log frames (everything but public prices and
    /// candles), its own messages, and its rate groups' released updates, merged in seq
    /// order. A group update held for the next tick goes now too when something stamped
    /// later goes in this write: the client must never see a seq lower than one before it.
    func flushThrottled(_ c: UnsafeMutablePointer<Connection>, _ t: ThrottleState) -> Bool {
        let groups = worker.broadcast.rateGroups
        let sessionOpen = c.pointee.lifecycle.acceptsOutgoingFrames
        while true {
            let pending = c.pointee.flags.contains(.broadcastPending)
            let hasControl = !c.pointee.output.isEmpty
            let limit = (!sessionOpen && hasControl) ? min(c.pointee.controlMark, log.end) : (sessionOpen ? log.end : c.pointee.cursor)
            var index = pending ? c.pointee.cursor : log.end
            var includeHeld = hasControl
            if !includeHeld && pending {
                var i = index
                while i < limit {
                    if BroadcastPath.matches(c, log.entry(i)) { includeHeld = true; break }
                    i += 1
                }
            }
            if sessionOpen { groups.collect(t, includeHeld: includeHeld, into: &held) } else { held.removeAll(keepingCapacity: true) }
            var h = 0
            var n = 0
            var total = 0
            var offset = Int(c.pointee.cursorOffset)
            var controlAdded = !hasControl
            if let p = t.partial {
                iovecs[n] = iovec(iov_base: p.bytes + Int(p.offset), iov_len: Int(p.count - p.offset))
                iovPieces[n] = .partialGroup
                iovSeqs[n] = p.seq
                total += Int(p.count - p.offset)
                n += 1
            }
            @inline(__always) func addHeld() {
                let (bytes, count) = wire(c, held[h].entry)
                iovecs[n] = iovec(iov_base: bytes, iov_len: Int(count))
                iovPieces[n] = .group
                iovSeqs[n] = held[h].seq
                iovEntries[n] = held[h].entry
                total += Int(count)
                n += 1
                h += 1
            }
            while n < Self.maxIovecs {
                if !controlAdded && (!pending || index >= c.pointee.controlMark || index >= limit) {
                    if h < held.count && held[h].seq <= c.pointee.controlSeq { addHeld(); continue }
                    let out = c.pointee.output.readable
                    iovecs[n] = iovec(iov_base: out.baseAddress, iov_len: out.count)
                    iovPieces[n] = .control
                    total += out.count
                    n += 1
                    controlAdded = true
                    continue
                }
                if !pending || index >= limit { break }
                let e = log.entry(index)
                if BroadcastPath.matches(c, e) {
                    if offset == 0 && h < held.count && held[h].seq < e.pointee.seq { addHeld(); continue }
                    let (bytes, count) = wire(c, e)
                    let length = Int(count) - offset
                    iovecs[n] = iovec(iov_base: bytes + offset, iov_len: length)
                    iovPieces[n] = .log
                    iovKinds[n] = index
                    iovSeqs[n] = e.pointee.seq
                    total += length
                    n += 1
                }
                offset = 0
                index += 1
            }
            // Released updates newer than everything else here; held ones wait for their tick.
            while n < Self.maxIovecs && h < held.count {
                if held[h].early { h += 1 } else { addHeld() }
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
            var left = written
            var sent: UInt64 = 0
            var fromGroups: UInt64 = 0
            var stopped = false
            for k in 0..<n {
                let length = iovecs[k].iov_len
                switch iovPieces[k] {
                case .control:
                    let done = min(left, length)
                    c.pointee.output.consume(done, pool: pool)
                    left -= done
                    t.lastSent = max(t.lastSent, c.pointee.controlSeq)
                    if done < length {
                        // Stopped inside our own bytes: frames before the mark are all out.
                        c.pointee.cursor = max(c.pointee.cursor, min(c.pointee.controlMark, scannedTo))
                        c.pointee.cursorOffset = 0
                        stopped = true
                    }
                case .log:
                    if left >= length {
                        left -= length
                        sent += 1
                        c.pointee.cursor = iovKinds[k] + 1
                        c.pointee.cursorOffset = 0
                        t.lastSent = max(t.lastSent, iovSeqs[k])
                    } else {
                        let alreadyOut = (iovKinds[k] == c.pointee.cursor) ? Int(c.pointee.cursorOffset) : 0
                        c.pointee.cursor = iovKinds[k]
                        c.pointee.cursorOffset = UInt32(alreadyOut + left)
                        if left > 0 {
                            c.pointee.flags.insert(.sentBroadcast)
                            t.lastSent = max(t.lastSent, iovSeqs[k])
                        }
                        left = 0
                        stopped = true
                    }
                case .partialGroup:
                    if left >= length {
                        left -= length
                        t.partial!.frame.release()
                        t.partial = nil
                    } else {
                        t.partial!.offset += UInt32(left)
                        left = 0
                        stopped = true
                    }
                case .group:
                    if left >= length {
                        left -= length
                        sent += 1
                        fromGroups += 1
                        t.lastSent = max(t.lastSent, iovSeqs[k])
                    } else {
                        if left > 0 {
                            // The rest goes first next time, even if the group moves on.
                            let e = iovEntries[k]!
                            let frame = e.pointee.frame
                            _ = frame.retain()
                            t.partial = (frame, iovecs[k].iov_base!, UInt32(length), UInt32(left), iovSeqs[k])
                            t.lastSent = max(t.lastSent, iovSeqs[k])
                            fromGroups += 1
                            c.pointee.flags.insert(.sentBroadcast)
                        }
                        left = 0
                        stopped = true
                    }
                }
                if stopped { break }
            }
            if sent > 0 {
                stats.messagesSent.bump(sent)
                c.pointee.flags.insert(.sentBroadcast)
            }
            if fromGroups > 0 { stats.rateDeliveries.bump(fromGroups) }
            if stopped || written < total {
                if cut { bandwidthLimited(c); return c.pointee.isLive }
                watchWrites(c, true)
                return true
            }
            finishScan(c, at: scannedTo)
            if n == Self.maxIovecs { continue }   // more than one write's worth
            break
        }
        if c.pointee.tls != nil && !worker.tls.flushHeld(c) {
            if c.pointee.isLive { watchWrites(c, true) }
            return c.pointee.isLive
        }
        watchWrites(c, false)
        return true
    }
}
