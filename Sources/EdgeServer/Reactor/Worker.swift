import CLibEV
import CSystemShims
import CTLSShims
import Glibc
import Logging
import Reactor

/// Work handed to a reactor from another thread (the only way in, besides the broadcast
/// queue): it enters through `post(_:)`, a lock-free queue woken with `ev_async`.
enum WorkerCommand: @unchecked Sendable {
    // @unchecked: the payloads are value types or immutable byte arrays.
    /// Stop accepting, send Close 1001 to every client, exit the loop when all are gone.
    case shutdown
    /// The answer to a request that was handed to the edge (`ConnectionLifecycle.State.awaitingReply`).
    case httpReply(slot: UInt32, generation: UInt32, response: [UInt8], keepAlive: Bool)
    /// New TLS credentials (SIGHUP) for the handshakes from now on; ownership passes to the reactor.
    case tlsContext(OpaquePointer)
}

/// One reactor: a thread, its libev loop, its listening socket and every connection it
/// accepted. The loop and the mailbox live here; each concern is a part of its own:
///
/// | part | file | does |
/// |---|---|---|
/// | `Acceptor` | Reactor/Acceptor.swift | the listening socket, bounded accepts per pass |
/// | `ConnectionIO` | Reactor/ConnectionIO.swift | reads, routing bytes by lifecycle state, EOF |
/// | `OutputFlusher` | Reactor/OutputFlusher.swift | per-connection output, the dirty list, read/write interest |
/// | `ConnectionTimers` | Reactor/ConnectionTimers.swift | the deadline lists and the one loop timer |
/// | `LifecycleDriver` | Reactor/LifecycleDriver.swift | carries out `ConnectionLifecycle` actions, closes and frees |
/// | `BroadcastPath` | Broadcast/BroadcastPath.swift | inbox, log, subscription index, blocked set, retention |
/// | `StreamFlusher` | Broadcast/StreamFlusher.swift | writes a subscriber's frames and own messages (iovecs) |
/// | `SlowConsumers` | Broadcast/SlowConsumers.swift | the backlog policy: conflate, then 1013 |
/// | `RateGroups` | Broadcast/RateGroups.swift | `max_frequency`: cohorts per frequency, one newest-update slot per key, ticks |
/// | `HTTPEndpoint` | HTTP/HTTPEndpoint.swift | requests, routes, the upgrade |
/// | `WebSocketEndpoint` | WebSocket/WebSocketEndpoint.swift | frames, the session, echo |
/// | `StreamEndpoint` | WebSocket/StreamEndpoint.swift | the `/ws` protocol: greeting, Subscribe, resume |
/// | `TLSTransport` | TLS/TLSTransport.swift | TLS or plain on a TLS port, reads and writes through OpenSSL |
/// | `Compression` | WebSocket/Compression.swift | permessage-deflate: the shared inflater and deflaters, broadcast frames compressed once |
/// | `TokenLifetimes` | Auth/TokenLifetimes.swift | token expiry: the refresh request, then close 4001 |
///
/// All of it runs on the reactor's own thread, except `post(_:)` and `wake()`.
final class Worker: @unchecked Sendable {
    // @unchecked: everything but `commands`, `stats` and the async watcher is touched only
    // by the reactor thread; those three are thread-safe.
    let index: Int
    let context: ServerContext
    let config: ServerConfiguration
    let loop: EventLoop
    let table = ConnectionTable()
    /// At most 256 spare blocks of each size (1.1 MiB) stay cached per reactor;
    /// housekeeping shrinks the cache when traffic calms down, so idle memory goes back.
    let pool = BufferPool(blockSize: 4096, maxFree: 256)
    let stats: WorkerStats
    let clock = ReactorClock()
    let logger: Logger
    /// Stop accepting and close every connection (SIGTERM, SIGINT).
    private(set) var shuttingDown = false
    /// This reactor's TLS context (OpenSSL SSL_CTX) when the port speaks TLS; set before the
    /// thread starts, then replaced only on the reactor (a reload through the mailbox).
    var tlsContext: OpaquePointer?
    /// Token checks (`--auth`): a value, this reactor's own.
    let authenticator: Authenticator
    /// The abuse limits, over counts shared with the other reactors.
    let admission: Admission

    // The parts (set once in init; never nil afterwards).
    private(set) var timers: ConnectionTimers!
    private(set) var output: OutputFlusher!
    private(set) var lifecycle: LifecycleDriver!
    private(set) var broadcast: BroadcastPath!
    private(set) var streamFlusher: StreamFlusher!
    private(set) var slowConsumers: SlowConsumers!
    private(set) var acceptor: Acceptor!
    private(set) var io: ConnectionIO!
    private(set) var tls: TLSTransport!
    private(set) var http: HTTPEndpoint!
    private(set) var webSocket: WebSocketEndpoint!
    private(set) var stream: StreamEndpoint!
    private(set) var tokens: TokenLifetimes!
    private(set) var compression: Compression!

    private let commands = MPSCQueue<WorkerCommand>()
    private let asyncWatcher = UnsafeMutablePointer<ev_async>.allocate(capacity: 1)
    private let prepareWatcher = UnsafeMutablePointer<ev_prepare>.allocate(capacity: 1)
    private let checkWatcher = UnsafeMutablePointer<ev_check>.allocate(capacity: 1)
    private let housekeepingWatcher = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)

    /// A closing connection gives back what it held in the shared per-address and per-account counts.
    func releaseAdmission(_ c: UnsafeMutablePointer<Connection>) {
        if c.pointee.flags.contains(.addressCounted) { admission.addresses.release(c.pointee.addressCells) }
        if c.pointee.flags.contains(.accountCounted) { admission.accounts.release(c.pointee.accountCells) }
        c.pointee.flags.remove([.addressCounted, .accountCounted])
    }

    /// `listenFd` < 0: no listening socket (tests drive the parts directly).
    init(index: Int, context: ServerContext, listenFd: Int32) throws(SystemError) {
        self.index = index
        self.context = context
        self.config = context.config
        self.loop = try EventLoop()
        var logger = context.logger
        logger[metadataKey: "worker"] = "\(index)"
        self.logger = logger
        let stats = WorkerStats()
        self.stats = stats
        authenticator = Authenticator(config: context.config, stats: stats)
        admission = Admission(config: context.config, addresses: context.addressCounts, addressRates: context.addressRates,
                              accounts: context.accountCounts)

        // Made in dependency order: a part holds strong references to the parts it calls on
        // the per-message path (so those calls cost no reference counting), and reaches any
        // other through the worker. Those references never form a cycle.
        let log = BroadcastLog()
        let compression = Compression(worker: self)
        self.compression = compression
        let timers = ConnectionTimers(worker: self)
        let streamFlusher = StreamFlusher(worker: self, log: log, compression: compression)
        let output = OutputFlusher(worker: self, streamFlusher: streamFlusher)
        let broadcast = BroadcastPath(worker: self, log: log, output: output)
        self.timers = timers
        self.streamFlusher = streamFlusher
        self.output = output
        self.broadcast = broadcast
        slowConsumers = SlowConsumers(worker: self, path: broadcast, output: output)
        lifecycle = LifecycleDriver(worker: self, timers: timers, output: output, broadcast: broadcast)
        acceptor = Acceptor(worker: self, listenFd: listenFd)
        tls = TLSTransport(worker: self)
        io = ConnectionIO(worker: self, output: output)
        http = HTTPEndpoint(worker: self, output: output)
        webSocket = WebSocketEndpoint(worker: self, output: output)
        stream = StreamEndpoint(worker: self, path: broadcast, output: output)
        tokens = TokenLifetimes(worker: self)

        loop.setOwner(self)
        tw_ev_async_init(asyncWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).onWake()
        })
        ev_async_start(loop.raw, asyncWatcher)

        // "beforesleep": flush every dirty connection once, then free the dead ones.
        tw_ev_prepare_init(prepareWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).endOfPass()
        })
        ev_prepare_start(loop.raw, prepareWatcher)

        // Runs first after each poll: one clock read per pass for everything in it.
        tw_ev_check_init(checkWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).clock.refresh()
        })
        ev_check_start(loop.raw, checkWatcher)
        // The prepare and check watchers must not keep the loop alive on their own.
        ev_unref(loop.raw)
        ev_unref(loop.raw)

        // Once a second: give cached buffers back (never keeps the loop alive).
        tw_ev_timer_init(housekeepingWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).housekeeping()
        }, 1, 1)
        ev_timer_start(loop.raw, housekeepingWatcher)
        ev_unref(loop.raw)
        acceptor.start()
    }

    deinit {
        if let tlsContext { tw_tls_context_free(tlsContext) }
        asyncWatcher.deallocate()
        prepareWatcher.deallocate()
        checkWatcher.deallocate()
        housekeepingWatcher.deallocate()
    }

    /// The reactor thread's body.
    func run() {
        loop.run()
        acceptor.closeListener()
    }

    // MARK: - The mailbox

    /// Queues `command` and wakes the reactor. Safe from any thread, lock-free.
    func post(_ command: WorkerCommand) {
        if commands.push(command) { wake() }
    }

    /// Wakes this reactor's loop (from any thread).
    func wake() {
        ev_async_send(loop.raw, asyncWatcher)
    }

    /// The reactor's end of the broadcast queues, for `BroadcastQueues`.
    var broadcastInbox: BroadcastInbox {
        BroadcastInbox(queue: broadcast.inbox, wake: { [unowned self] in self.wake() })
    }

    private func onWake() {
        broadcast.drain()
        commands.takeAll { command in
            switch command {
            case .shutdown:
                beginShutdown()
            case let .httpReply(slot, generation, response, keepAlive):
                http.deliverReply(slot: slot, generation: generation, response: response, keepAlive: keepAlive)
            case let .tlsContext(context):
                // Sessions made with the old context hold their own reference to it.
                if let old = tlsContext { tw_tls_context_free(old) }
                tlsContext = context
            }
        }
    }

    // MARK: - The pass

    /// Called once per loop pass, before the reactor sleeps.
    private func endOfPass() {
        output.flushDirty()
        broadcast.afterFlush()
        lifecycle.freeClosed()
        if shuttingDown && table.inUse == 0 {
            loop.stop()
        }
        timers.rearm()
    }

    /// Halves the spare-buffer cache each second down to 32 blocks, and returns freed heap
    /// to the system after a large release (malloc keeps it otherwise).
    private func housekeeping() {
        let before = pool.cachedBytes
        pool.trim(keep: max(32, pool.cachedBlocks / 4))
        if before - pool.cachedBytes >= 256 << 10 {
            _ = tw_malloc_trim()
        }
    }

    // MARK: - Shutdown

    private func beginShutdown() {
        guard !shuttingDown else { return }
        shuttingDown = true
        acceptor.closeListener()
        // The shutdown grace bounds every closing handshake begun from now on.
        timers.useShutdownGrace()
        for slot in 0..<table.highWater {
            let c = table.pointer(slot)
            guard c.pointee.isLive else { continue }
            lifecycle.close(c, .shutdown, reason: "server shutting down")
        }
        if table.inUse == 0 { loop.stop() }
    }
}
