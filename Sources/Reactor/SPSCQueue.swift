import Glibc
import Synchronization

/// An unbounded single-producer, single-consumer queue of fixed-size segments: the
/// per-core broadcast queue's transport. Lock-free and wait-free on both sides: a push is
/// a plain store and one release store; a pop one acquire load (usually of a cached
/// value) and a plain load. When a segment fills up the producer links a new one, so a
/// stalled consumer never makes the producer block, poll or spill elsewhere, and order is
/// kept by construction. The consumer hands each finished segment back through a one-slot
/// spare, so steady traffic allocates nothing.
///
/// Elements must be trivial (pointers, integers): they are moved with plain memory copies.
public final class SPSCQueue<Element>: @unchecked Sendable {
    // @unchecked: the producer fields are touched by one thread at a time and the consumer
    // fields by one other; they share only the segments' `published` counts, their `next`
    // links and `spare`, which are atomics.
    @usableFromInline
    final class Segment {
        let slots: UnsafeMutablePointer<Element>
        /// Slots written by the producer, published with release ordering.
        let published = Atomic<Int>(0)
        let next = Atomic<UnsafeMutableRawPointer?>(nil)

        init(capacity: Int) { slots = .allocate(capacity: capacity) }
        deinit { slots.deallocate() }
    }

    public let segmentCapacity: Int

    // Producer side.
    @usableFromInline var tail: Segment
    @usableFromInline var tailIndex = 0
    // Consumer side.
    @usableFromInline var head: Segment
    @usableFromInline var headIndex = 0
    @usableFromInline var cachedPublished = 0
    /// A finished segment the consumer gives back for the producer's next one.
    private let spare = Atomic<UnsafeMutableRawPointer?>(nil)
    private let pushed = Atomic<Int>(0)
    private let popped = Atomic<Int>(0)

    /// `segmentCapacity` elements per segment: 1024 pointers (8 KiB) covers a burst of a
    /// busy stream, and a longer stall costs one more segment per 1024 frames.
    public init(segmentCapacity: Int = 1024) {
        precondition(segmentCapacity > 0)
        self.segmentCapacity = segmentCapacity
        let first = Segment(capacity: segmentCapacity)
        tail = first
        head = first
    }

    deinit {
        while pop() != nil {}
        if let raw = spare.exchange(nil, ordering: .acquiring) {
            Unmanaged<Segment>.fromOpaque(raw).release()
        }
    }

    /// Producer: appends `element`. Never fails and never waits.
    public func push(_ element: Element) {
        if tailIndex == segmentCapacity {
            let next: Segment
            if let raw = spare.exchange(nil, ordering: .acquiring) {
                next = Unmanaged<Segment>.fromOpaque(raw).takeRetainedValue()
                next.published.store(0, ordering: .relaxed)
                next.next.store(nil, ordering: .relaxed)
            } else {
                next = Segment(capacity: segmentCapacity)
            }
            // The link is the producer's last touch of the old segment.
            tail.next.store(Unmanaged.passRetained(next).toOpaque(), ordering: .releasing)
            tail = next
            tailIndex = 0
        }
        (tail.slots + tailIndex).initialize(to: element)
        tailIndex += 1
        tail.published.store(tailIndex, ordering: .releasing)
        pushed.store(pushed.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// Consumer: removes the oldest element, or nil when empty.
    public func pop() -> Element? {
        while true {
            if headIndex < cachedPublished || headIndex < refreshPublished() {
                let element = (head.slots + headIndex).move()
                headIndex += 1
                popped.store(popped.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                return element
            }
            guard headIndex == segmentCapacity, let raw = head.next.load(ordering: .acquiring) else { return nil }
            // The producer has moved on: recycle this segment and continue in the next.
            let finished = head
            head = Unmanaged<Segment>.fromOpaque(raw).takeRetainedValue()
            headIndex = 0
            cachedPublished = 0
            let old = spare.exchange(Unmanaged.passRetained(finished).toOpaque(), ordering: .acquiringAndReleasing)
            if let old { Unmanaged<Segment>.fromOpaque(old).release() }
        }
    }

    @inline(__always)
    private func refreshPublished() -> Int {
        cachedPublished = head.published.load(ordering: .acquiring)
        return cachedPublished
    }

    /// Approximate number of queued elements (metrics only; any thread).
    public var approximateCount: Int {
        max(0, pushed.load(ordering: .relaxed) &- popped.load(ordering: .relaxed))
    }
}
