import CLibEV
import CTLSShims
import Glibc
import Reactor
import WireProtocol

/// What a connection tells its owner, on the edge loop's thread.
protocol UpstreamConnectionOwner: AnyObject {
    func connectionOpened(_ connection: UpstreamConnection)
    /// One whole text message; the bytes are valid only during the call.
    func connection(_ connection: UpstreamConnection, received message: UnsafeRawBufferPointer)
    /// The messages of one read pass have all been delivered: the owner may publish them.
    func connectionReadPassEnded(_ connection: UpstreamConnection)
    /// The connection is gone (refused, failed, closed by either side); called once.
    func connectionClosed(_ connection: UpstreamConnection, reason: String)
}

/// Time limits of one upstream connection, each with its reason.
public struct UpstreamConnectionLimits: Sendable {
    /// TCP connect plus the upgrade: a venue answers in well under a second from anywhere
    /// it is usable from; 10 s means it is not there.
    public var connectTimeout = 10.0
    /// Nothing at all received (no event, no ping) for this long: the connection is taken
    /// for dead (a half-open TCP connection never reports an error) and replaced.
    public var silenceTimeout = 60.0
    /// After our Close: how long the upstream gets to answer before the socket is dropped.
    public var closeTimeout = 2.0
    /// Largest upstream message: Binance's are a few KiB; 4 MiB leaves room for array
    /// streams while bounding what a broken peer can make us buffer.
    public var maxMessageSize = 4 << 20

    public init() {}
}

/// One WebSocket client connection to an upstream, on an `EdgeLoop` (never a reactor):
/// non-blocking connect, the upgrade, then frames through the project's own `FrameDecoder`
/// (client role: server frames are unmasked) and masked frames out (pongs, Close).
/// Pings are answered with pongs carrying the same payload (RFC 6455 §5.5.2).
///
/// Loop thread only. The owner holds the connection; its watchers point at it unretained
/// and are stopped before `connectionClosed`, so nothing fires after that.
final class UpstreamConnection {
    enum State: Equatable { case resolving, connecting, securing, handshaking, open, closing, closed }

    let url: UpstreamURL
    let edge: EdgeLoop
    let limits: UpstreamConnectionLimits
    /// Which connection this is, for logs (1, 2, ... per feed).
    let number: Int
    weak var owner: UpstreamConnectionOwner?
    private(set) var state = State.resolving
    /// Whether a data message arrived (a rotation switches on the first one).
    private(set) var delivered = false
    private(set) var pongsSent = 0

    private var fd: Int32 = -1
    private let io = UnsafeMutablePointer<ev_io>.allocate(capacity: 1)
    private let timer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var ioActive = false
    /// Read buffer: the decoder hands data out in place, so between reads it keeps only a
    /// partial frame header or control frame (or, before the upgrade, the response head).
    private let buffer: UnsafeMutableRawBufferPointer
    private static let bufferSize = 256 << 10
    private var filled = 0
    private var position = 0
    private var decoder: FrameDecoder
    /// A fragmented message, gathered until its last piece.
    private var message: [UInt8] = []
    private var output: [UInt8] = []
    /// Unsent output past which the upstream is taken for stuck (it does not read our pongs).
    private static let maxOutput = 1 << 20
    private let handshake: UpstreamHandshake
    private var lastReceived = 0.0
    /// wss://: the client context (peer verification on) and this connection's session.
    private let tlsContext: OpaquePointer?
    private var session: OpaquePointer?

    init(url: UpstreamURL, edge: EdgeLoop, limits: UpstreamConnectionLimits, number: Int, tlsContext: OpaquePointer? = nil) {
        self.url = url
        self.tlsContext = url.scheme == .wss ? tlsContext : nil
        self.edge = edge
        self.limits = limits
        self.number = number
        buffer = .allocate(byteCount: Self.bufferSize, alignment: 16)
        decoder = FrameDecoder(role: .client, maxMessageSize: UInt64(limits.maxMessageSize))
        var random = SystemRandomNumberGenerator()
        var key = [UInt8](repeating: 0, count: 16)
        for i in key.indices { key[i] = UInt8.random(in: .min ... .max, using: &random) }
        handshake = UpstreamHandshake(key: Base64.encode(key))
        let me = Unmanaged.passUnretained(self).toOpaque()
        tw_ev_io_init(io, { _, w, revents in
            Unmanaged<UpstreamConnection>.fromOpaque(w!.pointee.data).takeUnretainedValue().onIO(revents)
        }, -1, TW_EV_READ)
        tw_ev_timer_init(timer, { _, w, _ in
            Unmanaged<UpstreamConnection>.fromOpaque(w!.pointee.data).takeUnretainedValue().onTimer()
        }, 0, 0)
        io.pointee.data = me
        timer.pointee.data = me
    }

    deinit {
        // Never started or already finished: both watchers are stopped.
        io.deallocate()
        timer.deallocate()
        buffer.deallocate()
        if let session { tw_tls_free(session) }
        if fd >= 0 { Glibc.close(fd) }
    }

    // MARK: - Connect

    /// Resolves the host (off the loop when it is a name), connects, upgrades.
    func start() {
        precondition(edge.isOnLoopThread)
        arm(after: limits.connectTimeout, repeat: 0)
        if let address = UpstreamAddress.numeric(host: url.host, port: url.port) {
            connect(to: address)
            return
        }
        // getaddrinfo blocks: run it on the cooperative pool and come back to the loop.
        let host = url.host, port = url.port, edge = self.edge
        let box = UpstreamBox(self)
        Task.detached {
            let result = UpstreamAddress.resolve(host: host, port: port)
            edge.onLoop {
                let me = box.value
                guard me.state == .resolving else { return }
                switch result {
                case .success(let address): me.connect(to: address)
                case .failure(let why): me.finish("cannot resolve \(host): \(why)")
                }
            }
        }
    }

    private func connect(to address: UpstreamAddress) {
        fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return finish("socket: \(String(cString: strerror(errno)))") }
        Socket.setNoDelay(fd)
        let rc = address.storage.withUnsafeBytes { raw in
            Glibc.connect(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), address.length)
        }
        if rc != 0 && errno != EINPROGRESS {
            return finish("connect to \(url.hostHeader): \(String(cString: strerror(errno)))")
        }
        state = .connecting
        watch(write: true)
    }

    // MARK: - Events

    private func onIO(_ revents: Int32) {
        if state == .connecting {
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { return finish("connect to \(url.hostHeader): \(String(cString: strerror(error)))") }
            if url.scheme == .wss {
                guard let tlsContext, let s = tw_tls_connect(tlsContext, fd, url.host) else {
                    return finish("no TLS session for \(url.hostHeader)")
                }
                session = s
                state = .securing
            } else {
                state = .handshaking
                send(handshake.request(for: url))
                if state == .closed { return }
            }
        }
        if state == .securing {
            // TLS first (SNI and the certificate checked against the host), then the upgrade.
            switch tw_tls_handshake(session) {
            case 1:
                state = .handshaking
                send(handshake.request(for: url))
                if state == .closed { return }
            case -1: return watch(write: false)
            case TW_TLS_WANTS_WRITE: return watch(write: true)
            default: return finish("TLS with \(url.hostHeader) failed: \(String(cString: tw_tls_last_error()))")
            }
        }
        if revents & TW_EV_WRITE != 0 && (!output.isEmpty || session.map({ tw_tls_backlog($0) != 0 }) == true) {
            flush()
            if state == .closed { return }
        }
        if revents & TW_EV_READ != 0 { onReadable() }
    }

    private func onReadable() {
        // At most 1 MiB per wake-up (four full buffers): a feed arriving faster than it is
        // mapped must not starve the rest of the edge loop (metrics, publish requests).
        defer { owner?.connectionReadPassEnded(self) }
        for _ in 0..<4 {
            let space = buffer.count - filled
            let n = session.map { tw_tls_read($0, buffer.baseAddress! + filled, space) } ?? recv(fd, buffer.baseAddress! + filled, space, 0)
            if n > 0 {
                filled += n
                lastReceived = ev_now(edge.rawLoop)
                process()
                if state == .closed { return }
                // Drained the socket (and TLS holds no decrypted bytes back).
                if n < space && (session.map { tw_tls_pending($0) } ?? 0) == 0 { return }
                continue
            }
            if n == 0 { return finish(state == .closing ? "closed" : "the upstream closed the connection") }
            if n == TW_TLS_WANTS_WRITE { return watch(write: true) }
            if n == TW_TLS_FAILED { return finish("TLS: \(String(cString: tw_tls_last_error()))") }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return }
            return finish("read: \(String(cString: strerror(errno)))")
        }
    }

    private func process() {
        if state == .handshaking {
            let answer = handshake.check(UnsafeRawBufferPointer(rebasing: buffer[0..<filled]),
                                         expectedAccept: Handshake.acceptValue(forKey: handshake.key))
            switch answer {
            case .incomplete:
                if filled == buffer.count { finish("response head too large") }
                return
            case .refused(let why):
                return finish(why)
            case .accepted(let headLength):
                position = headLength
                state = .open
                arm(after: limits.silenceTimeout / 4, repeat: limits.silenceTimeout / 4)
                owner?.connectionOpened(self)
                if state != .open { return }
            }
        }
        frames()
    }

    private func frames() {
        while state == .open || state == .closing {
            let window = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<filled])
            switch decoder.next(window, &position) {
            case .needMore:
                // Keep the unread tail (a partial header or control frame) at the front.
                let rest = filled - position
                if rest > 0 && position > 0 { buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + position, byteCount: rest) }
                filled = rest
                position = 0
                return
            case let .data(opcode, start, count, first, last):
                // Also while closing: a rotated-out connection's last events may be the
                // only copy (its successor started later); the dedupe drops the rest.
                guard opcode == .text else { continue }
                if first && last {
                    deliver(UnsafeRawBufferPointer(rebasing: buffer[start..<(start + count)]))
                } else {
                    if first { message.removeAll(keepingCapacity: true) }
                    message.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[start..<(start + count)]))
                    if last { message.withUnsafeBytes { deliver($0) } }
                }
            case let .control(opcode, start, count):
                let payload = UnsafeRawBufferPointer(rebasing: buffer[start..<(start + count)])
                switch opcode {
                case .ping:
                    if state == .open {
                        sendFrame(.pong, payload)
                        pongsSent += 1
                    }
                case .close:
                    if state == .open {
                        // Echo the code (§5.5.1), then we are done: the server closes TCP first.
                        sendFrame(.close, UnsafeRawBufferPointer(rebasing: payload.prefix(2)))
                    }
                    let code = count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : 1005
                    return finish(state == .closing ? "closed" : "the upstream closed with \(code)")
                default:
                    break
                }
            case .failure(let error):
                closeFrame(code: error.closeCode, reason: error.reason)
                return finish("protocol error from the upstream: \(error.reason)")
            }
        }
    }

    private func deliver(_ bytes: UnsafeRawBufferPointer) {
        delivered = true
        owner?.connection(self, received: bytes)
    }

    private func onTimer() {
        switch state {
        case .resolving, .connecting, .securing, .handshaking:
            finish("no upgrade within \(limits.connectTimeout) s")
        case .open:
            if ev_now(edge.rawLoop) - lastReceived >= limits.silenceTimeout {
                closeFrame(code: .goingAway, reason: "silent")
                finish("nothing received for \(limits.silenceTimeout) s")
            }
        case .closing:
            finish("closed (no Close answer within \(limits.closeTimeout) s)")
        case .closed:
            break
        }
    }

    /// Reads and delivers what the socket holds now (a rotation drains the old connection
    /// before switching, so events it already received are not lost to the switch).
    func drain() {
        guard state == .open else { return }
        onReadable()
    }

    // MARK: - Closing

    /// Sends a Close and waits (bounded) for the upstream's answer; a connection not yet
    /// upgraded is dropped at once. `connectionClosed` follows either way.
    func close(code: CloseCode = .normalClosure, reason: String = "") {
        switch state {
        case .open:
            closeFrame(code: code, reason: reason)
            if state == .closed { return }
            state = .closing
            arm(after: limits.closeTimeout, repeat: 0)
        case .resolving, .connecting, .securing, .handshaking:
            finish("closed before the upgrade")
        case .closing, .closed:
            break
        }
    }

    private func closeFrame(code: CloseCode, reason: String) {
        guard state == .open else { return }
        let payload = FrameEncoder.closePayload(code: code, reason: reason)
        payload.withUnsafeBytes { sendFrame(.close, $0) }
    }

    private func finish(_ reason: String) {
        guard state != .closed else { return }
        state = .closed
        if ioActive { ev_io_stop(edge.rawLoop, io); ioActive = false }
        ev_timer_stop(edge.rawLoop, timer)
        if let session {
            tw_tls_close_notify(session)
            tw_tls_free(session)
            self.session = nil
        }
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        owner?.connectionClosed(self, reason: reason)
    }

    // MARK: - Output

    private func sendFrame(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
        var random = SystemRandomNumberGenerator()
        send(FrameEncoder.frame(opcode: opcode, payload: payload, mask: UInt32.random(in: .min ... .max, using: &random)))
    }

    private func send(_ bytes: [UInt8]) {
        output.append(contentsOf: bytes)
        if output.count > Self.maxOutput { return finish("the upstream does not read what we send") }
        flush()
    }

    private func flush() {
        if let session {
            // A record the socket did not take is held by the session and goes first.
            while !output.isEmpty || tw_tls_backlog(session) != 0 {
                let n = output.withUnsafeBytes { raw in
                    var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
                    return tw_tls_writev(session, &iov, raw.count > 0 ? 1 : 0)
                }
                if n > 0 { output.removeFirst(n); continue }
                if n == 0 && output.isEmpty { continue }
                if n < 0 && errno == EINTR && n == -1 { continue }
                if n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
                return finish("TLS write: \(String(cString: tw_tls_last_error()))")
            }
            return watch(write: !output.isEmpty || tw_tls_backlog(session) != 0)
        }
        while !output.isEmpty {
            let n = output.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { output.removeFirst(n); continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            return finish("write: \(String(cString: strerror(errno)))")
        }
        watch(write: !output.isEmpty)
    }

    private func watch(write: Bool) {
        let events = state == .connecting ? TW_EV_WRITE : (TW_EV_READ | (write ? TW_EV_WRITE : 0))
        if ioActive && tw_ev_io_events(io) == events { return }
        if ioActive { ev_io_stop(edge.rawLoop, io) }
        io.pointee.fd = fd
        tw_ev_io_set_events(io, events)
        ev_io_start(edge.rawLoop, io)
        ioActive = true
    }

    private func arm(after: Double, repeat interval: Double) {
        ev_timer_stop(edge.rawLoop, timer)
        tw_ev_timer_set(timer, after, interval)
        ev_timer_start(edge.rawLoop, timer)
    }
}

/// A resolved socket address.
struct UpstreamAddress: Sendable {
    var family: Int32
    var storage: [UInt8]
    var length: socklen_t

    /// An IP literal, resolved without a lookup (never blocks).
    static func numeric(host: String, port: Int) -> UpstreamAddress? {
        try? lookup(host: host, port: port, flags: AI_NUMERICHOST | AI_NUMERICSERV).get()
    }

    static func resolve(host: String, port: Int) -> Result<UpstreamAddress, UpstreamResolveError> {
        lookup(host: host, port: port, flags: AI_NUMERICSERV)
    }

    private static func lookup(host: String, port: Int, flags: Int32) -> Result<UpstreamAddress, UpstreamResolveError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = flags
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else { return .failure(UpstreamResolveError(message: String(cString: gai_strerror(rc)))) }
        defer { freeaddrinfo(list) }
        let info = first.pointee
        let bytes = Array(UnsafeRawBufferPointer(start: info.ai_addr, count: Int(info.ai_addrlen)))
        return .success(UpstreamAddress(family: info.ai_family, storage: bytes, length: info.ai_addrlen))
    }
}

struct UpstreamResolveError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// Carries a loop-owned reference through a closure that runs back on that loop.
struct UpstreamBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
