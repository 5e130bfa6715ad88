import Synchronization

/// Approximate counts per key (a client address, an account) shared by every reactor, with
/// no lock and no allocation: a count-min sketch (Cormode and Muthukrishnan), two rows of
/// atomic cells, each key hashed into one cell per row with a per-process random seed. A
/// key's count is the smaller of its two cells, so it is never under the truth; two keys
/// that share both cells (rare, and not choosable by a peer who does not know the seed)
/// share a budget, which errs on the side of refusing.
final class SharedCounts: @unchecked Sendable {
    // @unchecked: the cells are atomics; the seeds are written once in init.
    static let width = 1 << 15
    private let cells: UnsafeMutablePointer<Atomic<UInt64>>
    private let seeds: (UInt64, UInt64)

    init() {
        cells = .allocate(capacity: 2 * Self.width)
        for i in 0..<(2 * Self.width) { (cells + i).initialize(to: Atomic<UInt64>(0)) }
        var rng = SystemRandomNumberGenerator()
        seeds = (rng.next(), rng.next())
    }

    deinit {
        cells.deinitialize(count: 2 * Self.width)
        cells.deallocate()
    }

    /// The two cells of a key, packed in 32 bits (a connection keeps them to release them).
    @inline(__always)
    func cells(of key: (UInt64, UInt64)) -> UInt32 {
        UInt32(truncatingIfNeeded: Self.mix(key, seeds.0) >> 49) << 16 | UInt32(truncatingIfNeeded: Self.mix(key, seeds.1) >> 49)
    }

    @inline(__always)
    private func split(_ packed: UInt32) -> (Int, Int) {
        (Int(packed >> 16) & (Self.width - 1), Self.width + (Int(packed & 0xFFFF) & (Self.width - 1)))
    }

    @inline(__always)
    static func mix(_ key: (UInt64, UInt64), _ seed: UInt64) -> UInt64 {
        var h = (key.0 ^ seed) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        h = (h ^ key.1) &* 0xBF58_476D_1CE4_E5B9
        h ^= h >> 32
        return h
    }

    // MARK: - Gauges (connections open)

    /// Adds one to the count of the key at `packed` unless that would pass `limit`; true when added.
    func acquire(_ packed: UInt32, limit: Int) -> Bool {
        let (a, b) = split(packed)
        let before = min(cells[a].add(1, ordering: .relaxed).oldValue, cells[b].add(1, ordering: .relaxed).oldValue)
        if before < UInt64(limit) { return true }
        release(packed)
        return false
    }

    func release(_ packed: UInt32) {
        let (a, b) = split(packed)
        cells[a].subtract(1, ordering: .relaxed)
        cells[b].subtract(1, ordering: .relaxed)
    }

    func count(_ packed: UInt32) -> UInt64 {
        let (a, b) = split(packed)
        return min(cells[a].load(ordering: .relaxed), cells[b].load(ordering: .relaxed))
    }

    // MARK: - Rates (events per second)

    /// Counts one event for the key in the current second (`second`: any clock's whole
    /// seconds); true while the key has had at most `limit` this second. A cell holds the
    /// second in its high 32 bits and the count in its low 32.
    func tick(_ packed: UInt32, second: UInt32, limit: Int) -> Bool {
        let (a, b) = split(packed)
        return min(bump(a, second), bump(b, second)) <= UInt64(limit)
    }

    private func bump(_ i: Int, _ second: UInt32) -> UInt64 {
        var old = cells[i].load(ordering: .relaxed)
        while true {
            let count = UInt32(truncatingIfNeeded: old >> 32) == second ? (old & 0xFFFF_FFFF) + 1 : 1
            let new = UInt64(second) << 32 | count
            let (exchanged, current) = cells[i].compareExchange(expected: old, desired: new, ordering: .relaxed)
            if exchanged { return count }
            old = current
        }
    }
}
