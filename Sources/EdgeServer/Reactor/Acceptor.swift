import CLibEV
import Glibc
import Logging
import Reactor
import WireProtocol

/// The reactor's listening socket (its own, on the shared port: SO_REUSEPORT lets the
/// kernel spread connections across reactors). Each readiness event takes at most
/// `maxPerPass` connections, so a connection storm cannot starve the reads, writes and
/// timers of the connections already here; the rest wait one pass (the socket stays
/// readable, so libev calls again at once).
final class Acceptor {
    /// 64 accepts per pass: a full pass of reads and writes between every 64 handshakes
    /// keeps latency for existing clients flat during a reconnect storm, and still takes
    /// tens of thousands of connections a second.
    static let maxPerPass = 64

    private unowned(unsafe) let worker: Worker
    private let table: ConnectionTable
    private let stats: WorkerStats
    private(set) var listenFd: Int32
    /// A spare descriptor, given up to accept-and-close one connection when the process is
    /// out of descriptors (EMFILE), so the listening socket does not spin.
    private var spareFd: Int32 = -1
    private let watcher = UnsafeMutablePointer<ev_io>.allocate(capacity: 1)
    private var nextConnectionNumber: UInt64 = 0

    init(worker: Worker, listenFd: Int32) {
        self.worker = worker
        table = worker.table
        stats = worker.stats
        self.listenFd = listenFd
        spareFd = open("/dev/null", O_RDONLY | O_CLOEXEC)
    }

    deinit {
        watcher.deallocate()
        if spareFd >= 0 { close(spareFd) }
        if listenFd >= 0 { close(listenFd) }
    }

    func start() {
        guard listenFd >= 0 else { return }
        tw_ev_io_init(watcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: Worker.self).acceptor.acceptPending()
        }, listenFd, TW_EV_READ)
        ev_io_start(worker.loop.raw, watcher)
    }

    /// Stops accepting (shutdown, or the loop ended).
    func closeListener() {
        guard listenFd >= 0 else { return }
        ev_io_stop(worker.loop.raw, watcher)
        close(listenFd)
        listenFd = -1
    }

    private func acceptPending() {
        var taken = 0
        while taken < Self.maxPerPass && !worker.shuttingDown {
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
                    worker.logger.error("accept failed: \(SystemError("accept4"))")
                    return
                }
            }
            taken += 1
            guard let slot = table.allocate() else {
                close(fd)
                continue
            }
            admit(fd: fd, peer: peer, slot: slot)
        }
    }

    /// A new connection: an HTTP connection waiting for its first request.
    func admit(fd: Int32, peer: PeerAddress, slot: UInt32) {
        let config = worker.config
        Socket.setNoDelay(fd)
        if let size = config.sendBufferBytes { Socket.setSendBuffer(fd, bytes: size) }
        let c = table.pointer(slot)
        c.pointee.fd = fd
        c.pointee.lifecycle = ConnectionLifecycle()
        c.pointee.endpoint = .none
        // On a TLS port the first byte decides between TLS and a plain-HTTP refusal.
        c.pointee.flags = worker.tlsContext != nil ? [.tlsSniffing] : []
        c.pointee.peer = peer
        c.pointee.acceptedAt = worker.clock.monotonic
        nextConnectionNumber += 1
        c.pointee.id = UInt64(worker.index) << 48 | nextConnectionNumber
        c.pointee.bodyRemaining = 0
        c.pointee.headScanned = 0
        tw_ev_io_init(&c.pointee.io, ConnectionIO.callback, fd, TW_EV_READ)
        ev_io_start(worker.loop.raw, &c.pointee.io)
        stats.socketsOpen.bump(1)
        worker.timers.armRequest(c)
    }

    /// Out of descriptors: accept one pending connection with the spare descriptor and
    /// close it at once, so the client sees a refusal rather than a hang.
    private func shedOneConnection() {
        worker.logger.warning("out of file descriptors; refusing a connection (raise LimitNOFILE)")
        guard spareFd >= 0 else { return }
        close(spareFd)
        var peer = PeerAddress()
        let fd = Socket.accept(listenFd, peer: &peer)
        if fd >= 0 { close(fd) }
        spareFd = open("/dev/null", O_RDONLY | O_CLOEXEC)
    }
}
