import Synchronization

/// A bounded single-producer, single-consumer ring (Lamport's queue with cached indices):
/// the per-core broadcast queue's transport. Lock-free: one acquire load and one release
/// store per operation, and the cached index means most operations touch no shared line.
///
/// Elements must be trivial (pointers, integers): they are moved with plain memory copies.
public final class SPSCRing<Element>: @unchecked Sendable {
    // @unchecked: the producer side (push, producerCachedHead) is used by one thread at a
    // time and the consumer side (pop, consumerCachedTail) by one other; the two share
    // only `head` and `tail`, which are atomics.
    public let capacity: Int
    @usableFromInline let mask: Int
    @usableFromInline let storage: UnsafeMutablePointer<Element>
    @usableFromInline let head = Atomic<Int>(0)   // next index to pop; written by the consumer
    @usableFromInline let tail = Atomic<Int>(0)   // next index to push; written by the producer
    @usableFromInline var producerCachedHead = 0
    @usableFromInline var consumerCachedTail = 0

    /// `capacity` is rounded up to a power of two.
    public init(capacity: Int) {
        var c = 1
        while c < capacity { c <<= 1 }
        self.capacity = c
        self.mask = c - 1
        self.storage = .allocate(capacity: c)
    }

    deinit {
        while pop() != nil {}
        storage.deallocate()
    }

    /// Producer: appends `element`; false when the ring is full.
    @inlinable
    public func push(_ element: Element) -> Bool {
        let t = tail.load(ordering: .relaxed)
        if t &- producerCachedHead >= capacity {
            producerCachedHead = head.load(ordering: .acquiring)
            if t &- producerCachedHead >= capacity { return false }
        }
        (storage + (t & mask)).initialize(to: element)
        tail.store(t &+ 1, ordering: .releasing)
        return true
    }

    /// Consumer: removes the oldest element, or nil when empty.
    @inlinable
    public func pop() -> Element? {
        let h = head.load(ordering: .relaxed)
        if h == consumerCachedTail {
            consumerCachedTail = tail.load(ordering: .acquiring)
            if h == consumerCachedTail { return nil }
        }
        let element = (storage + (h & mask)).move()
        head.store(h &+ 1, ordering: .releasing)
        return element
    }

    /// Approximate number of queued elements (metrics only).
    public var approximateCount: Int {
        max(0, tail.load(ordering: .relaxed) - head.load(ordering: .relaxed))
    }
}
