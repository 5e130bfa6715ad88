import Reactor
import TradingStream

/// `max_frequency` on a reactor (PROTOCOL.md "Maximum frequency"): what a throttled
/// subscriber gets on the price and candle channels comes from here, not from the log.
///
/// Connections are grouped by the frequency they asked for (a `RateCohort`), and within
/// a cohort by key (`RateGroup`: one per conflation key, i.e. channel, symbol and candle
/// timeframe). A group holds the newest update for its key, shared by all its members:
/// an arriving frame only overwrites that slot, whatever the number of members. Each
/// cohort ticks N times a second on a grid of its own (one loop timer for all of them,
/// `ConnectionTimers`); at a tick every group with a new update releases it and marks its
/// members dirty, and `StreamFlusher` writes each member the released updates of its
/// groups, in seq order, among its log frames. So a 500/s feed to 10,000 subscribers at
/// N = 4 costs about 4 releases per group per second plus the writes; the feed rate only
/// costs one slot overwrite per frame.
///
/// All of a cohort's groups release at the same instants so that a member receives its
/// keys' updates together and in seq order: the stream a client sees stays ordered by seq
/// (clients drop a broadcast whose seq is not above the last one they applied). For the
/// same reason anything written to a throttled connection between ticks (a trade, a
/// position, a Pong) takes the held updates of its groups with it, in seq order.
final class RateGroups {
    private unowned(unsafe) let worker: Worker
    private let table: ConnectionTable
    private let output: OutputFlusher
    private let stats: WorkerStats
    private(set) var cohorts: [RateCohort] = []
    /// Conflation key -> that key's group in each cohort that has one.
    private var groupsByKey: [UInt64: [RateGroup]] = [:]

    init(worker: Worker, output: OutputFlusher) {
        self.worker = worker
        self.output = output
        table = worker.table
        stats = worker.stats
    }

    /// Whether any connection on this reactor is throttled (else arrivals cost nothing here).
    @inline(__always) var isActive: Bool { !cohorts.isEmpty }

    // MARK: - Membership

    /// `c` receives the throttleable channels of `subscription` at `subscription.maxFrequency`.
    /// Updates with seq at or below `lastSent` are not for it (it has them, or the snapshot does).
    func join(_ c: UnsafeMutablePointer<Connection>, _ extras: ConnectionExtras, _ subscription: Subscription, lastSent: UInt64) {
        var floor = lastSent
        if let old = extras.throttle {
            floor = max(floor, old.lastSent)
            leave(c, extras)
        }
        let frequency = subscription.maxFrequency
        let cohort: RateCohort
        if let existing = cohorts.first(where: { $0.frequency == frequency }) {
            cohort = existing
        } else {
            cohort = RateCohort(frequency: frequency)
            cohorts.append(cohort)
        }
        let t = ThrottleState(cohort: cohort, lastSent: floor)
        t.cohortPosition = cohort.members.count
        cohort.members.append(c.pointee.slot)
        extras.throttle = t
        for g in cohort.groups where subscription.matches(channel: g.channel, symbolHash: g.symbolHash) {
            add(c.pointee.slot, t, g)
        }
        c.pointee.flags.insert(.throttled)
    }

    /// `c` leaves its cohort and groups (a new subscription, or the socket closes).
    func leave(_ c: UnsafeMutablePointer<Connection>, _ extras: ConnectionExtras) {
        c.pointee.flags.remove(.throttled)
        guard let t = extras.throttle else { return }
        extras.throttle = nil
        if let p = t.partial { p.frame.release(); t.partial = nil }
        for (g, position) in t.memberships {
            let last = g.members.removeLast()
            if position < g.members.count {
                g.members[position] = last
                if let moved = throttle(of: last), let k = moved.memberships.firstIndex(where: { $0.group === g }) {
                    moved.memberships[k].position = position
                }
            }
        }
        t.memberships.removeAll()
        let cohort = t.cohort
        let last = cohort.members.removeLast()
        if t.cohortPosition < cohort.members.count {
            cohort.members[t.cohortPosition] = last
            throttle(of: last)?.cohortPosition = t.cohortPosition
        }
        if cohort.members.isEmpty { drop(cohort) }
    }

    private func add(_ slot: UInt32, _ t: ThrottleState, _ g: RateGroup) {
        t.memberships.append((g, g.members.count))
        g.members.append(slot)
    }

    /// The last member left: the cohort's groups go, and their frames with them.
    private func drop(_ cohort: RateCohort) {
        for g in cohort.groups {
            guard var list = groupsByKey.removeValue(forKey: g.key) else { continue }
            list.removeAll { $0 === g }
            if !list.isEmpty { groupsByKey[g.key] = list }
        }
        cohort.groups.removeAll()
        cohort.due.removeAll()
        cohorts.removeAll { $0 === cohort }
    }

    @inline(__always)
    private func throttle(of slot: UInt32) -> ThrottleState? {
        BroadcastPath.extras(table.pointer(slot))?.throttle
    }

    // MARK: - Arrival

    /// A public frame on a throttleable channel arrived: it becomes the newest update of its
    /// key's group in every cohort. One slot overwrite per cohort, whatever the members.
    func offer(_ e: UnsafeMutablePointer<LogEntry>) {
        let key = e.pointee.conflationKey
        var list = groupsByKey[key] ?? []
        if list.count < cohorts.count {
            // A key this reactor's cohorts have not seen: a group for it in each, with the
            // cohort's connections whose subscription covers it.
            for cohort in cohorts where !list.contains(where: { $0.cohort === cohort }) {
                list.append(makeGroup(e, cohort))
            }
            groupsByKey[key] = list
        }
        let now = worker.clock.monotonic
        for g in list where !g.members.isEmpty {
            // A held update is superseded before anyone got it.
            if g.hasPending { stats.rateConflated.bump(UInt64(g.members.count)) }
            Self.keep(e, in: g.pending, filled: &g.hasPending)
            if !g.isDue {
                g.isDue = true
                let cohort = g.cohort
                if cohort.due.isEmpty { cohort.nextTick = cohort.tick(after: now) }
                cohort.due.append(g)
            }
        }
    }

    /// A new group for `e`'s key in `cohort`, with the cohort's connections that want it.
    /// (The caller records it in `groupsByKey`.)
    private func makeGroup(_ e: UnsafeMutablePointer<LogEntry>, _ cohort: RateCohort) -> RateGroup {
        let g = RateGroup(key: e.pointee.conflationKey, channel: e.pointee.channel, symbolHash: e.pointee.symbolHash, cohort: cohort)
        cohort.groups.append(g)
        for slot in cohort.members {
            guard let x = BroadcastPath.extras(table.pointer(slot)), let t = x.throttle,
                  x.subscription.matches(channel: g.channel, symbolHash: g.symbolHash) else { continue }
            add(slot, t, g)
        }
        return g
    }

    /// A resume replays log entries [from, log.end): for prices and candles, the newest one
    /// per key becomes its group's released update where the group holds nothing newer, so
    /// the replay is conflated to the newest per key. (Whoever else is in such a group
    /// joined after that entry arrived, above its seq: it goes to no one twice.)
    func seed(_ c: UnsafeMutablePointer<Connection>, _ t: ThrottleState, _ subscription: Subscription, log: BroadcastLog, from: UInt64) {
        var i = from
        while i < log.end {
            let e = log.entry(i)
            i += 1
            guard e.pointee.accountHash == 0, Channel.throttleMask & (1 << e.pointee.channel) != 0, e.pointee.seq > t.lastSent,
                  subscription.matches(channel: e.pointee.channel, symbolHash: e.pointee.symbolHash) else { continue }
            let key = e.pointee.conflationKey
            var list = groupsByKey[key] ?? []
            var group = list.first { $0.cohort === t.cohort }
            if group == nil {
                let g = makeGroup(e, t.cohort)
                list.append(g)
                groupsByKey[key] = list
                group = g
            }
            let g = group!
            if g.hasPending && g.pending.pointee.seq >= e.pointee.seq { continue }
            if g.hasReleased && g.released.pointee.seq >= e.pointee.seq { continue }
            Self.keep(e, in: g.released, filled: &g.hasReleased)
        }
    }

    /// Puts a retained copy of `e` in a group's slot, releasing the update it held.
    @inline(__always)
    private static func keep(_ e: UnsafeMutablePointer<LogEntry>, in slot: UnsafeMutablePointer<LogEntry>, filled: inout Bool) {
        if filled {
            slot.pointee.frame.release()
            slot.pointee = e.pointee
        } else {
            slot.initialize(to: e.pointee)
            filled = true
        }
        _ = e.pointee.frame.retain()
        // The copy resolves its own compressed form (the frame shares one block).
        slot.pointee.zstate = 0
        slot.pointee.zbytes = nil
    }

    /// A new epoch began (`BroadcastPath.beginEpoch`): every held or released update is of
    /// the old epoch, whose seqs mean nothing in the new one, so none may reach a connection
    /// that joins now. The old members are being closed with 1012.
    func beginEpoch() {
        for cohort in cohorts {
            for g in cohort.groups { g.clear() }
            cohort.due.removeAll(keepingCapacity: true)
        }
    }

    // MARK: - Ticks

    /// The earliest tick that has something to release (reactor milliseconds, as the
    /// deadline lists count them).
    var nextDeadline: UInt32? {
        var earliest: UInt64?
        for cohort in cohorts where !cohort.due.isEmpty {
            earliest = min(earliest ?? cohort.nextTick, cohort.nextTick)
        }
        return earliest.map { UInt32(truncatingIfNeeded: $0) }
    }

    /// Releases the held updates of every cohort whose tick has come.
    func fire(now: UInt64) {
        for cohort in cohorts where !cohort.due.isEmpty && cohort.nextTick <= now {
            for g in cohort.due {
                g.isDue = false
                guard g.hasPending else { continue }
                if g.hasReleased {
                    g.released.pointee.frame.release()
                    g.released.deinitialize(count: 1)
                }
                g.released.moveInitialize(from: g.pending, count: 1)
                g.hasPending = false
                g.hasReleased = true
                stats.rateReleases.bump()
                for slot in g.members {
                    let c = table.pointer(slot)
                    guard c.pointee.lifecycle.acceptsOutgoingFrames else { continue }
                    if !c.pointee.flags.contains(.writeBlocked) || BroadcastPath.slowQueue(c) != nil { output.markDirty(c) }
                }
            }
            cohort.due.removeAll(keepingCapacity: true)
        }
    }

    // MARK: - What a member gets

    /// A throttled connection's updates that are due to it, oldest first: each group's
    /// released update not yet sent; with `includeHeld`, the held (newer) one instead when
    /// there is one, because something stamped later is about to go out.
    func collect(_ t: ThrottleState, includeHeld: Bool, into out: inout [HeldUpdate]) {
        out.removeAll(keepingCapacity: true)
        for (g, _) in t.memberships {
            if includeHeld && g.hasPending && g.pending.pointee.seq > t.lastSent {
                out.append(HeldUpdate(seq: g.pending.pointee.seq, entry: g.pending, early: true))
            } else if g.hasReleased && g.released.pointee.seq > t.lastSent {
                out.append(HeldUpdate(seq: g.released.pointee.seq, entry: g.released, early: false))
            }
        }
        if out.count > 1 { out.sort { $0.seq < $1.seq } }
    }
}

/// An update from a rate group, to be written to one member.
struct HeldUpdate {
    var seq: UInt64
    var entry: UnsafeMutablePointer<LogEntry>
    /// Not released yet: it goes only ahead of something stamped later.
    var early: Bool
}

/// The connections throttled to one frequency on a reactor, and their groups.
final class RateCohort {
    let frequency: Int
    /// Connection slots.
    var members: [UInt32] = []
    var groups: [RateGroup] = []
    /// Groups holding an update for the next tick.
    var due: [RateGroup] = []
    /// Monotonic milliseconds of the next tick (while `due` is not empty).
    var nextTick: UInt64 = 0

    init(frequency: Int) { self.frequency = frequency }

    /// The first tick of this cohort's grid after `now`: ticks fall at ceil(k * 1000 / N) ms,
    /// the same instants for every group of the cohort.
    func tick(after now: UInt64) -> UInt64 {
        let n = UInt64(frequency)
        var k = now * n / 1000 + 1
        var t = (k * 1000 + n - 1) / n
        while t <= now {
            k += 1
            t = (k * 1000 + n - 1) / n
        }
        return t
    }
}

/// One key (channel, symbol, timeframe) in one cohort: its members and its newest update.
final class RateGroup {
    let key: UInt64
    let channel: UInt8
    let symbolHash: UInt64
    unowned let cohort: RateCohort
    var members: [UInt32] = []
    /// [0]: the newest update, held for the next tick; [1]: the one released at the last
    /// tick, kept (retained) for members that have not been written yet.
    private let entries = UnsafeMutablePointer<LogEntry>.allocate(capacity: 2)
    var hasPending = false
    var hasReleased = false
    /// In the cohort's `due` list.
    var isDue = false

    @inline(__always) var pending: UnsafeMutablePointer<LogEntry> { entries }
    @inline(__always) var released: UnsafeMutablePointer<LogEntry> { entries + 1 }

    init(key: UInt64, channel: UInt8, symbolHash: UInt64, cohort: RateCohort) {
        self.key = key
        self.channel = channel
        self.symbolHash = symbolHash
        self.cohort = cohort
    }

    /// Drops both updates (their frames released).
    func clear() {
        if hasPending { pending.pointee.frame.release(); pending.deinitialize(count: 1) }
        if hasReleased { released.pointee.frame.release(); released.deinitialize(count: 1) }
        hasPending = false
        hasReleased = false
        isDue = false
    }

    deinit {
        clear()
        entries.deallocate()
    }
}

/// A throttled connection's part (in its `ConnectionExtras`).
final class ThrottleState {
    let cohort: RateCohort
    var cohortPosition = 0
    /// Its groups, and its place in each one's member list.
    var memberships: [(group: RateGroup, position: Int)] = []
    /// The highest seq committed to this connection's stream (written, or queued for a
    /// slow consumer): nothing at or below it may follow.
    var lastSent: UInt64
    /// A group update the socket took part of: the rest goes first (its frame retained).
    var partial: (frame: Unmanaged<BroadcastFrame>, bytes: UnsafeMutableRawPointer, count: UInt32, offset: UInt32, seq: UInt64)?

    init(cohort: RateCohort, lastSent: UInt64) {
        self.cohort = cohort
        self.lastSent = lastSent
    }

    deinit { if let p = partial { p.frame.release() } }
}
