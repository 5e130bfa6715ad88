import CLibEV
import CTLSShims
import Glibc
import Logging
import Reactor

/// The reactor's TLS layer: on a TLS port every connection's first byte says whether it
/// speaks TLS (a handshake record, 0x16) or plain HTTP (answered 400); a TLS connection
/// then reads and writes through its OpenSSL session, non-blocking, on this reactor.
/// Reads fill the reactor's buffer from as many records as are ready; writes gather a
/// subscriber's pending frames into full 16 KiB records (one copy, into the record being
/// encrypted), so a pass costs a record per 16 KiB, not one per frame.
final class TLSTransport {
    private unowned(unsafe) let worker: Worker
    private let stats: WorkerStats

    init(worker: Worker) {
        self.worker = worker
        stats = worker.stats
    }

    /// Decides TLS or plain from the first byte; false while there is nothing to decide on
    /// yet or the connection ended.
    func sniff(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        var first: UInt8 = 0
        let n = recv(c.pointee.fd, &first, 1, Int32(MSG_PEEK))
        if n == 0 {
            worker.lifecycle.apply(c, c.pointee.lifecycle.peerClosedInput(outputPending: false))
            return false
        }
        if n < 0 {
            let err = errno
            if err != EAGAIN && err != EINTR { worker.lifecycle.readFailed(c, errno: err) }
            return false
        }
        c.pointee.flags.remove(.tlsSniffing)
        guard first == 0x16 else {
            // Plain HTTP (or anything else) on the TLS port: one 400 that says what to do.
            c.pointee.flags.insert(.plainOnTLSPort)
            stats.tlsPlaintextRequests.bump()
            return true
        }
        guard let context = worker.tlsContext, let session = tw_tls_accept(context, c.pointee.fd) else {
            worker.lifecycle.readFailed(c, errno: ENOMEM)
            return false
        }
        c.pointee.tls = session
        return true
    }

    /// recv's contract over the session: bytes, 0 at EOF or close_notify, -1 with errno.
    func read(_ c: UnsafeMutablePointer<Connection>, _ session: OpaquePointer, _ p: UnsafeMutableRawPointer, _ size: Int) -> Int {
        let n = tw_tls_read(session, p, size)
        if !c.pointee.flags.contains(.tlsEstablished) && tw_tls_established(session) != 0 { established(c, session) }
        if n >= -1 { return n }
        if n == Int(TW_TLS_WANTS_WRITE) {
            // The handshake's next flight did not fit the socket: go on when it drains.
            c.pointee.flags.insert(.tlsReadWantsWrite)
            worker.output.setWriteWatch(c, true)
            errno = EAGAIN
            return -1
        }
        failed(c, reading: true)
        errno = EPROTO
        return -1
    }

    /// writev's contract over the session: plaintext bytes taken, or -1 with errno.
    @inline(__always)
    func write(_ c: UnsafeMutablePointer<Connection>, _ session: OpaquePointer, _ iovecs: UnsafeMutablePointer<iovec>?, _ count: Int) -> Int {
        let n = tw_tls_writev(session, iovecs, Int32(count))
        if n >= -1 { return n }
        failed(c, reading: false)
        errno = EPROTO
        return -1
    }

    /// Whether the session holds output of its own (a half-written record, or a handshake
    /// flight waiting for the socket): the connection is not drained until it is out.
    @inline(__always)
    func holdsOutput(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        guard let session = c.pointee.tls else { return false }
        return tw_tls_backlog(session) != 0 || c.pointee.flags.contains(.tlsReadWantsWrite)
    }

    /// Writes a held record; true when nothing is held any more.
    func flushHeld(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        guard let session = c.pointee.tls else { return true }
        if tw_tls_backlog(session) != 0 { _ = write(c, session, nil, 0) }
        return c.pointee.isLive && !holdsOutput(c)
    }

    /// Plaintext already decrypted inside the session is read now (libev cannot see it).
    func readAgainIfBuffered(_ c: UnsafeMutablePointer<Connection>) {
        guard let session = c.pointee.tls, c.pointee.isLive, tw_tls_pending(session) > 0,
              !c.pointee.flags.contains(.readPaused), !c.pointee.flags.contains(.inputStopped) else { return }
        // The watcher's address inside the connection's stable slot (not a temporary's).
        ev_feed_event(worker.loop.raw, UnsafeMutableRawPointer(c) + MemoryLayout<Connection>.offset(of: \.io)!, TW_EV_READ)
    }

    /// Our side is done: close_notify before the TCP FIN (best effort, never blocks).
    func closeNotify(_ c: UnsafeMutablePointer<Connection>) {
        if let session = c.pointee.tls { tw_tls_close_notify(session) }
    }

    /// The socket is closing: the session goes with it.
    func release(_ c: UnsafeMutablePointer<Connection>) {
        if let session = c.pointee.tls {
            tw_tls_free(session)
            c.pointee.tls = nil
        }
    }

    private func established(_ c: UnsafeMutablePointer<Connection>, _ session: OpaquePointer) {
        c.pointee.flags.insert(.tlsEstablished)
        stats.tlsHandshakes[tw_tls_version(session) == 13 ? 1 : 0].bump()
    }

    private func failed(_ c: UnsafeMutablePointer<Connection>, reading: Bool) {
        let duringHandshake = !c.pointee.flags.contains(.tlsEstablished)
        if duringHandshake { stats.tlsHandshakeFailures.bump() } else { stats.tlsRecordFailures.bump() }
        // Scanners and old clients fail handshakes all day: debug, not error.
        let logger = worker.logger
        if logger.logLevel <= .debug {
            logger.debug(duringHandshake ? "TLS handshake failed" : "TLS connection failed", metadata: [
                "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)",
                "reason": "\(String(cString: tw_tls_last_error()))", "during": "\(reading ? "read" : "write")",
            ])
        }
    }
}
