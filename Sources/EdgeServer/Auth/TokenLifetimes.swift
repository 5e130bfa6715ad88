import CLibEV
import Reactor
import WireProtocol

/// Token expiry on a reactor (PROTOCOL.md "Token refresh"): `--token-refresh-lead` before
/// a connection's token expires it is sent `RefreshToken`; at `exp`, unless a `Refresh`
/// moved it, the connection closes with 4001. Deadlines differ per connection, so they sit
/// in a min-heap under one `ev_timer` of their own; a refresh or a close leaves the old
/// entry behind, and it is recognised as stale (generation or `exp` changed) when it surfaces.
final class TokenLifetimes {
    private unowned(unsafe) let worker: Worker
    private let watcher = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var armedAt: UInt64?

    private struct Entry {
        /// Monotonic milliseconds.
        var due: UInt64
        var slot: UInt32
        var generation: UInt32
        /// The token's `exp` the entry was made for (stale once the grant's differs).
        var expiresAt: Int64
        var expires: Bool
    }

    private var heap: [Entry] = []

    init(worker: Worker) {
        self.worker = worker
        tw_ev_timer_init(watcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).tokens.fire()
        }, 0, 0)
    }

    deinit { watcher.deallocate() }

    var count: Int { heap.count }

    /// Schedules the refresh request and the expiry for a token that expires at `exp`
    /// (seconds since the epoch).
    func track(_ c: UnsafeMutablePointer<Connection>, expiresAt exp: Int64) {
        let clock = worker.clock
        let remaining = exp * 1000 - Int64(clock.wall)
        let expiry = clock.monotonic &+ UInt64(max(0, remaining))
        // Ask ahead by the lead, or halfway when the token is shorter-lived than that.
        let lead = min(Int64(worker.config.tokenRefreshLeadMilliseconds), max(0, remaining) / 2)
        push(Entry(due: expiry &- UInt64(lead), slot: c.pointee.slot, generation: c.pointee.generation, expiresAt: exp, expires: false))
        push(Entry(due: expiry, slot: c.pointee.slot, generation: c.pointee.generation, expiresAt: exp, expires: true))
        rearm()
    }

    private func fire() {
        armedAt = nil
        worker.clock.refresh()
        let now = worker.clock.monotonic
        while let top = heap.first, top.due <= now {
            let e = pop()
            let c = worker.table.pointer(e.slot)
            guard c.pointee.isLive, c.pointee.generation == e.generation, c.pointee.lifecycle.acceptsOutgoingFrames,
                  let grant = BroadcastPath.grant(of: c), grant.expiresAt == e.expiresAt
            else { continue }
            if e.expires {
                worker.stats.tokenExpiryCloses.bump()
                worker.lifecycle.close(c, .other(.tokenExpired), reason: "token expired")
            } else {
                let left = max(0, e.expiresAt * 1000 - Int64(worker.clock.wall))
                let data = Array("{\"expires_at\":\(e.expiresAt),\"expires_in_ms\":\(left)}".utf8)
                worker.stream.sendMessage(c, type: "RefreshToken", data: data, message: "token expires soon; send Refresh with a new token")
                worker.output.markDirty(c)
            }
        }
        rearm()
    }

    private func rearm() {
        guard let top = heap.first else {
            if armedAt != nil { ev_timer_stop(worker.loop.raw, watcher); armedAt = nil }
            return
        }
        if armedAt == top.due { return }
        ev_timer_stop(worker.loop.raw, watcher)
        let now = worker.clock.monotonic
        let delay = top.due > now ? Double(top.due - now) / 1000 + 0.001 : 0.001
        tw_ev_timer_set(watcher, delay, 0)
        ev_timer_start(worker.loop.raw, watcher)
        armedAt = top.due
    }

    // MARK: - Binary heap on `due`

    private func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if heap[parent].due <= heap[i].due { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    private func pop() -> Entry {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && heap[l].due < heap[m].due { m = l }
                if r < heap.count && heap[r].due < heap[m].due { m = r }
                if m == i { break }
                heap.swapAt(m, i)
                i = m
            }
        }
        return top
    }
}

