/// The links a slot needs to sit in one `DeadlineList`.
public struct DeadlineLinks: Sendable {
    public var prev: UInt32 = DeadlineList.none
    public var next: UInt32 = DeadlineList.none
    /// Monotonic milliseconds, modulo 2^32, after which the slot's timeout fires. 32 bits
    /// keep the links at 16 bytes per slot; deadlines are compared with wrapping arithmetic,
    /// which is exact for timeouts under 24 days (configuration enforces that).
    public var deadline: UInt32 = 0
    /// Which list the slot is in (0: none), so removal never touches the wrong list.
    public var list: UInt8 = 0

    @inlinable public init() {}
}

/// An intrusive, doubly linked list of slots ordered by deadline, for one constant timeout
/// (libev manual, "Be smart about timeouts", strategy 4): because every slot in a list
/// gets the same timeout, appending at the tail keeps the list sorted, touching a slot is
/// an O(1) move to the tail, and one loop timer only ever needs the head's deadline.
/// Slots are 32-bit indices; the links live inside the slots themselves.
public struct DeadlineList: Sendable {
    public static let none = UInt32.max

    public let id: UInt8
    public var timeoutMilliseconds: UInt32
    public var head: UInt32 = none
    public var tail: UInt32 = none
    public var count = 0

    public init(id: UInt8, timeoutMilliseconds: UInt32) {
        precondition(id != 0, "list id 0 means 'in no list'")
        self.id = id
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// The earliest deadline in the list, if any.
    @inlinable
    public func headDeadline(_ links: (UInt32) -> UnsafeMutablePointer<DeadlineLinks>) -> UInt32? {
        head == Self.none ? nil : links(head).pointee.deadline
    }

    /// Appends `slot` with deadline `now + timeout`, removing it first from whatever list
    /// it was in (the caller passes that list when it is another one).
    @inlinable
    public mutating func append(_ slot: UInt32, now: UInt32, _ links: (UInt32) -> UnsafeMutablePointer<DeadlineLinks>) {
        let l = links(slot)
        precondition(l.pointee.list == 0, "slot already in a deadline list")
        l.pointee.list = id
        l.pointee.deadline = now &+ timeoutMilliseconds
        l.pointee.prev = tail
        l.pointee.next = Self.none
        if tail != Self.none { links(tail).pointee.next = slot } else { head = slot }
        tail = slot
        count += 1
    }

    /// Removes `slot` if it is in this list.
    @inlinable
    public mutating func remove(_ slot: UInt32, _ links: (UInt32) -> UnsafeMutablePointer<DeadlineLinks>) {
        let l = links(slot)
        guard l.pointee.list == id else { return }
        let prev = l.pointee.prev
        let next = l.pointee.next
        if prev != Self.none { links(prev).pointee.next = next } else { head = next }
        if next != Self.none { links(next).pointee.prev = prev } else { tail = prev }
        l.pointee.prev = Self.none
        l.pointee.next = Self.none
        l.pointee.list = 0
        count -= 1
    }

    /// Restarts `slot`'s timeout: O(1), and free when it is already the tail.
    @inlinable
    public mutating func touch(_ slot: UInt32, now: UInt32, _ links: (UInt32) -> UnsafeMutablePointer<DeadlineLinks>) {
        let l = links(slot)
        guard l.pointee.list == id else { return }
        if tail == slot {
            l.pointee.deadline = now &+ timeoutMilliseconds
            return
        }
        remove(slot, links)
        append(slot, now: now, links)
    }

    /// Removes and returns the head if its deadline has passed.
    @inlinable
    public mutating func popExpired(now: UInt32, _ links: (UInt32) -> UnsafeMutablePointer<DeadlineLinks>) -> UInt32? {
        guard head != Self.none else { return nil }
        let slot = head
        guard Self.hasPassed(links(slot).pointee.deadline, now: now) else { return nil }
        remove(slot, links)
        return slot
    }

    /// Whether `deadline` is at or before `now`, in wrapping 32-bit milliseconds.
    @inlinable
    public static func hasPassed(_ deadline: UInt32, now: UInt32) -> Bool {
        Int32(bitPattern: deadline &- now) <= 0
    }

    /// Milliseconds from `now` until `deadline` (0 if it has passed).
    @inlinable
    public static func millisecondsUntil(_ deadline: UInt32, now: UInt32) -> UInt32 {
        let d = Int32(bitPattern: deadline &- now)
        return d > 0 ? UInt32(d) : 0
    }
}
