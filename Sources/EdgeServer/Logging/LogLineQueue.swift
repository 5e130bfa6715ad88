import Glibc
import Synchronization

/// A bounded multi-producer, single-consumer queue of formatted log lines: Dmitry Vyukov's
/// bounded queue, where each slot carries a sequence number saying whose turn it is. A push
/// is one CAS on the shared position and one store to the slot; nobody waits on a lock, so
/// a reactor thread logging never waits on another thread or on the log's reader.
///
/// Bounded twice: `capacity` lines and `maxBytes` bytes of line text (queued here plus the
/// batch the writer has taken and not yet written). A push past either bound fails at once;
/// the caller drops the line and counts it.
final class LogLineQueue: @unchecked Sendable {
    // @unchecked: the slots' plain fields are handed from producer to consumer by the
    // release/acquire pair on their sequence; `popPosition` belongs to the one consumer.

    struct Slot: ~Copyable {
        /// pos: free for the push at pos; pos + 1: holds that push's line, for the pop at pos.
        let sequence: Atomic<UInt64>
        var bytes: UnsafeMutableRawPointer?
        var count: Int
    }

    let capacity: Int
    let maxBytes: Int
    private let mask: UInt64
    private let slots: UnsafeMutablePointer<Slot>
    private let pushPosition = Atomic<UInt64>(0)
    private let queuedBytes = Atomic<Int>(0)
    private var popPosition: UInt64 = 0

    /// `capacity` is rounded up to a power of two.
    init(capacity: Int, maxBytes: Int) {
        var c = 2
        while c < capacity { c <<= 1 }
        self.capacity = c
        self.maxBytes = maxBytes
        mask = UInt64(c - 1)
        slots = .allocate(capacity: c)
        for i in 0..<c { (slots + i).initialize(to: Slot(sequence: Atomic(UInt64(i)), bytes: nil, count: 0)) }
    }

    deinit {
        while let line = pop() { free(line.bytes) }
        slots.deinitialize(count: capacity)
        slots.deallocate()
    }

    /// Any thread: copies `line` in. False, with nothing queued, when the queue is full.
    func push(_ line: UnsafeRawBufferPointer) -> Bool {
        let n = line.count
        if queuedBytes.wrappingAdd(n, ordering: .relaxed).newValue > maxBytes {
            queuedBytes.wrappingSubtract(n, ordering: .relaxed)
            return false
        }
        // The copy is made before a slot is claimed: the consumer waits on a claimed slot,
        // so the time between claiming and publishing is kept to two stores.
        guard let copy = malloc(max(n, 1)) else {
            queuedBytes.wrappingSubtract(n, ordering: .relaxed)
            return false
        }
        if n > 0 { copy.copyMemory(from: line.baseAddress!, byteCount: n) }
        var position = pushPosition.load(ordering: .relaxed)
        while true {
            let slot = slots + Int(position & mask)
            let sequence = slot.pointee.sequence.load(ordering: .acquiring)
            if sequence == position {
                let (claimed, current) = pushPosition.compareExchange(
                    expected: position, desired: position &+ 1, ordering: .relaxed)
                if claimed {
                    slot.pointee.bytes = copy
                    slot.pointee.count = n
                    // Sequentially consistent, not just releasing: the producer's "is the
                    // writer asleep?" load that follows must not be ordered before this
                    // store (see LogOutput's wake-up protocol).
                    slot.pointee.sequence.store(position &+ 1, ordering: .sequentiallyConsistent)
                    return true
                }
                position = current
            } else if sequence < position {
                // The slot still holds the line from one lap ago: full.
                free(copy)
                queuedBytes.wrappingSubtract(n, ordering: .relaxed)
                return false
            } else {
                position = pushPosition.load(ordering: .relaxed)
            }
        }
    }

    /// Consumer only: the oldest line, now owned by the caller (free it, then `release`).
    func pop() -> (bytes: UnsafeMutableRawPointer, count: Int)? {
        let slot = slots + Int(popPosition & mask)
        guard slot.pointee.sequence.load(ordering: .acquiring) == popPosition &+ 1 else { return nil }
        let line = (slot.pointee.bytes!, slot.pointee.count)
        slot.pointee.bytes = nil
        slot.pointee.sequence.store(popPosition &+ UInt64(capacity), ordering: .releasing)
        popPosition &+= 1
        return line
    }

    /// Consumer only: `count` bytes of popped lines are written; their budget is free again.
    func release(bytes count: Int) {
        queuedBytes.wrappingSubtract(count, ordering: .relaxed)
    }

    /// Consumer only: whether the next line is ready. Sequentially consistent, for the
    /// check the writer makes after announcing that it is going to sleep.
    var hasReadyLine: Bool {
        (slots + Int(popPosition & mask)).pointee.sequence.load(ordering: .sequentiallyConsistent) == popPosition &+ 1
    }

    /// Lines ever pushed (claimed slots, a few of them possibly not yet published).
    var pushedCount: UInt64 { pushPosition.load(ordering: .acquiring) }
}
