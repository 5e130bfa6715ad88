#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// What can go wrong below the message layer, in words fit for a diagnostic.
package enum TransportError: Error, Equatable, Sendable, CustomStringConvertible {
    case resolve(host: String, message: String)
    case connect(address: String, errno: Int32)
    case timedOut(String)
    /// `disconnect()` (or the test hook) ended the attempt.
    case cancelled
    case io(String, errno: Int32)
    case handshake(String)
    /// TLS failed: the trust settings, the certificate check, or the session itself.
    case tls(String)
    /// The server closed TCP without a Close frame (RFC 6455 §7.1.5: code 1006).
    case closedAbnormally
    /// The server broke RFC 6455; the client sent Close with the matching code.
    case protocolViolation(String, closeCode: UInt16)
    case http(String)

    package var description: String {
        switch self {
        case let .resolve(host, message): return "cannot resolve \(host): \(message)"
        case let .connect(address, errno): return "cannot connect to \(address): \(Posix.describe(errno))"
        case .timedOut(let what): return "\(what) timed out"
        case .cancelled: return "the connection was dropped by the client"
        case let .io(what, errno): return "\(what) failed: \(Posix.describe(errno))"
        case .handshake(let why): return "WebSocket handshake failed: \(why)"
        case .tls(let why): return why
        case .closedAbnormally: return "connection closed without a close frame (1006)"
        case let .protocolViolation(why, code): return "protocol error from the server (\(code)): \(why)"
        case .http(let why): return why
        }
    }
}

enum Posix {
    static func describe(_ code: Int32) -> String { String(cString: strerror(code)) + " (errno \(code))" }

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func nanoseconds(_ d: Duration) -> UInt64 {
        let (s, atto) = d.components
        if s < 0 { return 0 }
        return UInt64(s) * 1_000_000_000 + UInt64(atto / 1_000_000_000)
    }

    #if canImport(Glibc)
    static let streamType = Int32(SOCK_STREAM.rawValue)
    static let sendFlags = Int32(MSG_NOSIGNAL)
    #else
    static let streamType = SOCK_STREAM
    static let sendFlags: Int32 = 0
    #endif

    /// Blocks SIGPIPE on the calling thread: OpenSSL writes with write(2), and a peer that
    /// went away must give EPIPE there, not kill the process. A signal raised while blocked
    /// stays pending on this thread only, and goes with it.
    static func ignoreBrokenPipeOnThisThread() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    static func closeDescriptor(_ fd: Int32) {
        _ = close(fd)
    }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// What `wait` saw.
    enum Readiness: Equatable {
        case ready(Int16)
        /// The wake pipe fired: a command is waiting.
        case woken
        case timedOut
    }

    /// Waits for `events` on `fd` (or the wake pipe) until `deadline` (monotonic ns; nil: no limit).
    static func wait(_ fd: Int32, _ events: Int16, wake: WakePipe?, deadline: UInt64?) -> Readiness {
        while true {
            var timeout: Int32 = -1
            if let deadline {
                let now = monotonicNanoseconds()
                if now >= deadline { return .timedOut }
                timeout = Int32(min((deadline - now + 999_999) / 1_000_000, 60_000))
            }
            var fds = [pollfd(fd: fd, events: events, revents: 0)]
            if let wake { fds.append(pollfd(fd: wake.readFd, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if n < 0 {
                if errno == EINTR { continue }
                return .ready(Int16(POLLERR))
            }
            if n == 0 { continue }  // re-check the deadline (poll's timeout is capped)
            if fds.count > 1 && fds[1].revents != 0 {
                wake?.drain()
                return .woken
            }
            return .ready(fds[0].revents)
        }
    }

    /// Resolves `host` and opens a non-blocking TCP connection, trying each address until
    /// `deadline`. `cancelled` is asked whenever the wake pipe fires.
    static func openConnection(host: String, port: Int, deadline: UInt64, wake: WakePipe, cancelled: () -> Bool) throws(TransportError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = streamType
        var list: UnsafeMutablePointer<addrinfo>?
        // getaddrinfo blocks; this runs on the connection's own thread, never the pool.
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let list else {
            throw .resolve(host: host, message: String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(list) }
        var lastError = TransportError.resolve(host: host, message: "no addresses")
        var info: UnsafeMutablePointer<addrinfo>? = list
        while let ai = info {
            info = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, streamType, 0)
            if fd < 0 {
                lastError = .io("socket", errno: errno)
                continue
            }
            setNonBlocking(fd)
            #if canImport(Darwin)
            setOption(fd, SOL_SOCKET, SO_NOSIGPIPE, 1)
            #endif
            // Small messages both ways, latency matters more than segment count.
            setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let address = "\(host):\(port)"
            if connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 { return fd }
            let e = errno
            guard e == EINPROGRESS else {
                close(fd)
                lastError = .connect(address: address, errno: e)
                continue
            }
            while true {
                switch wait(fd, Int16(POLLOUT), wake: wake, deadline: deadline) {
                case .woken:
                    if cancelled() {
                        close(fd)
                        throw .cancelled
                    }
                    continue
                case .timedOut:
                    close(fd)
                    throw .timedOut("connecting to \(address)")
                case .ready:
                    var soError: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
                    if soError == 0 { return fd }
                    close(fd)
                    lastError = .connect(address: address, errno: soError)
                }
                break
            }
        }
        throw lastError
    }

    /// Sends what it can without blocking; returns the count, 0 on EAGAIN, or throws.
    static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        while true {
            #if canImport(Glibc)
            let n = Glibc.send(fd, base, bytes.count, sendFlags)
            #else
            let n = Darwin.send(fd, base, bytes.count, sendFlags)
            #endif
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return 0
            case let e: throw .io("send", errno: e)
            }
        }
    }

    /// Receives what is there without blocking: the count, 0 at EOF, nil on EAGAIN.
    static func receive(_ fd: Int32, _ into: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int? {
        while true {
            let n = recv(fd, into.baseAddress, into.count, 0)
            if n >= 0 { return n }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            case let e: throw .io("recv", errno: e)
            }
        }
    }

    /// Receives into `buffer[offset...]` without blocking: the count, 0 at EOF, nil on EAGAIN.
    static func receive(_ fd: Int32, into buffer: inout [UInt8], at offset: Int = 0) throws(TransportError) -> Int? {
        let result = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(TransportError) in try receive(fd, UnsafeMutableRawBufferPointer(rebasing: raw[offset...])) }
        }
        return try result.get()
    }

    /// Sends `bytes[offset...]` without blocking: the count sent (0 on EAGAIN).
    static func send(_ fd: Int32, _ bytes: [UInt8], from offset: Int) throws(TransportError) -> Int {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(TransportError) in try send(fd, UnsafeRawBufferPointer(rebasing: raw[offset...])) }
        }
        return try result.get()
    }

    /// Writes all of `bytes` before `deadline`.
    static func sendAll(_ fd: Int32, _ bytes: [UInt8], deadline: UInt64, wake: WakePipe?, what: String) throws(TransportError) {
        var offset = 0
        while offset < bytes.count {
            let n = try send(fd, bytes, from: offset)
            offset += n
            if offset < bytes.count && n == 0 {
                if wait(fd, Int16(POLLOUT), wake: wake, deadline: deadline) == .timedOut { throw .timedOut(what) }
            }
        }
    }
}

/// A self-pipe that wakes a thread blocked in `poll` (commands from other threads).
final class WakePipe: Sendable {
    let readFd: Int32
    let writeFd: Int32

    init() throws(TransportError) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw .io("pipe", errno: errno) }
        readFd = fds[0]
        writeFd = fds[1]
        Posix.setNonBlocking(readFd)
        Posix.setNonBlocking(writeFd)
    }

    deinit {
        close(readFd)
        close(writeFd)
    }

    func wake() {
        var byte: UInt8 = 1
        _ = write(writeFd, &byte, 1)  // a full pipe already means "wake up"
    }

    func drain() {
        var scratch = [UInt8](repeating: 0, count: 64)
        while read(readFd, &scratch, scratch.count) > 0 {}
    }
}

/// Plain threads for blocking work, so that it never occupies the cooperative pool.
enum DedicatedThread {
    fileprivate final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts a detached thread running `body`; false when the system has no thread to give.
    @discardableResult
    static func start(_ body: @escaping @Sendable () -> Void) -> Bool {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t?
        #endif
        #if canImport(Glibc)
        let rc = pthread_create(&thread, nil, { raw in runDedicatedThreadBody(raw!) }, box)
        #else
        let rc = pthread_create(&thread, nil, { raw in runDedicatedThreadBody(raw) }, box)
        #endif
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            return false
        }
        #if canImport(Glibc)
        pthread_detach(thread)
        #else
        if let thread { pthread_detach(thread) }
        #endif
        return true
    }

    /// Runs blocking `body` on its own thread and awaits its result; nil when no thread
    /// could be started.
    static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            if !start({ continuation.resume(returning: body()) }) {
                continuation.resume(returning: nil)
            }
        }
    }
}

/// The entry point of a `DedicatedThread` (a C function pointer cannot capture).
private func runDedicatedThreadBody(_ raw: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
    Unmanaged<DedicatedThread.Box>.fromOpaque(raw).takeRetainedValue().body()
    return nil
}
