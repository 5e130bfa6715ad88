import TradingStream

/// One frame as a reactor sees it: the hot fields copied out of the shared frame, so the
/// flush loop reads this entry alone (one cache line) and never the frame object.
struct LogEntry {
    var bytes: UnsafeMutableRawPointer
    var count: UInt32
    var channel: UInt8
    var seq: UInt64
    var symbolHash: UInt64
    var conflationKey: UInt64
    /// 0 for public messages; else the account's hash (the name is on `frame`).
    var accountHash: UInt64
    /// The permessage-deflate form (`Compression.wire`): 0 not looked for yet, 1 none, 2 in `zbytes`.
    var zstate: UInt8 = 0
    var zcount: UInt32 = 0
    var zbytes: UnsafeMutableRawPointer?
    /// Bytes of all entries before this one (prefix sum), for O(1) backlog estimates.
    var cumulative: UInt64
    /// Monotonic ns when the publish was accepted (broadcast latency).
    var acceptedAt: UInt64
    var frame: Unmanaged<BroadcastFrame>
}

/// A reactor's ordered log of broadcast frames: the recent history clients resume from
/// (at least `--history` entries) plus whatever a lagging subscriber has not been sent yet.
/// Entries are addressed by a 64-bit index that only grows; connections keep a cursor into
/// it instead of a queue of their own, so a broadcast costs a subscriber nothing until its
/// socket is written. Owned by one reactor thread.
final class BroadcastLog {
    private var ring: UnsafeMutablePointer<LogEntry>
    private var capacity: Int
    /// Oldest retained index.
    private(set) var start: UInt64 = 0
    /// One past the newest index.
    private(set) var end: UInt64 = 0
    /// Seq of the newest frame this reactor has received in this epoch (0: none yet).
    private(set) var headSeq: UInt64 = 0
    /// First index of the current epoch: entries before it (kept while closing subscribers
    /// still send them) are another epoch's history, which no resume may name.
    private(set) var epochStart: UInt64 = 0
    private var totalBytes: UInt64 = 0

    init(initialCapacity: Int = 4096) {
        var c = 1
        while c < initialCapacity { c <<= 1 }
        capacity = c
        ring = .allocate(capacity: c)
    }

    deinit {
        trim(below: end)
        ring.deallocate()
    }

    var count: Int { Int(end - start) }
    /// Entries of the current epoch: the history resumes are served from.
    var epochCount: Int { Int(end - max(start, epochStart)) }

    /// From the next append on, a new epoch: seqs start again.
    func beginEpoch() {
        epochStart = end
        headSeq = 0
    }

    @inline(__always)
    func entry(_ index: UInt64) -> UnsafeMutablePointer<LogEntry> {
        ring + Int(index & UInt64(capacity - 1))
    }

    /// Appends a frame (taking over one retained reference) and returns its index.
    @discardableResult
    func append(_ frame: Unmanaged<BroadcastFrame>) -> UInt64 {
        if count == capacity { grow() }
        let f = frame.takeUnretainedValue()
        let index = end
        (ring + Int(index & UInt64(capacity - 1))).initialize(to: LogEntry(
            bytes: f.bytes, count: UInt32(f.count), channel: f.channel.rawValue, seq: f.seq,
            symbolHash: f.symbolHash, conflationKey: f.conflationKey, accountHash: f.accountHash, cumulative: totalBytes, acceptedAt: f.acceptedAt, frame: frame
        ))
        totalBytes &+= UInt64(f.count)
        end += 1
        headSeq = f.seq
        return index
    }

    /// Bytes of the entries in [from, end).
    @inline(__always)
    func bytes(from index: UInt64) -> UInt64 {
        index >= end ? 0 : totalBytes - entry(index).pointee.cumulative
    }

    /// Releases entries below `index`.
    func trim(below index: UInt64) {
        let target = min(index, end)
        while start < target {
            let e = entry(start)
            e.pointee.frame.release()
            e.deinitialize(count: 1)
            start += 1
        }
    }

    /// The first index of this epoch whose seq is greater than `seq` (binary search: seqs
    /// increase within an epoch).
    func firstIndex(afterSeq seq: UInt64) -> UInt64 {
        var lo = max(start, epochStart)
        var hi = end
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if entry(mid).pointee.seq <= seq { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func grow() {
        let newCapacity = capacity * 2
        let newRing = UnsafeMutablePointer<LogEntry>.allocate(capacity: newCapacity)
        var i = start
        while i < end {
            (newRing + Int(i & UInt64(newCapacity - 1))).moveInitialize(from: entry(i), count: 1)
            i += 1
        }
        ring.deallocate()
        ring = newRing
        capacity = newCapacity
    }
}
