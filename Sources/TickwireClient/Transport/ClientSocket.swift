#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CTLSShims

/// Whom a `wss://` client trusts: OpenSSL's client context, made once per client and shared
/// by its connections and snapshot requests. TLS 1.2 and 1.3 only, ALPN `http/1.1`, and the
/// peer's certificate always verified: against `caFile`, or the system store without one.
package final class TLSClientContext: @unchecked Sendable {
    // @unchecked: OpenSSL allows one SSL_CTX to make sessions on many threads at once once
    // it is set up, and nothing changes this one after `init`.
    let raw: OpaquePointer

    /// Loads the trusted certificates (PEM, one or more); throws what to fix.
    package init(caFile: String?) throws(TransportError) {
        var error = [CChar](repeating: 0, count: 512)
        guard let context = tw_tls_client_context(1, caFile, &error, error.count) else {
            throw .tls(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        raw = context
    }

    deinit { tw_tls_context_free(raw) }
}

/// One client TCP connection, plain or TLS, for a WebSocket or an HTTP exchange: the same
/// non-blocking `receive`/`send` either way, so the connection loop does not care which.
/// Owned by one thread; closed (with a TLS close_notify) when released.
final class ClientSocket {
    let fd: Int32
    private var session: OpaquePointer?
    /// The last TLS read had to write first (a TLS 1.3 key update answer) and the socket
    /// was full: wake for POLLOUT to read on.
    private var readWantsWrite = false
    /// OpenSSL failed on this session: no close_notify may follow a fatal error.
    private var failed = false

    private init(fd: Int32, session: OpaquePointer?) {
        self.fd = fd
        self.session = session
    }

    deinit {
        if let session {
            if !failed { tw_tls_close_notify(session) }
            tw_tls_free(session)
        }
        Posix.closeDescriptor(fd)
    }

    var isTLS: Bool { session != nil }

    /// TCP connect to `host:port` and, with `tls`, the TLS handshake, all before `deadline`.
    /// `cancelled` is asked whenever the wake pipe fires.
    static func open(host: String, port: Int, tls: TLSClientContext?, deadline: UInt64, wake: WakePipe,
                     cancelled: () -> Bool) throws(TransportError) -> ClientSocket {
        let fd = try Posix.openConnection(host: host, port: port, deadline: deadline, wake: wake, cancelled: cancelled)
        guard let tls else { return ClientSocket(fd: fd, session: nil) }
        // OpenSSL writes with write(2): a peer gone mid-write must be EPIPE, not a signal.
        Posix.ignoreBrokenPipeOnThisThread()
        guard let session = tw_tls_connect_verified(tls.raw, fd, host) else {
            Posix.closeDescriptor(fd)
            throw .tls("cannot start a TLS session for \(host)")
        }
        let socket = ClientSocket(fd: fd, session: session)
        try socket.handshake(host: host, port: port, deadline: deadline, wake: wake, cancelled: cancelled)
        return socket
    }

    private func handshake(host: String, port: Int, deadline: UInt64, wake: WakePipe, cancelled: () -> Bool) throws(TransportError) {
        guard let session else { return }
        while true {
            let r = tw_tls_handshake(session)
            let events: Int16
            switch r {
            case 1:
                return
            case -1 where errno == EAGAIN:
                events = Int16(POLLIN)
            case TW_TLS_WANTS_WRITE:
                events = Int16(POLLOUT)
            case -1:
                failed = true
                throw .io("the TLS handshake with \(host):\(port)", errno: errno)
            default:
                failed = true
                throw Self.handshakeFailure(session, host: host, port: port)
            }
            switch Posix.wait(fd, events, wake: wake, deadline: deadline) {
            case .timedOut: throw .timedOut("the TLS handshake with \(host):\(port)")
            case .woken: if cancelled() { throw .cancelled }
            case .ready: break
            }
        }
    }

    /// The handshake failed: say whether the certificate was the reason, and what to do.
    static func handshakeFailure(_ session: OpaquePointer, host: String, port: Int) -> TransportError {
        var reason = [CChar](repeating: 0, count: 256)
        let verdict = tw_tls_verify_result(session, &reason, reason.count)
        if verdict != 0 {
            let text = String(cString: reason)
            var advice = ""
            switch verdict {
            case 62, 64:   // X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
                advice = ": the certificate is not for '\(host)'; connect by a name it lists"
            case 18, 19, 20, 21:   // self-signed, self-signed in chain, unknown issuer (local, leaf)
                advice = ": its issuer is not trusted; give the CA that signed it as Configuration.tls.caFile"
            case 9, 10:   // X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
                advice = ": check the server's certificate dates and this machine's clock"
            default:
                break
            }
            return .tls("the certificate of \(host):\(port) was rejected (\(text))\(advice)")
        }
        let detail = String(cString: tw_tls_last_error())
        if detail.isEmpty || detail == "TLS failure" {
            return .tls("the TLS handshake with \(host):\(port) failed: the server closed the connection (is it serving TLS?)")
        }
        return .tls("the TLS handshake with \(host):\(port) failed: \(detail)")
    }

    /// Waits for `events` (POLLIN/POLLOUT) like `Posix.wait`, knowing TLS: decrypted bytes
    /// already inside the session count as readable, and a read that must write first
    /// waits for room to write.
    func wait(_ events: Int16, wake: WakePipe?, deadline: UInt64?) -> Posix.Readiness {
        if events & Int16(POLLIN) != 0, let session, tw_tls_pending(session) > 0 { return .ready(Int16(POLLIN)) }
        var asked = events
        if readWantsWrite { asked |= Int16(POLLOUT) }
        let readiness = Posix.wait(fd, asked, wake: wake, deadline: deadline)
        if readWantsWrite, case .ready(let revents) = readiness, revents & Int16(POLLOUT) != 0 {
            return .ready(revents | Int16(POLLIN))
        }
        return readiness
    }

    /// Bytes of TLS output encrypted but not yet taken by the socket: wait for POLLOUT and
    /// `send` (even nothing) to push them.
    var hasHeldOutput: Bool {
        guard let session else { return false }
        return tw_tls_backlog(session) != 0
    }

    /// Receives what is there without blocking: the count, 0 at EOF (or close_notify),
    /// nil when nothing is ready.
    func receive(_ into: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int? {
        guard let session else { return try Posix.receive(fd, into) }
        guard let base = into.baseAddress, into.count > 0 else { return nil }
        readWantsWrite = false
        let n = tw_tls_read(session, base, into.count)
        if n >= 0 { return n }
        switch n {
        case -1 where errno == EAGAIN: return nil
        case -1:
            failed = true
            throw .io("recv", errno: errno)
        case Int(TW_TLS_WANTS_WRITE):
            readWantsWrite = true
            return nil
        default:
            failed = true
            throw .tls("TLS failure while reading: \(String(cString: tw_tls_last_error()))")
        }
    }

    /// Receives into `buffer[offset...]`: see `receive(_:)`.
    func receive(into buffer: inout [UInt8], at offset: Int = 0) throws(TransportError) -> Int? {
        let result = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(TransportError) in try receive(UnsafeMutableRawBufferPointer(rebasing: raw[offset...])) }
        }
        return try result.get()
    }

    /// Sends what it can without blocking: the count of `bytes` taken (0 when none). With
    /// TLS, bytes count as taken once encrypted; a record the socket could not take yet is
    /// held (`hasHeldOutput`) and goes out first on the next call.
    func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int {
        guard let session else { return try Posix.send(fd, bytes) }
        var piece = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        let n = tw_tls_writev(session, &piece, bytes.count > 0 ? 1 : 0)
        if n >= 0 { return n }
        switch n {
        case -1 where errno == EAGAIN: return 0
        case -1:
            failed = true
            throw .io("send", errno: errno)
        default:
            failed = true
            throw .tls("TLS failure while writing: \(String(cString: tw_tls_last_error()))")
        }
    }

    /// Sends `bytes[offset...]`: see `send(_:)`.
    func send(_ bytes: [UInt8], from offset: Int) throws(TransportError) -> Int {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(TransportError) in try send(UnsafeRawBufferPointer(rebasing: raw[offset...])) }
        }
        return try result.get()
    }

    /// Writes all of `bytes` (and any held TLS record) before `deadline`.
    func sendAll(_ bytes: [UInt8], deadline: UInt64, what: String) throws(TransportError) {
        var offset = 0
        while offset < bytes.count || hasHeldOutput {
            let n = try send(bytes, from: offset)
            offset += n
            if (offset < bytes.count && n == 0) || hasHeldOutput {
                if wait(Int16(POLLOUT), wake: nil, deadline: deadline) == .timedOut { throw .timedOut(what) }
            }
        }
    }

    /// Ends our half: a TLS close_notify, then TCP FIN (RFC 6455 §7.1.1's clean close).
    func shutdownWrite() {
        if let session, !failed { tw_tls_close_notify(session) }
        shutdown(fd, Int32(SHUT_WR))
    }
}
