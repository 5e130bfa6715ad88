/// A reactor's connections, in pages of 1024 slots that never move (libev keeps pointers
/// to the io watchers inside them). Slots are reused most-recently-freed first, so a busy
/// reactor keeps touching the same warm memory. Owned by one reactor thread.
final class ConnectionTable {
    static let pageShift = 10
    static let pageSize = 1 << pageShift
    /// 4096 pages of 1024: four million connections per reactor.
    static let maxPages = 4096

    private let directory: UnsafeMutablePointer<UnsafeMutablePointer<Connection>?>
    private(set) var pageCount = 0
    private var freeSlots: [UInt32] = []
    /// Slots below this index have been handed out at least once.
    private(set) var highWater: UInt32 = 0
    /// Slots currently in use (any phase but `.free`).
    private(set) var inUse = 0

    init() {
        directory = .allocate(capacity: Self.maxPages)
        directory.initialize(repeating: nil, count: Self.maxPages)
    }

    deinit {
        for i in 0..<pageCount {
            directory[i]!.deinitialize(count: Self.pageSize)
            directory[i]!.deallocate()
        }
        directory.deallocate()
    }

    @inline(__always)
    func pointer(_ slot: UInt32) -> UnsafeMutablePointer<Connection> {
        directory[Int(slot >> UInt32(Self.pageShift))].unsafelyUnwrapped + Int(slot & UInt32(Self.pageSize - 1))
    }

    /// A free slot, or nil when the table is full.
    func allocate() -> UInt32? {
        let slot: UInt32
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            if Int(highWater) == pageCount * Self.pageSize {
                guard pageCount < Self.maxPages else { return nil }
                let page = UnsafeMutablePointer<Connection>.allocate(capacity: Self.pageSize)
                page.initialize(repeating: Connection(), count: Self.pageSize)
                directory[pageCount] = page
                pageCount += 1
            }
            slot = highWater
            highWater += 1
            pointer(slot).pointee.slot = slot
        }
        inUse += 1
        return slot
    }

    func release(_ slot: UInt32) {
        inUse -= 1
        freeSlots.append(slot)
    }
}
