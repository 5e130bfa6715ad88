import CLibEV
import Reactor
import WireProtocol

/// Every connection timeout on a reactor: one `DeadlineList` per constant timeout and a
/// single `ev_timer` set to the earliest head (libev manual, "Be smart about timeouts").
/// Arming, touching and cancelling are O(1) and no connection ever owns a timer.
///
/// A connection is in at most one of the request, idle and closing lists (they share its
/// `timeout` links; the lifecycle moves it from one to the next) and, while its session
/// is open, in the ping list (`heartbeat` links).
final class ConnectionTimers {
    private unowned(unsafe) let worker: Worker
    private let table: ConnectionTable
    private let clock: ReactorClock
    private let watcher = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var due: UInt32 = 0
    private var armed = false

    /// Accept to a complete request; also the keep-alive timeout.
    private(set) var request: DeadlineList
    /// Nothing received on an open session.
    private(set) var idle: DeadlineList
    /// From the first step into closing to the socket's close: the one bound on it.
    private(set) var closing: DeadlineList
    /// The server's ping interval.
    private(set) var ping: DeadlineList

    static let timeoutOffset = MemoryLayout<Connection>.offset(of: \Connection.timeout)!
    static let heartbeatOffset = MemoryLayout<Connection>.offset(of: \Connection.heartbeat)!

    init(worker: Worker) {
        self.worker = worker
        table = worker.table
        clock = worker.clock
        let config = worker.config
        request = DeadlineList(id: 1, timeoutMilliseconds: UInt32(config.handshakeTimeoutMilliseconds))
        idle = DeadlineList(id: 2, timeoutMilliseconds: UInt32(config.idleTimeoutMilliseconds))
        closing = DeadlineList(id: 3, timeoutMilliseconds: UInt32(config.closeTimeoutMilliseconds))
        ping = DeadlineList(id: 4, timeoutMilliseconds: UInt32(config.pingIntervalMilliseconds))
        tw_ev_timer_init(watcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).timers.fire()
        }, 0, 0)
    }

    deinit { watcher.deallocate() }

    // MARK: - Links

    /// The links a slot uses in the request, idle and closing lists.
    @inline(__always)
    func timeoutLinks(_ slot: UInt32) -> UnsafeMutablePointer<DeadlineLinks> {
        UnsafeMutableRawPointer(table.pointer(slot)).advanced(by: Self.timeoutOffset).assumingMemoryBound(to: DeadlineLinks.self)
    }

    /// The links a slot uses in the ping list.
    @inline(__always)
    func heartbeatLinks(_ slot: UInt32) -> UnsafeMutablePointer<DeadlineLinks> {
        UnsafeMutableRawPointer(table.pointer(slot)).advanced(by: Self.heartbeatOffset).assumingMemoryBound(to: DeadlineLinks.self)
    }

    // MARK: - Arming (the lifecycle's actions)

    /// Starts, or restarts, the request deadline.
    func armRequest(_ c: UnsafeMutablePointer<Connection>) {
        let slot = c.pointee.slot
        if c.pointee.timeout.list == request.id {
            request.touch(slot, now: clock.now) { timeoutLinks($0) }
        } else {
            leaveTimeoutList(slot)
            append(&request, slot, links: timeoutLinks)
        }
    }

    func cancelRequest(_ c: UnsafeMutablePointer<Connection>) {
        request.remove(c.pointee.slot) { timeoutLinks($0) }
    }

    /// Starts the idle deadline and the ping interval of a new session.
    func armSession(_ c: UnsafeMutablePointer<Connection>) {
        let slot = c.pointee.slot
        leaveTimeoutList(slot)
        append(&idle, slot, links: timeoutLinks)
        ping.remove(slot) { heartbeatLinks($0) }
        append(&ping, slot, links: heartbeatLinks)
    }

    func cancelSession(_ c: UnsafeMutablePointer<Connection>) {
        let slot = c.pointee.slot
        idle.remove(slot) { timeoutLinks($0) }
        ping.remove(slot) { heartbeatLinks($0) }
    }

    /// Something arrived on a session: its idle deadline starts again.
    @inline(__always)
    func touchIdle(_ c: UnsafeMutablePointer<Connection>) {
        idle.touch(c.pointee.slot, now: clock.now) { timeoutLinks($0) }
    }

    /// The closing deadline: armed once per connection (the lifecycle guarantees it).
    func armClosing(_ c: UnsafeMutablePointer<Connection>) {
        let slot = c.pointee.slot
        leaveTimeoutList(slot)
        ping.remove(slot) { heartbeatLinks($0) }
        append(&closing, slot, links: timeoutLinks)
    }

    /// Drops every deadline of a connection whose socket closes.
    func cancelAll(_ c: UnsafeMutablePointer<Connection>) {
        let slot = c.pointee.slot
        leaveTimeoutList(slot)
        ping.remove(slot) { heartbeatLinks($0) }
    }

    /// From now on closings are bounded by the shutdown grace instead of the close timeout.
    /// Closings already under way keep their (earlier or later) deadline; the list stays
    /// ordered because a longer timeout only appends later deadlines, and a shorter one can
    /// at worst make an entry wait for the head in front of it, which is itself bounded.
    func useShutdownGrace() {
        closing.timeoutMilliseconds = UInt32(max(worker.config.shutdownGraceMilliseconds, 10))
    }

    private func leaveTimeoutList(_ slot: UInt32) {
        request.remove(slot) { timeoutLinks($0) }
        idle.remove(slot) { timeoutLinks($0) }
        closing.remove(slot) { timeoutLinks($0) }
    }

    private func append(_ list: inout DeadlineList, _ slot: UInt32, links: (UInt32) -> UnsafeMutablePointer<DeadlineLinks>) {
        list.append(slot, now: clock.now, links)
        let deadline = clock.now &+ list.timeoutMilliseconds
        if !armed || (DeadlineList.hasPassed(deadline, now: due) && deadline != due) {
            arm(at: deadline)
        }
    }

    // MARK: - The loop timer

    private func fire() {
        armed = false
        clock.refresh()
        let now = clock.now
        let driver = worker.lifecycle!
        while let slot = request.popExpired(now: now, { timeoutLinks($0) }) {
            driver.requestDeadlinePassed(table.pointer(slot))
        }
        while let slot = idle.popExpired(now: now, { timeoutLinks($0) }) {
            driver.idleDeadlinePassed(table.pointer(slot))
        }
        while let slot = closing.popExpired(now: now, { timeoutLinks($0) }) {
            driver.closingDeadlinePassed(table.pointer(slot))
        }
        while let slot = ping.popExpired(now: now, { heartbeatLinks($0) }) {
            let c = table.pointer(slot)
            if driver.pingDue(c) {
                ping.append(slot, now: now) { heartbeatLinks($0) }
            }
        }
        // max_frequency ticks share this timer: no timer per connection or per group.
        worker.broadcast.rateGroups.fire(now: clock.monotonic)
        worker.streamFlusher.retryBandwidth(now: now)
        rearm()
    }

    private func arm(at deadline: UInt32) {
        let loop = worker.loop.raw
        ev_timer_stop(loop, watcher)
        let delay = Double(DeadlineList.millisecondsUntil(deadline, now: clock.now)) / 1000 + 0.001
        tw_ev_timer_set(watcher, delay, 0)
        ev_timer_start(loop, watcher)
        due = deadline
        armed = true
    }

    /// Sets the loop timer to the earliest head (end of every pass).
    func rearm() {
        var earliest: UInt32?
        func consider(_ d: UInt32?) {
            guard let d else { return }
            if let e = earliest { if DeadlineList.hasPassed(d, now: e) { earliest = d } } else { earliest = d }
        }
        consider(request.headDeadline({ timeoutLinks($0) }))
        consider(idle.headDeadline({ timeoutLinks($0) }))
        consider(closing.headDeadline({ timeoutLinks($0) }))
        consider(ping.headDeadline({ heartbeatLinks($0) }))
        consider(worker.broadcast.rateGroups.nextDeadline)
        consider(worker.streamFlusher.bandwidthDeadline)
        guard let earliest else {
            if armed { ev_timer_stop(worker.loop.raw, watcher); armed = false }
            return
        }
        if armed && due == earliest { return }
        arm(at: earliest)
    }
}
