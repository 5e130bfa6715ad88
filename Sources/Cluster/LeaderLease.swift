import CLibEV
import Glibc
import Reactor
import Synchronization

/// One node of the cluster at a time holds `key` in Redis: the leader of one role (the
/// simulator: `tickwire:lease:simulator`; an upstream ingester: `tickwire:lease:upstream:<hash>`).
///
///     let lease = LeaderLease(link: ingest.command, key: "tickwire:lease:simulator", ttl: 5,
///                             onAcquired: { start the work }, onLost: { stop the work })
///     lease.start()   // any thread
///     lease.stop()    // any thread: stops trying, and releases the key if held
///
/// The value is this node's random id. Acquire: `SET key id NX PX ttl`, tried every ttl/3
/// while another node holds it. Renew: every ttl/3, a script that PEXPIREs the key only if
/// it still holds our id. Release (`stop`): a script that DELs it only if it holds our id,
/// so the next node takes over at its next try instead of after the ttl.
///
/// Lost: at once when a renew finds another id (or none), or when no renew succeeded for
/// `ttl * safeFraction` after the last one was *sent* (Redis started that ttl no earlier
/// than that, so our deadline falls before Redis can let the key expire and another node
/// take it: the work stops before it could run twice). A link that is down only makes
/// renews fail with "not sent", so a drop shorter than the remaining lease costs nothing.
///
/// Callbacks run on the link's loop thread, in order (acquired, lost, acquired, ...).
/// Work that a callback hands elsewhere (an actor) must keep that order: hop through one
/// FIFO (`EdgeLoop.onLoop`), not separate tasks.
public final class LeaderLease: @unchecked Sendable {
    // @unchecked: the mutable state is touched on `link.edge`'s thread only; `held` is atomic.

    public let link: RedisLink
    public let key: String
    /// Seconds Redis keeps the key without a renew.
    public let ttl: Double
    /// This node's value in the key (random: two processes never share one).
    public let nodeID: String
    /// The share of the ttl after the last renew was sent at which a node that could not
    /// renew gives the lease up: the rest (20%) covers the hop to stop the work and clock
    /// rate differences between this host and Redis.
    public static let safeFraction = 0.8
    /// Shortest and longest ttl accepted: below 0.3 s a renew every ttl/3 would be less than
    /// two round trips of a busy Redis apart; above 5 min a dead leader's work stops too long.
    public static let ttlRange: ClosedRange<Double> = 0.3...300

    /// Whether this node holds the lease now (any thread; metrics, health).
    public var isLeader: Bool { held.load(ordering: .relaxed) }
    /// Times this node acquired and lost the lease (metrics).
    public var acquisitions: UInt64 { acquiredCount.load(ordering: .relaxed) }
    public var losses: UInt64 { lostCount.load(ordering: .relaxed) }

    private let onAcquired: () -> Void
    private let onLost: (_ reason: String) -> Void
    private let held = Atomic<Bool>(false)
    private let acquiredCount = Atomic<UInt64>(0)
    private let lostCount = Atomic<UInt64>(0)
    private var leader = false
    private var started = false
    private var stopped = false
    /// Bumped on every loss and on stop, so the reply to a command sent before is ignored.
    private var term = 0
    private var inFlight = false
    private var retained: Unmanaged<LeaderLease>?
    private let tickTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private let deadlineTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)

    static let renewScript = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 0
        """
    static let releaseScript = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """

    /// `ttl` in seconds, within `ttlRange` (validate user input with `validate(ttl:)` first).
    public init(
        link: RedisLink, key: String, ttl: Double, nodeID: String = LeaderLease.randomNodeID(),
        onAcquired: @escaping () -> Void, onLost: @escaping (_ reason: String) -> Void
    ) {
        precondition(Self.ttlRange.contains(ttl), "lease ttl \(ttl) s outside \(Self.ttlRange)")
        precondition(!key.isEmpty && !nodeID.isEmpty)
        self.link = link
        self.key = key
        self.ttl = ttl
        self.nodeID = nodeID
        self.onAcquired = onAcquired
        self.onLost = onLost
        let me = Unmanaged.passUnretained(self).toOpaque()
        tw_ev_timer_init(tickTimer, { _, w, _ in
            Unmanaged<LeaderLease>.fromOpaque(w!.pointee.data).takeUnretainedValue().tick()
        }, 0, 0)
        tw_ev_timer_init(deadlineTimer, { _, w, _ in
            Unmanaged<LeaderLease>.fromOpaque(w!.pointee.data).takeUnretainedValue().expired()
        }, 0, 0)
        tickTimer.pointee.data = me
        deadlineTimer.pointee.data = me
    }

    deinit {
        tickTimer.deallocate()
        deadlineTimer.deallocate()
    }

    /// Why a ttl is refused (nil: fine), phrased as what to fix.
    public static func validate(ttl: Double) -> String? {
        ttlRange.contains(ttl) ? nil : "must be between \(ttlRange.lowerBound) s and \(Int(ttlRange.upperBound)) s (got \(ttl) s)"
    }

    /// 16 random hex digits and the pid: unique per process, readable in `GET key`.
    public static func randomNodeID() -> String {
        var rng = SystemRandomNumberGenerator()
        let s = String(rng.next() as UInt64, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s + "-\(getpid())"
    }

    /// Any thread: starts trying to acquire (at once, then every ttl/3).
    public func start() {
        let box = UncheckedLease(self)
        link.edge.onLoop {
            let me = box.lease
            guard !me.started, !me.stopped else { return }
            me.started = true
            me.retained = Unmanaged.passRetained(me)
            me.tick()
        }
    }

    /// Any thread: stops trying; if held, the work is told `onLost("released")` first and
    /// the key is deleted (compare-and-DEL). `done` runs on the loop thread once Redis
    /// answered the release (or at once when nothing was held or the link is down).
    public func stop(done: (@Sendable () -> Void)? = nil) {
        let box = UncheckedLease(self)
        link.edge.onLoop {
            let me = box.lease
            guard !me.stopped else { done?(); return }
            me.stopped = true
            ev_timer_stop(me.link.edge.rawLoop, me.tickTimer)
            ev_timer_stop(me.link.edge.rawLoop, me.deadlineTimer)
            let wasLeader = me.leader
            if wasLeader { me.lose("released") }
            me.term += 1
            let release = { me.retained?.release(); me.retained = nil; done?() }
            guard wasLeader else { release(); return }
            me.link.send(me.scriptCommand(Self.releaseScript, Int(me.ttl * 1000))) { _ in release() }
        }
    }

    // MARK: - Loop thread

    private func tick() {
        guard !stopped else { return }
        schedule(tickTimer, after: ttl / 3)
        // One command at a time: a reply overdue past the deadline is the link's business
        // (its command timeout drops it), and the deadline timer covers us meanwhile.
        guard !inFlight else { return }
        if leader { renew() } else { acquire() }
    }

    private func acquire() {
        var set = RedisCommand("SET", key, nodeID, "NX", "PX")
        set.append(Int(ttl * 1000))
        let sentAt = ev_now(link.edge.rawLoop)
        let myTerm = term
        inFlight = true
        link.send(set) { [self] result in
            inFlight = false
            guard myTerm == term, !stopped, !leader else { return }
            // OK: ours; a null reply: another node holds it; a failure: try again next tick.
            guard case .success(.status(let s)) = result, s == "OK" else { return }
            // Held from when it was sent: a reply that came too late leaves no time to work.
            guard arm(sentAt: sentAt) else { return }
            leader = true
            held.store(true, ordering: .relaxed)
            acquiredCount.add(1, ordering: .relaxed)
            onAcquired()
        }
    }

    private func renew() {
        let sentAt = ev_now(link.edge.rawLoop)
        let myTerm = term
        inFlight = true
        link.send(scriptCommand(Self.renewScript, Int(ttl * 1000))) { [self] result in
            inFlight = false
            guard myTerm == term, leader else { return }
            switch result {
            case .success(let reply):
                if reply.int == 1 {
                    _ = arm(sentAt: sentAt)
                } else {
                    lose("the key no longer holds this node's id (expired or taken)")
                }
            case .failure(let f):
                // Not sent, or no reply: the lease may still be ours; the deadline decides.
                _ = f
            }
        }
    }

    /// Sets the deadline from a successful acquire or renew sent at `sentAt`; false when
    /// that deadline has already passed.
    private func arm(sentAt: Double) -> Bool {
        let remaining = sentAt + ttl * Self.safeFraction - ev_now(link.edge.rawLoop)
        guard remaining > 0 else { return false }
        schedule(deadlineTimer, after: remaining)
        return true
    }

    private func expired() {
        guard leader else { return }
        lose("no renew succeeded within \(ttl * Self.safeFraction) s (Redis unreachable or too slow)")
    }

    private func lose(_ reason: String) {
        guard leader else { return }
        leader = false
        term += 1
        inFlight = false
        held.store(false, ordering: .relaxed)
        lostCount.add(1, ordering: .relaxed)
        ev_timer_stop(link.edge.rawLoop, deadlineTimer)
        onLost(reason)
    }

    private func schedule(_ timer: UnsafeMutablePointer<ev_timer>, after seconds: Double) {
        ev_timer_stop(link.edge.rawLoop, timer)
        tw_ev_timer_set(timer, seconds, 0)
        ev_timer_start(link.edge.rawLoop, timer)
    }

    private func scriptCommand(_ script: String, _ milliseconds: Int) -> RedisCommand {
        var c = RedisCommand("EVAL", script, "1", key, nodeID)
        c.append(milliseconds)
        return c
    }
}

struct UncheckedLease: @unchecked Sendable {
    let lease: LeaderLease
    init(_ lease: LeaderLease) { self.lease = lease }
}
