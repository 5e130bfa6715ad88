import Synchronization

/// An unbounded, lock-free multi-producer single-consumer queue: producers push onto a
/// Treiber stack with one compare-and-swap; the consumer takes the whole stack with one
/// exchange and reverses it, so it sees each producer's items in the order they were
/// pushed. Taking everything at once sidesteps ABA, which is what makes this simple.
///
/// The way into a reactor or an edge loop from other threads (commands, replies,
/// requests): no mutex on either side, and `push` says when the consumer needs waking.
/// Each push allocates one node; this is for per-request traffic, not per-message.
public final class MPSCQueue<Element>: @unchecked Sendable {
    // @unchecked: `head` is the only shared state and it is atomic; nodes belong to the
    // producer until the CAS publishes them, and to the consumer after `takeAll`.
    @usableFromInline
    final class Node {
        var value: Element?
        var next: UnsafeMutableRawPointer?
        init(_ value: Element) { self.value = value }
    }

    private let head = Atomic<UnsafeMutableRawPointer?>(nil)

    public init() {}

    deinit {
        takeAll { _ in }
    }

    /// Any thread: appends `value`. Returns true when the queue was empty, that is when
    /// the consumer may be asleep and must be woken.
    @discardableResult
    public func push(_ value: Element) -> Bool {
        let node = Node(value)
        let raw = Unmanaged.passRetained(node).toOpaque()
        var current = head.load(ordering: .relaxed)
        while true {
            node.next = current
            let (exchanged, original) = head.compareExchange(
                expected: current, desired: raw, successOrdering: .releasing, failureOrdering: .relaxed)
            if exchanged { return current == nil }
            current = original
        }
    }

    /// True when nothing is queued (a hint: a producer may push right after).
    public var isEmpty: Bool { head.load(ordering: .relaxed) == nil }

    /// The consumer: removes everything queued so far and hands it to `body`, oldest first.
    /// Returns how many items there were.
    @discardableResult
    public func takeAll(_ body: (Element) -> Void) -> Int {
        var top = head.exchange(nil, ordering: .acquiring)
        if top == nil { return 0 }
        // The stack is newest first: reverse it.
        var oldest: UnsafeMutableRawPointer?
        while let raw = top {
            let node = Unmanaged<Node>.fromOpaque(raw).takeUnretainedValue()
            top = node.next
            node.next = oldest
            oldest = raw
        }
        var count = 0
        while let raw = oldest {
            let node = Unmanaged<Node>.fromOpaque(raw).takeRetainedValue()
            oldest = node.next
            let value = node.value.take()!
            body(value)
            count += 1
        }
        return count
    }
}
