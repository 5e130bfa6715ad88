import CLibEV
import Glibc
import Logging
import Reactor
import WireProtocol

/// Carries out what each connection's `ConnectionLifecycle` decides: the reactor's parts
/// report events here (a deadline passed, a write failed, we want to close), and the
/// returned actions are executed in one place. Closed sockets are freed after the
/// dispatch pass, never in the middle of it (Redis's rule), so no handler further down
/// the pass finds its connection gone.
final class LifecycleDriver {
    private unowned(unsafe) let worker: Worker
    private let timers: ConnectionTimers
    private let output: OutputFlusher
    private let broadcast: BroadcastPath
    private let table: ConnectionTable
    private let pool: BufferPool
    private let stats: WorkerStats
    private let clock: ReactorClock
    /// Connections closed during this pass, freed after it.
    private var closed: [UInt32] = []

    init(worker: Worker, timers: ConnectionTimers, output: OutputFlusher, broadcast: BroadcastPath) {
        self.worker = worker
        self.timers = timers
        self.output = output
        self.broadcast = broadcast
        table = worker.table
        pool = worker.pool
        stats = worker.stats
        clock = worker.clock
        closed.reserveCapacity(256)
    }

    /// Executes a transition. `reason` is the text of a Close it sends.
    func apply(_ c: UnsafeMutablePointer<Connection>, _ t: ConnectionLifecycle.Transition, reason: String = "") {
        let a = t.actions
        if a.isEmpty { return }
        if a.contains(.closeSocket) {
            closeSocket(c)
            return
        }
        if a.contains(.stopBroadcasts) {
            broadcast.leaveIndex(c)
            broadcast.leaveAccounts(c)
        }
        if a.contains(.cancelRequestDeadline) { timers.cancelRequest(c) }
        if a.contains(.cancelSessionTimers) { timers.cancelSession(c) }
        if a.contains(.armRequestDeadline) { timers.armRequest(c) }
        if a.contains(.armSessionTimers) { timers.armSession(c) }
        if a.contains(.armClosingDeadline) { timers.armClosing(c) }
        if a.contains(.sendPing) { output.enqueueFrame(c, .ping, UnsafeRawBufferPointer(start: nil, count: 0)) }
        if a.contains(.sendClose) {
            // From here on the session drops data and pings while it looks for the peer's Close.
            _ = c.pointee.session.beginClose()
            output.enqueueClose(c, t.closeCode, reason: reason)
        }
        if a.contains(.stopReading) { output.setInputStopped(c, true) }
        if a.contains(.resumeReading) {
            output.setInputStopped(c, false)
            // Pipelined requests read before the reply came are waiting in `input`.
            worker.io.processLeftover(c)
            if !c.pointee.isLive { return }
        }
        if a.contains(.shutdownWrite) {
            // Our bytes are out: FIN, then read until the peer's EOF so that its unread
            // input cannot make our kernel reset the connection before it read ours.
            worker.tls.closeNotify(c)
            shutdown(c.pointee.fd, Int32(SHUT_WR))
            output.readEverything(c)
        }
        if a.contains(.flushOutput) { output.markDirty(c) }
    }

    // MARK: - Events from the reactor's parts

    /// We close the connection (idle timeout, shutdown, slow consumer, policy).
    func close(_ c: UnsafeMutablePointer<Connection>, _ cause: ConnectionLifecycle.CloseCause, reason: String) {
        let t = c.pointee.lifecycle.close(cause, outputPending: output.hasPendingOutput(c))
        apply(c, t, reason: reason)
    }

    func requestDeadlinePassed(_ c: UnsafeMutablePointer<Connection>) {
        stats.handshakeTimeouts.bump()
        if worker.logger.logLevel <= .debug {
            worker.logger.debug("request timeout", metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)"])
        }
        apply(c, c.pointee.lifecycle.requestDeadlineExpired())
    }

    func idleDeadlinePassed(_ c: UnsafeMutablePointer<Connection>) {
        stats.idleTimeouts.bump()
        if worker.logger.logLevel <= .info {
            worker.logger.info("closing idle WebSocket connection", metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)"])
        }
        apply(c, c.pointee.lifecycle.idleDeadlineExpired(), reason: "idle timeout")
    }

    func closingDeadlinePassed(_ c: UnsafeMutablePointer<Connection>) {
        apply(c, c.pointee.lifecycle.closingDeadlineExpired())
    }

    /// The ping interval passed; returns whether the connection stays on the ping list.
    func pingDue(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        let t = c.pointee.lifecycle.pingDue()
        apply(c, t)
        return t.actions.contains(.sendPing)
    }

    /// A read failed: a reset is an ordinary (abnormal, 1006) disconnect; anything else is
    /// a connection error, logged and counted.
    func readFailed(_ c: UnsafeMutablePointer<Connection>, errno err: Int32) {
        if err != ECONNRESET { connectionError(c, SystemError("read", errno: err)) }
        apply(c, c.pointee.lifecycle.ioFailed())
    }

    /// A write failed; a peer that reset or vanished is an ordinary disconnect.
    func writeFailed(_ c: UnsafeMutablePointer<Connection>, errno err: Int32) {
        if err != ECONNRESET && err != EPIPE {
            if c.pointee.endpoint == .stream { stats.broadcastFailures.bump() }
            connectionError(c, SystemError("write", errno: err))
        }
        apply(c, c.pointee.lifecycle.ioFailed())
    }

    private func connectionError(_ c: UnsafeMutablePointer<Connection>, _ error: SystemError) {
        guard c.pointee.lifecycle.isWebSocket else { return }
        stats.connectionErrors.bump()
        if worker.logger.logLevel <= .error {
            worker.logger.error("WebSocket connection error: \(error)", metadata: [
                "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)",
            ])
        }
    }

    // MARK: - Closing and freeing

    /// Closes the socket now (the lifecycle is `closed`). The slot is freed after this pass.
    private func closeSocket(_ c: UnsafeMutablePointer<Connection>) {
        guard c.pointee.isLive else { return }
        ev_io_stop(worker.loop.raw, &c.pointee.io)
        timers.cancelAll(c)
        if c.pointee.flags.contains(.writeBlocked) {
            c.pointee.flags.remove(.writeBlocked)
            broadcast.removeBlocked(c)
        }
        worker.releaseAdmission(c)
        broadcast.releaseState(c)
        worker.tls.release(c)
        Glibc.close(c.pointee.fd)
        c.pointee.fd = -1
        stats.socketsOpen.bump(-1)
        if c.pointee.lifecycle.isWebSocket {
            stats.webSocketsOpen.bump(-1)
            logDisconnect(c)
        }
        if c.pointee.flags.contains(.admitted) {
            worker.context.admitted.subtract(1, ordering: .relaxed)
        }
        closed.append(c.pointee.slot)
    }

    /// The spec's "WebSocket client disconnected, duration: {d}s" (INFO).
    private func logDisconnect(_ c: UnsafeMutablePointer<Connection>) {
        let logger = worker.logger
        guard logger.logLevel <= .info else { return }
        let milliseconds = clock.monotonic - c.pointee.acceptedAt
        let duration = "\(milliseconds / 1000).\(String(milliseconds % 1000 + 1000).dropFirst())"
        var metadata: Logger.Metadata = [
            "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "duration_s": "\(duration)",
        ]
        if c.pointee.lifecycle.closeCode != 0 { metadata["close_code"] = "\(c.pointee.lifecycle.closeCode)" }
        logger.info("WebSocket client disconnected, duration: \(duration)s", metadata: metadata)
    }

    /// Returns the slots closed in this pass to the table, their buffers to the pool.
    func freeClosed() {
        guard !closed.isEmpty else { return }
        for slot in closed {
            let c = table.pointer(slot)
            c.pointee.input.release(pool: pool)
            c.pointee.message.release(pool: pool)
            c.pointee.output.release(pool: pool)
            c.pointee.generation &+= 1
            c.pointee.lifecycle = ConnectionLifecycle()
            c.pointee.endpoint = .none
            c.pointee.flags = []
            c.pointee.session = WebSocketSession(maxMessageSize: 0)
            c.pointee.minSeq = 0
            c.pointee.cursor = 0
            c.pointee.cursorOffset = 0
            table.release(slot)
        }
        // A mass disconnect must not leave a list as long as the crowd behind.
        if closed.count > 4096 { closed = [] } else { closed.removeAll(keepingCapacity: true) }
    }
}
