import Glibc
import Reactor
import TradingStream

extension StreamFlusher {
    /// The slow consumer's private queue, written like the log (own messages at their mark).
    func flushSlowQueue(_ c: UnsafeMutablePointer<Connection>, _ queue: SlowConsumerQueue) -> Bool {
        if c.pointee.flags.contains(.throttled), let t = BroadcastPath.extras(c)?.throttle, c.pointee.lifecycle.acceptsOutgoingFrames {
            worker.slowConsumers.queueReleased(c, t, queue)
        }
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
            let written: Int, cut: Bool
            switch writeGathered(c, n, total: total) {
            case .interrupted: continue
            case .stopped(let keepOpen): return keepOpen
            case .wrote(let count, let bucketCut): (written, cut) = (count, bucketCut)
            }
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
                if cut { bandwidthLimited(c); return c.pointee.isLive }
                watchWrites(c, true)
                return true
            }
        }
        if queue.isEmpty && c.pointee.output.isEmpty {
            // Caught up: back to the shared log.
            worker.broadcast.setSlowQueue(c, nil)
            c.pointee.flags.remove(.broadcastPending)
        }
        if c.pointee.tls != nil && !worker.tls.flushHeld(c) {
            if c.pointee.isLive { watchWrites(c, true) }
            return c.pointee.isLive
        }
        watchWrites(c, false)
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
}
