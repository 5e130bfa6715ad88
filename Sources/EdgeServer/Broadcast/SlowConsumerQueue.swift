import TradingStream

/// A slow consumer's own queue (PROTOCOL.md "Slow consumers"). A connection moves here
/// from the shared log only once its backlog passes --max-backlog; from then on each new
/// matching frame is appended here, and a conflatable frame replaces (drops) the pending
/// one with the same key, so market data costs at most one frame per symbol and timeframe.
/// Events are never dropped: when they alone exceed the bound the connection is closed
/// with 1013. Allocation here is per slow client, never on the fast path.
final class SlowConsumerQueue {
    struct Item {
        var frame: Unmanaged<BroadcastFrame>
        var bytes: UnsafeMutableRawPointer
        var count: UInt32
        var key: UInt64
        var alive: Bool
    }

    private(set) var items: [Item] = []
    /// Absolute index of items[front].
    private(set) var base: UInt64 = 0
    private var front = 0
    /// Bytes of the front item already written.
    var frontOffset: UInt32 = 0
    /// Bytes still to send.
    private(set) var pendingBytes = 0
    private var byKey: [UInt64: UInt64] = [:]
    /// Frames dropped by conflation (metrics).
    var conflated: UInt64 = 0
    /// Live (unsent, not conflated away) frames.
    private(set) var liveCount = 0
    /// Extra bytes allowed over the backlog bound: a resume replay is queued here whole,
    /// and only what arrives after it counts against the bound.
    var allowance = 0

    deinit {
        for i in front..<items.count where items[i].alive { items[i].frame.release() }
    }

    var end: UInt64 { base + UInt64(items.count - front) }
    var isEmpty: Bool { pendingBytes == 0 && front == items.count }

    @inline(__always)
    func item(_ index: UInt64) -> Item { items[front + Int(index - base)] }

    /// Appends a frame (retaining it); a conflatable frame supersedes the pending one with
    /// its key, unless that one is partly written already.
    func append(_ frame: Unmanaged<BroadcastFrame>, bytes: UnsafeMutableRawPointer, count: UInt32, key: UInt64) {
        if key != 0, let old = byKey[key], old >= base, old < end {
            let i = front + Int(old - base)
            if items[i].alive && !(old == base && frontOffset > 0) {
                items[i].alive = false
                items[i].frame.release()
                pendingBytes -= Int(items[i].count)
                liveCount -= 1
                conflated += 1
            }
        }
        _ = frame.retain()
        if key != 0 { byKey[key] = end }
        items.append(Item(frame: frame, bytes: bytes, count: count, key: key, alive: true))
        pendingBytes += Int(count)
        liveCount += 1
    }

    /// Records that `n` bytes were written from the front.
    func consume(_ n: Int) {
        var left = n
        while left > 0 && front < items.count {
            if !items[front].alive { popFront(); continue }
            let remaining = Int(items[front].count - frontOffset)
            if left >= remaining {
                left -= remaining
                pendingBytes -= remaining
                items[front].frame.release()
                items[front].alive = false
                liveCount -= 1
                popFront()
            } else {
                frontOffset += UInt32(left)
                pendingBytes -= left
                left = 0
            }
        }
        skipDead()
    }

    /// Drops everything except the rest of a partly written front frame (before a 1013 close).
    func dropAllButPartialFront() {
        skipDead()
        let keep = frontOffset > 0 && front < items.count ? 1 : 0
        for i in (front + keep)..<items.count where items[i].alive {
            items[i].alive = false
            items[i].frame.release()
            pendingBytes -= Int(items[i].count)
            liveCount -= 1
        }
    }

    func skipDead() {
        while front < items.count && !items[front].alive { popFront() }
        if front == items.count {
            items.removeAll(keepingCapacity: true)
            front = 0
        }
    }

    private func popFront() {
        front += 1
        base += 1
        frontOffset = 0
        if front > 64 && front * 2 > items.count {
            items.removeFirst(front)
            front = 0
        }
    }
}
