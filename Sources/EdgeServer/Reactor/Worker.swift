import CLibEV
import CSystemShims
import Glibc
import Logging
import Reactor
import Synchronization
import TradingStream
import WireProtocol

/// Work handed to a reactor from another thread (the only way in, besides the broadcast
/// queue): it enters through `post(_:)`, which wakes the loop with `ev_async`.
enum WorkerCommand: @unchecked Sendable {
    // @unchecked: the payloads are value types or immutable byte arrays.
    /// Stop accepting, send Close 1001 to every client, exit the loop when all are gone.
    case shutdown
    /// The answer to a request that was handed off the reactor (`awaitingReply`).
    case httpReply(slot: UInt32, generation: UInt32, response: [UInt8], keepAlive: Bool)
}

/// One reactor: a thread, its libev loop, its listening socket and every connection it
/// accepted. All methods run on the reactor's own thread except `post(_:)`.
final class Worker: @unchecked Sendable {
    // @unchecked: everything but `commands`, `commandsPending`, `stats` and the async
    // watcher is touched only by the reactor thread; those four are thread-safe.

    let index: Int
    let context: ServerContext
    let config: ServerConfiguration
    let loop: EventLoop
    let table = ConnectionTable()
    /// At most 256 spare 4 KiB blocks (1 MiB) stay cached per reactor; housekeeping
    /// shrinks the cache when traffic calms down, so idle memory goes back to the system.
    let pool = BufferPool(blockSize: 4096, maxFree: 256)
    let stats = WorkerStats()
    var logger: Logger

    // Per-reactor scratch memory: one read buffer and one iovec array for every connection.
    let readBuffer: UnsafeMutableRawPointer
    let readBufferSize: Int
    static let maxIovecs = 1024   // IOV_MAX on Linux
    let iovecs: UnsafeMutablePointer<iovec>

    // Deadline lists (one loop timer serves them all).
    var handshakeList: DeadlineList
    var idleList: DeadlineList
    var closingList: DeadlineList
    var pingList: DeadlineList

    /// Connections with output to flush at the end of this pass.
    var dirty: [UInt32] = []
    /// Connections closed during this pass, freed after it.
    var dead: [UInt32] = []

    /// Monotonic ms (full and wrapped) and wall-clock ms, refreshed once per loop pass.
    var nowMonotonic: UInt64 = 0
    var now: UInt32 = 0
    var nowWall: UInt64 = 0
    private var dateSecond: UInt64 = 0
    private(set) var httpDate = ""

    var listenFd: Int32 = -1
    /// A spare descriptor, given up to accept-and-close one connection when the process
    /// is out of descriptors (EMFILE), so the listening socket does not spin.
    private var spareFd: Int32 = -1
    private let listenWatcher = UnsafeMutablePointer<ev_io>.allocate(capacity: 1)
    private let asyncWatcher = UnsafeMutablePointer<ev_async>.allocate(capacity: 1)
    private let prepareWatcher = UnsafeMutablePointer<ev_prepare>.allocate(capacity: 1)
    private let checkWatcher = UnsafeMutablePointer<ev_check>.allocate(capacity: 1)
    private let timerWatcher = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private let housekeepingWatcher = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var timerDue: UInt32 = 0
    private var timerArmed = false

    // The trading stream (see Broadcast/).
    /// The per-core broadcast queue: filled by the ingestion actor, drained here.
    /// 16,384 frames: several seconds of the busiest stream; a longer stall spills into the
    /// producer's overflow list instead of growing this ring.
    let inbox = SPSCRing<Unmanaged<BroadcastFrame>>(capacity: 16384)
    let log = BroadcastLog()
    let subscriptions = SubscriptionIndex()
    /// Connections whose socket is full (EV_WRITE watched).
    var blocked: [UInt32] = []
    var batchNumber: UInt32 = 0
    var keysScratch: [UInt64] = []
    /// Per iovec: the log index it writes, or UInt64.max for a connection's own bytes.
    let iovKinds: UnsafeMutablePointer<UInt64>
    /// First log index drained in this pass (latency is measured after the flush).
    var passFirstFrame: UInt64?
    var envelope = EnvelopeWriter(capacity: 512)
    /// Publish requests parsed from the current read, not yet sent to the publisher.
    var publishBatch: [(body: [UInt8], cors: String?)] = []
    var invalidLogSecond: UInt64 = 0
    var invalidLogCount = 0
    var invalidLogSuppressed = 0

    private let commands = Mutex<[WorkerCommand]>([])
    private let commandsPending = Atomic<Bool>(false)
    var shuttingDown = false
    private var nextConnectionNumber: UInt64 = 0

    init(index: Int, context: ServerContext, listenFd: Int32) throws(SystemError) {
        self.index = index
        self.context = context
        self.config = context.config
        self.loop = try EventLoop()
        self.listenFd = listenFd
        var logger = context.logger
        logger[metadataKey: "worker"] = "\(index)"
        self.logger = logger
        readBufferSize = config.readBufferBytes
        readBuffer = .allocate(byteCount: readBufferSize, alignment: 64)
        iovecs = .allocate(capacity: Self.maxIovecs)
        iovKinds = .allocate(capacity: Self.maxIovecs)
        handshakeList = DeadlineList(id: 1, timeoutMilliseconds: UInt32(config.handshakeTimeoutMilliseconds))
        idleList = DeadlineList(id: 2, timeoutMilliseconds: UInt32(config.idleTimeoutMilliseconds))
        closingList = DeadlineList(id: 3, timeoutMilliseconds: UInt32(config.closeTimeoutMilliseconds))
        pingList = DeadlineList(id: 4, timeoutMilliseconds: UInt32(config.pingIntervalMilliseconds))
        dirty.reserveCapacity(4096)
        dead.reserveCapacity(256)
        spareFd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        loop.setOwner(self)
        refreshClock()

        tw_ev_io_init(listenWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).acceptConnections()
        }, listenFd, TW_EV_READ)
        ev_io_start(loop.raw, listenWatcher)

        tw_ev_async_init(asyncWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).drainInbox()
        })
        ev_async_start(loop.raw, asyncWatcher)

        // "beforesleep": flush every dirty connection once, then free the dead ones.
        tw_ev_prepare_init(prepareWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).endOfPass()
        })
        ev_prepare_start(loop.raw, prepareWatcher)

        // Runs first after each poll: one clock read per pass for everything in it.
        tw_ev_check_init(checkWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).refreshClock()
        })
        ev_check_start(loop.raw, checkWatcher)
        // The check watcher must not keep the loop alive on its own.
        ev_unref(loop.raw)
        ev_unref(loop.raw)

        tw_ev_timer_init(timerWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).onTimer()
        }, 0, 0)

        // Once a second: give cached buffers back (not a per-socket timer; it never keeps the loop alive).
        tw_ev_timer_init(housekeepingWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).housekeeping()
        }, 1, 1)
        ev_timer_start(loop.raw, housekeepingWatcher)
        ev_unref(loop.raw)
    }

    deinit {
        listenWatcher.deallocate()
        asyncWatcher.deallocate()
        prepareWatcher.deallocate()
        checkWatcher.deallocate()
        timerWatcher.deallocate()
        housekeepingWatcher.deallocate()
        readBuffer.deallocate()
        iovecs.deallocate()
        iovKinds.deallocate()
        if spareFd >= 0 { close(spareFd) }
    }

    /// The reactor thread's body.
    func run() {
        loop.run()
        if listenFd >= 0 { close(listenFd); listenFd = -1 }
    }

    // MARK: - Cross-thread entry

    /// Queues `command` and wakes the reactor. Safe from any thread.
    func post(_ command: WorkerCommand) {
        commands.withLock { $0.append(command) }
        commandsPending.store(true, ordering: .releasing)
        ev_async_send(loop.raw, asyncWatcher)
    }

    /// Wakes this reactor's loop (from any thread).
    func wakeSelf() {
        ev_async_send(loop.raw, asyncWatcher)
    }

    private func drainInbox() {
        drainBroadcasts()
        if commandsPending.exchange(false, ordering: .acquiring) {
            let batch = commands.withLock { queue -> [WorkerCommand] in
                let taken = queue
                queue.removeAll()
                return taken
            }
            for command in batch { execute(command) }
        }
    }

    private func execute(_ command: WorkerCommand) {
        switch command {
        case .shutdown:
            beginShutdown()
        case let .httpReply(slot, generation, response, keepAlive):
            deliverReply(slot: slot, generation: generation, response: response, keepAlive: keepAlive)
        }
    }

    // MARK: - Clock

    func refreshClock() {
        nowMonotonic = monotonicMilliseconds()
        now = UInt32(truncatingIfNeeded: nowMonotonic)
        nowWall = wallClockNanoseconds() / 1_000_000
        let second = nowWall / 1000
        if second != dateSecond {
            dateSecond = second
            httpDate = Timestamp.httpDate(secondsSinceEpoch: second)
        }
    }

    // MARK: - Accepting

    private func acceptConnections() {
        while !shuttingDown {
            var peer = PeerAddress()
            let fd = Socket.accept(listenFd, peer: &peer)
            if fd < 0 {
                switch errno {
                case EAGAIN: return
                case EINTR, ECONNABORTED: continue
                case EMFILE, ENFILE:
                    shedOneConnection()
                    return
                default:
                    logger.error("accept failed: \(SystemError("accept4"))")
                    return
                }
            }
            guard let slot = table.allocate() else {
                close(fd)
                continue
            }
            Socket.setNoDelay(fd)
            if let size = config.sendBufferBytes { Socket.setSendBuffer(fd, bytes: size) }
            let c = table.pointer(slot)
            c.pointee.fd = fd
            c.pointee.phase = .http
            c.pointee.endpoint = .none
            c.pointee.flags = []
            c.pointee.peer = peer
            c.pointee.acceptedAt = nowMonotonic
            nextConnectionNumber += 1
            c.pointee.id = UInt64(index) << 48 | nextConnectionNumber
            c.pointee.bodyRemaining = 0
            c.pointee.headScanned = 0
            c.pointee.closeCode = 0
            tw_ev_io_init(&c.pointee.io, Worker.ioCallback, fd, TW_EV_READ)
            ev_io_start(loop.raw, &c.pointee.io)
            stats.socketsOpen.bump(1)
            appendDeadline(&handshakeList, slot)
        }
    }

    /// Out of descriptors: accept one pending connection with the spare descriptor and
    /// close it at once, so the client sees a refusal rather than a hang.
    private func shedOneConnection() {
        logger.warning("out of file descriptors; refusing a connection (raise LimitNOFILE)")
        guard spareFd >= 0 else { return }
        close(spareFd)
        var peer = PeerAddress()
        let fd = Socket.accept(listenFd, peer: &peer)
        if fd >= 0 { close(fd) }
        spareFd = open("/dev/null", O_RDONLY | O_CLOEXEC)
    }

    // MARK: - I/O events

    static let ioCallback: tw_io_cb = { loop, watcher, revents in
        let worker = EventLoop.owner(of: loop, as: Worker.self)
        // `io` is the first field of `Connection`: the watcher's address is the connection's.
        let c = UnsafeMutableRawPointer(watcher!).assumingMemoryBound(to: Connection.self)
        worker.onEvent(c, revents)
    }

    private func onEvent(_ c: UnsafeMutablePointer<Connection>, _ revents: Int32) {
        // A stale event for a connection closed earlier in this pass.
        if c.pointee.phase == .dead || c.pointee.phase == .free { return }
        if revents & TW_EV_WRITE != 0 {
            markDirty(c)
        }
        if revents & TW_EV_READ != 0 {
            onReadable(c)
        }
    }

    private func onReadable(_ c: UnsafeMutablePointer<Connection>) {
        if c.pointee.phase == .draining {
            drainUntilEOF(c)
            return
        }
        // Big leftovers (a request body on its way) are read into in place; small ones
        // (a partial header) are moved in front of the shared read buffer.
        let leftover = c.pointee.input.count
        var buffer: UnsafeMutableRawBufferPointer
        var inPlace = false
        var n: Int
        if leftover > 4096 {
            let want = max(16 << 10, min(c.pointee.bodyRemaining, 1 << 20))
            let p = c.pointee.input.reserve(want, pool: pool)
            n = recv(c.pointee.fd, p, want, 0)
            if n > 0 { c.pointee.input.commit(n) }
            buffer = c.pointee.input.readable
            inPlace = true
        } else {
            if leftover > 0 {
                readBuffer.copyMemory(from: c.pointee.input.readable.baseAddress!, byteCount: leftover)
                c.pointee.input.release(pool: pool)
            }
            n = recv(c.pointee.fd, readBuffer + leftover, readBufferSize - leftover, 0)
            buffer = UnsafeMutableRawBufferPointer(start: readBuffer, count: leftover + max(n, 0))
        }
        if n == 0 {
            c.pointee.flags.insert(.peerClosed)
            if !inPlace && leftover > 0 {
                // Nothing new: keep the leftover; it can never complete now.
            }
            onPeerEOF(c)
            return
        }
        if n < 0 {
            let err = errno
            if !inPlace && leftover > 0 {
                c.pointee.input.append(UnsafeRawBufferPointer(buffer), pool: pool)
            }
            if err == EAGAIN || err == EINTR { return }
            if err == ECONNRESET {
                c.pointee.flags.insert(.peerClosed)
                if c.pointee.closeCode == 0 { c.pointee.closeCode = CloseCode.abnormalClosure.rawValue }
                closeConnection(c)
            } else {
                closeConnection(c, error: SystemError("read", errno: err))
            }
            return
        }
        if c.pointee.phase == .webSocket {
            touchDeadline(&idleList, c.pointee.slot)
        }
        let consumed = process(c, buffer)
        if c.pointee.phase == .dead { return }
        if inPlace {
            c.pointee.input.consume(consumed, pool: pool)
        } else if consumed < buffer.count {
            c.pointee.input.append(UnsafeRawBufferPointer(rebasing: buffer[consumed...]), pool: pool)
        }
    }

    /// Routes bytes by phase; returns how many were consumed.
    private func process(_ c: UnsafeMutablePointer<Connection>, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        var position = 0
        while position < buffer.count {
            switch c.pointee.phase {
            case .http:
                position = processHTTP(c, buffer, from: position)
                // An upgrade switches phase mid-buffer: the rest are frames.
                if c.pointee.phase != .webSocket { return position }
            case .webSocket:
                return processWebSocket(c, buffer, from: position)
            case .draining, .dead, .free:
                return buffer.count
            case .awaitingReply:
                return position
            }
        }
        return position
    }

    private func onPeerEOF(_ c: UnsafeMutablePointer<Connection>) {
        switch c.pointee.phase {
        case .webSocket:
            if c.pointee.session.state == .open {
                // Gone without a closing handshake: 1006 (§7.1.5).
                c.pointee.closeCode = CloseCode.abnormalClosure.rawValue
            }
            closeConnection(c)
        case .http, .awaitingReply:
            // Answer what is pending first if we can; the peer may only have shut down writes.
            if c.pointee.output.isEmpty || c.pointee.phase == .http { closeConnection(c) }
        default:
            closeConnection(c)
        }
    }

    /// After our Close and shutdown(SHUT_WR): read and drop until the peer's EOF.
    private func drainUntilEOF(_ c: UnsafeMutablePointer<Connection>) {
        while true {
            let n = recv(c.pointee.fd, readBuffer, readBufferSize, 0)
            if n > 0 { continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
            closeConnection(c)
            return
        }
    }

    // MARK: - Output

    @inline(__always)
    func markDirty(_ c: UnsafeMutablePointer<Connection>) {
        if !c.pointee.flags.contains(.dirty) {
            c.pointee.flags.insert(.dirty)
            dirty.append(c.pointee.slot)
        }
    }

    /// Called once per loop pass, before the reactor sleeps.
    private func endOfPass() {
        var i = 0
        // Flushing cannot add to `dirty`, but closing can: iterate by index.
        while i < dirty.count {
            let c = table.pointer(dirty[i])
            c.pointee.flags.remove(.dirty)
            if c.pointee.phase != .dead && c.pointee.phase != .free {
                flush(c)
            }
            i += 1
        }
        dirty.removeAll(keepingCapacity: true)
        afterBroadcastFlush()
        for slot in dead { free(slot) }
        dead.removeAll(keepingCapacity: true)
        if shuttingDown && table.inUse == 0 {
            loop.stop()
        }
        rearmTimerIfNeeded()
    }

    private func flush(_ c: UnsafeMutablePointer<Connection>) {
        if c.pointee.endpoint == .stream {
            guard flushStream(c) else { return }
            if c.pointee.output.isEmpty && !c.pointee.flags.contains(.broadcastPending) && slowQueue(c) == nil {
                afterOutputDrained(c)
            }
            return
        }
        let fd = c.pointee.fd
        while !c.pointee.output.isEmpty {
            let pending = c.pointee.output.readable
            let n = send(fd, pending.baseAddress, pending.count, Int32(MSG_NOSIGNAL))
            if n < 0 {
                let err = errno
                if err == EINTR { continue }
                if err == EAGAIN { break }
                closeAfterWriteError(c, err)
                return
            }
            stats.bytesSent.bump(UInt64(n))
            c.pointee.output.consume(n, pool: pool)
        }
        if !c.pointee.output.isEmpty {
            setWriteWatch(c, true)
            return
        }
        setWriteWatch(c, false)
        afterOutputDrained(c)
    }

    private func afterOutputDrained(_ c: UnsafeMutablePointer<Connection>) {
        if c.pointee.flags.contains(.readPaused) && c.pointee.phase != .awaitingReply {
            resumeReading(c)
        }
        if c.pointee.flags.contains(.closeAfterFlush) {
            beginDrain(c)
        }
    }

    /// Queues bytes for this connection alone and schedules a flush.
    func enqueue(_ c: UnsafeMutablePointer<Connection>, _ bytes: UnsafeRawBufferPointer) {
        c.pointee.output.append(bytes, pool: pool)
        afterEnqueue(c)
    }

    @inline(__always)
    func afterEnqueue(_ c: UnsafeMutablePointer<Connection>) {
        markDirty(c)
        // A peer that sends faster than it reads is not read until it catches up.
        if c.pointee.output.count > config.maxOutputBytes && !c.pointee.flags.contains(.readPaused) {
            pauseReading(c)
        }
    }

    /// Writes one frame with `payload` into the connection's output.
    func enqueueFrame(_ c: UnsafeMutablePointer<Connection>, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer, placeControl: Bool = true) {
        if placeControl && c.pointee.endpoint == .stream { _ = prepareControl(c) }
        let header = FrameEncoder.headerSize(payloadLength: payload.count, masked: false)
        let p = c.pointee.output.reserve(header + payload.count, pool: pool)
        FrameEncoder.writeHeader(into: p, opcode: opcode, payloadLength: payload.count)
        if payload.count > 0 {
            (p + header).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
        }
        c.pointee.output.commit(header + payload.count)
        afterEnqueue(c)
    }

    func setWriteWatch(_ c: UnsafeMutablePointer<Connection>, _ on: Bool) {
        guard c.pointee.flags.contains(.writeBlocked) != on else { return }
        if on {
            c.pointee.flags.insert(.writeBlocked)
            c.pointee.listIndex = UInt32(blocked.count)
            blocked.append(c.pointee.slot)
        } else {
            c.pointee.flags.remove(.writeBlocked)
            removeFromBlocked(c)
        }
        updateEvents(c)
    }

    private func removeFromBlocked(_ c: UnsafeMutablePointer<Connection>) {
        let i = Int(c.pointee.listIndex)
        guard i < blocked.count, blocked[i] == c.pointee.slot else { return }
        let last = blocked.removeLast()
        if i < blocked.count {
            blocked[i] = last
            table.pointer(last).pointee.listIndex = UInt32(i)
        }
    }

    /// Before a per-connection message is queued: if `output` is empty, its place in the
    /// stream is "after everything pending now". Returns the seq to stamp on it.
    func prepareControl(_ c: UnsafeMutablePointer<Connection>) -> UInt64 {
        if c.pointee.output.isEmpty {
            if let queue = slowQueue(c) {
                c.pointee.controlMark = queue.end
            } else {
                c.pointee.controlMark = log.end
            }
            c.pointee.controlSeq = max(log.headSeq, c.pointee.minSeq)
        }
        return c.pointee.controlSeq
    }

    func pauseReading(_ c: UnsafeMutablePointer<Connection>) {
        c.pointee.flags.insert(.readPaused)
        updateEvents(c)
    }

    func resumeReading(_ c: UnsafeMutablePointer<Connection>) {
        c.pointee.flags.remove(.readPaused)
        updateEvents(c)
        // Bytes that arrived while paused may already be complete requests.
        if !c.pointee.input.isEmpty && c.pointee.phase == .http {
            let leftover = c.pointee.input.readable
            let consumed = process(c, leftover)
            if c.pointee.phase != .dead { c.pointee.input.consume(consumed, pool: pool) }
        }
    }

    /// Makes the io watcher's events match the flags (libev needs it stopped to change).
    private func updateEvents(_ c: UnsafeMutablePointer<Connection>) {
        var events: Int32 = 0
        if !c.pointee.flags.contains(.readPaused) { events |= TW_EV_READ }
        if c.pointee.flags.contains(.writeBlocked) { events |= TW_EV_WRITE }
        if tw_ev_io_events(&c.pointee.io) == events && tw_ev_is_active(&c.pointee.io) != 0 { return }
        ev_io_stop(loop.raw, &c.pointee.io)
        tw_ev_io_set_events(&c.pointee.io, events)
        if events != 0 { ev_io_start(loop.raw, &c.pointee.io) }
    }

    // MARK: - Closing

    /// Our last bytes are out: shut down our side, then read until the peer's EOF (or the
    /// close timeout), so the peer reads everything before it sees the end.
    private func beginDrain(_ c: UnsafeMutablePointer<Connection>) {
        c.pointee.flags.remove(.closeAfterFlush)
        if c.pointee.flags.contains(.peerClosed) {
            closeConnection(c)
            return
        }
        shutdown(c.pointee.fd, Int32(SHUT_WR))
        leaveSessionLists(c)
        closingList.remove(c.pointee.slot) { timeoutLinks($0) }
        c.pointee.phase = .draining
        c.pointee.flags.remove(.readPaused)
        updateEvents(c)
        appendDeadline(&closingList, c.pointee.slot)
    }

    /// A write failed. A peer that reset or vanished is an ordinary (abnormal, 1006)
    /// disconnect; anything else is a connection error, logged and counted.
    func closeAfterWriteError(_ c: UnsafeMutablePointer<Connection>, _ err: Int32) {
        if err == ECONNRESET || err == EPIPE {
            if c.pointee.closeCode == 0 { c.pointee.closeCode = CloseCode.abnormalClosure.rawValue }
            closeConnection(c)
        } else {
            if c.pointee.endpoint == .stream { stats.broadcastFailures.bump() }
            closeConnection(c, error: SystemError("write", errno: err))
        }
    }

    /// Closes the socket now. The slot is freed after this pass.
    func closeConnection(_ c: UnsafeMutablePointer<Connection>, error: SystemError? = nil) {
        let phase = c.pointee.phase
        if phase == .dead || phase == .free { return }
        ev_io_stop(loop.raw, &c.pointee.io)
        leaveSessionLists(c)
        closingList.remove(c.pointee.slot) { timeoutLinks($0) }
        if c.pointee.flags.contains(.writeBlocked) {
            c.pointee.flags.remove(.writeBlocked)
            removeFromBlocked(c)
        }
        releaseBroadcastState(c)
        close(c.pointee.fd)
        stats.socketsOpen.bump(-1)
        if c.pointee.endpoint != .none {
            stats.webSocketsOpen.bump(-1)
            let seconds = Double(nowMonotonic - c.pointee.acceptedAt) / 1000
            var meta: Logger.Metadata = [
                "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)",
                "duration_s": "\(Double(Int(seconds * 1000)) / 1000)",
            ]
            if c.pointee.closeCode != 0 { meta["close_code"] = "\(c.pointee.closeCode)" }
            if let error {
                stats.connectionErrors.bump()
                logger.error("WebSocket connection error: \(error)", metadata: meta)
            }
            logger.info("WebSocket client disconnected, duration: \(meta["duration_s"]!)s", metadata: meta)
        }
        if c.pointee.flags.contains(.admitted) {
            context.admitted.subtract(1, ordering: .relaxed)
        }
        c.pointee.fd = -1
        c.pointee.phase = .dead
        dead.append(c.pointee.slot)
    }

    private func leaveSessionLists(_ c: UnsafeMutablePointer<Connection>) {
        let slot = c.pointee.slot
        handshakeList.remove(slot) { timeoutLinks($0) }
        idleList.remove(slot) { timeoutLinks($0) }
        pingList.remove(slot) { heartbeatLinks($0) }
    }

    /// Returns a dead slot to the table (after the pass that closed it).
    private func free(_ slot: UInt32) {
        let c = table.pointer(slot)
        c.pointee.input.release(pool: pool)
        c.pointee.message.release(pool: pool)
        c.pointee.output.release(pool: pool)
        c.pointee.generation &+= 1
        c.pointee.phase = .free
        c.pointee.endpoint = .none
        c.pointee.flags = []
        c.pointee.session = WebSocketSession(maxMessageSize: 0)
        c.pointee.minSeq = 0
        c.pointee.cursor = 0
        c.pointee.cursorOffset = 0
        table.release(slot)
    }

    // MARK: - Timeouts

    static let timeoutOffset = MemoryLayout<Connection>.offset(of: \Connection.timeout)!
    static let heartbeatOffset = MemoryLayout<Connection>.offset(of: \Connection.heartbeat)!

    /// The links a slot uses in the handshake, idle and closing lists.
    @inline(__always)
    func timeoutLinks(_ slot: UInt32) -> UnsafeMutablePointer<DeadlineLinks> {
        UnsafeMutableRawPointer(table.pointer(slot)).advanced(by: Self.timeoutOffset).assumingMemoryBound(to: DeadlineLinks.self)
    }

    /// The links a slot uses in the ping list.
    @inline(__always)
    func heartbeatLinks(_ slot: UInt32) -> UnsafeMutablePointer<DeadlineLinks> {
        UnsafeMutableRawPointer(table.pointer(slot)).advanced(by: Self.heartbeatOffset).assumingMemoryBound(to: DeadlineLinks.self)
    }

    func appendDeadline(_ list: inout DeadlineList, _ slot: UInt32) {
        if list.id == 4 {
            list.append(slot, now: now) { heartbeatLinks($0) }
        } else {
            list.append(slot, now: now) { timeoutLinks($0) }
        }
        let deadline = now &+ list.timeoutMilliseconds
        if !timerArmed || (DeadlineList.hasPassed(deadline, now: timerDue) && deadline != timerDue) {
            armTimer(at: deadline)
        }
    }

    @inline(__always)
    func touchDeadline(_ list: inout DeadlineList, _ slot: UInt32) {
        list.touch(slot, now: now) { timeoutLinks($0) }
    }

    private func onTimer() {
        timerArmed = false
        refreshClock()
        while let slot = handshakeList.popExpired(now: now, { timeoutLinks($0) }) {
            let c = table.pointer(slot)
            stats.handshakeTimeouts.bump()
            logger.debug("request timeout", metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)"])
            closeConnection(c)
        }
        while let slot = idleList.popExpired(now: now, { timeoutLinks($0) }) {
            let c = table.pointer(slot)
            stats.idleTimeouts.bump()
            c.pointee.closeCode = CloseCode.goingAway.rawValue
            logger.info("closing idle WebSocket connection", metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)"])
            startClose(c, code: .goingAway, reason: "idle timeout")
        }
        while let slot = closingList.popExpired(now: now, { timeoutLinks($0) }) {
            closeConnection(table.pointer(slot))
        }
        while let slot = pingList.popExpired(now: now, { heartbeatLinks($0) }) {
            let c = table.pointer(slot)
            enqueueFrame(c, .ping, UnsafeRawBufferPointer(start: nil, count: 0))
            pingList.append(slot, now: now) { heartbeatLinks($0) }
        }
        rearmTimerIfNeeded()
    }

    /// Halves the spare-buffer cache each second down to 32 blocks, and returns freed heap
    /// to the system after a large release (malloc keeps it otherwise).
    private func housekeeping() {
        let before = pool.cachedBlocks
        pool.trim(keep: max(32, before / 2))
        if (before - pool.cachedBlocks) * pool.blockSize >= 256 << 10 {
            _ = tw_malloc_trim()
        }
    }

    private func armTimer(at deadline: UInt32) {
        ev_timer_stop(loop.raw, timerWatcher)
        let delay = Double(DeadlineList.millisecondsUntil(deadline, now: now)) / 1000 + 0.001
        tw_ev_timer_set(timerWatcher, delay, 0)
        ev_timer_start(loop.raw, timerWatcher)
        timerDue = deadline
        timerArmed = true
    }

    private func rearmTimerIfNeeded() {
        var earliest: UInt32?
        func consider(_ d: UInt32?) {
            guard let d else { return }
            if let e = earliest { if DeadlineList.hasPassed(d, now: e) { earliest = d } } else { earliest = d }
        }
        consider(handshakeList.headDeadline({ timeoutLinks($0) }))
        consider(idleList.headDeadline({ timeoutLinks($0) }))
        consider(closingList.headDeadline({ timeoutLinks($0) }))
        consider(pingList.headDeadline({ heartbeatLinks($0) }))
        guard let earliest else {
            if timerArmed { ev_timer_stop(loop.raw, timerWatcher); timerArmed = false }
            return
        }
        if timerArmed && timerDue == earliest { return }
        armTimer(at: earliest)
    }

    // MARK: - Shutdown

    private func beginShutdown() {
        guard !shuttingDown else { return }
        shuttingDown = true
        ev_io_stop(loop.raw, listenWatcher)
        close(listenFd)
        listenFd = -1
        // The shutdown grace bounds the whole closing handshake.
        closingList.timeoutMilliseconds = UInt32(max(config.shutdownGraceMilliseconds, 10))
        for slot in 0..<table.highWater {
            let c = table.pointer(slot)
            switch c.pointee.phase {
            case .http:
                if c.pointee.output.isEmpty { closeConnection(c) } else { c.pointee.flags.insert(.closeAfterFlush) }
            case .awaitingReply:
                c.pointee.flags.insert(.httpClose)
            case .webSocket:
                c.pointee.closeCode = CloseCode.goingAway.rawValue
                startClose(c, code: .goingAway, reason: "server shutting down")
            default:
                break
            }
        }
        if table.inUse == 0 { loop.stop() }
    }
}
