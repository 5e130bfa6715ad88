import CLibEV
import Glibc
import Reactor
import WireProtocol

/// What a client connection is for.
enum ClientRole {
    /// A `/ws` (or `/echo`) WebSocket client.
    case webSocket(path: String)
    /// A keep-alive HTTP connection pipelining `POST /api/publish`.
    case http
}

enum ClientState { case connecting, upgrading, open, closed }

/// One load-generator connection.
final class ClientConnection {
    let id: Int
    let role: ClientRole
    var fd: Int32 = -1
    let io = UnsafeMutablePointer<ev_io>.allocate(capacity: 1)
    var state: ClientState = .connecting
    var input = ByteQueue()
    var pendingOutput: [UInt8] = []
    var connectStartedAt: UInt64 = 0
    /// Mode-specific state (per-subscriber counters, echo timestamps...).
    var tag = 0

    init(id: Int, role: ClientRole) {
        self.id = id
        self.role = role
    }

    deinit { io.deallocate() }
}

/// Callbacks a benchmark mode implements.
protocol ClientHandler: AnyObject {
    func opened(_ c: ClientConnection)
    /// A complete WebSocket frame (server frames are unmasked), payload in place.
    func frame(_ c: ClientConnection, opcode: UInt8, payload: UnsafeRawBufferPointer, now: UInt64)
    /// A complete HTTP response on an `.http` connection.
    func response(_ c: ClientConnection, status: Int)
    func closed(_ c: ClientConnection, error: String?)
}

/// The load generator's reactor: one libev loop on one thread driving thousands of client
/// sockets, built from the same pieces as the server (the Reactor module, the frame codec).
final class ClientEngine {
    let loop: EventLoop
    let host: String
    let port: Int
    unowned var handler: ClientHandler!
    private(set) var connections: [ClientConnection] = []
    let readBuffer: UnsafeMutableRawPointer
    let readBufferSize = 1 << 18
    let pool = BufferPool()
    var rng = SystemRandomNumberGenerator()
    /// Spread client source addresses over 127.0.0.0/8 past this many per address, so
    /// more than one address's ephemeral ports (~28,000) can connect to one port.
    let connectionsPerSourceAddress = 10_000
    /// Poll without sleeping (EVRUN_NOWAIT in a loop): the generator never sleeps in
    /// epoll_wait, so the server's sends never pay to wake it. Uses a whole CPU.
    var busyPoll = false
    private var running = false
    private(set) var failures = 0
    private(set) var lastError = ""

    init(host: String, port: Int) throws {
        loop = try EventLoop()
        self.host = host
        self.port = port
        readBuffer = .allocate(byteCount: readBufferSize, alignment: 64)
        loop.setOwner(self)
        Socket.raiseFileLimit()
        signal(SIGPIPE, SIG_IGN)
    }

    deinit { readBuffer.deallocate() }

    /// Runs the loop until `stop()`.
    func run() {
        if !busyPoll {
            loop.run()
            return
        }
        running = true
        while running { ev_run(loop.raw, 1) }   // EVRUN_NOWAIT
    }

    func stop() {
        running = false
        loop.stop()
    }

    // MARK: - Connecting

    @discardableResult
    /// `port`: another server than the engine's (a second cluster node), on the same host.
    func connect(_ role: ClientRole, port: Int? = nil) -> ClientConnection {
        let c = ClientConnection(id: connections.count, role: role)
        connections.append(c)
        c.connectStartedAt = monotonicNanoseconds()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { fail(c, "socket: errno \(errno)"); return c }
        c.fd = fd
        Socket.setNoDelay(fd)
        let sourceIndex = c.id / connectionsPerSourceAddress
        if sourceIndex > 0 && host.hasPrefix("127.") {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = (UInt32(127) << 24 | UInt32(1 + sourceIndex)).bigEndian
            _ = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port ?? self.port).bigEndian)
        inet_pton(AF_INET, host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 && errno != EINPROGRESS {
            fail(c, "connect: errno \(errno)")
            return c
        }
        c.io.pointee.data = Unmanaged.passUnretained(c).toOpaque()
        tw_ev_io_init(c.io, { loop, w, revents in
            let engine = EventLoop.owner(of: loop, as: ClientEngine.self)
            let c = Unmanaged<ClientConnection>.fromOpaque(w!.pointee.data!).takeUnretainedValue()
            engine.event(c, revents)
        }, fd, TW_EV_WRITE)
        ev_io_start(loop.raw, c.io)
        return c
    }

    private func event(_ c: ClientConnection, _ revents: Int32) {
        switch c.state {
        case .connecting:
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { fail(c, "connect: errno \(err)"); return }
            setEvents(c, TW_EV_READ)
            switch c.role {
            case .webSocket(let path):
                c.state = .upgrading
                send(c, Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8))
            case .http:
                c.state = .open
                handler.opened(c)
            }
        case .upgrading, .open:
            if revents & TW_EV_WRITE != 0 && !c.pendingOutput.isEmpty { flushPending(c) }
            if revents & TW_EV_READ != 0 { readable(c) }
        case .closed:
            break
        }
    }

    private func readable(_ c: ClientConnection) {
        let leftover = c.input.count
        if leftover > 0 {
            readBuffer.copyMemory(from: c.input.readable.baseAddress!, byteCount: leftover)
            c.input.release(pool: pool)
        }
        let n = recv(c.fd, readBuffer + leftover, readBufferSize - leftover, 0)
        if n <= 0 {
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                if leftover > 0 { c.input.append(UnsafeRawBufferPointer(start: readBuffer, count: leftover), pool: pool) }
                return
            }
            close(c, error: n == 0 ? "EOF" : "read: errno \(errno)")
            return
        }
        let now = monotonicNanoseconds()
        let total = leftover + n
        var position = 0
        if c.state == .upgrading {
            guard let end = headEnd(readBuffer, total) else {
                c.input.append(UnsafeRawBufferPointer(start: readBuffer, count: total), pool: pool)
                return
            }
            let status = statusCode(readBuffer, total)
            if status != 101 {
                fail(c, "upgrade refused with HTTP \(status)")
                return
            }
            c.state = .open
            position = end
            handler.opened(c)
            if c.state != .open { return }
        }
        switch c.role {
        case .webSocket: position = frames(c, position, total, now)
        case .http: position = responses(c, position, total)
        }
        if c.state == .open && position < total {
            c.input.append(UnsafeRawBufferPointer(start: readBuffer + position, count: total - position), pool: pool)
        }
    }

    /// Parses whole frames from readBuffer[position..<end]; returns where the partial rest starts.
    @inline(__always)
    private func frames(_ c: ClientConnection, _ start: Int, _ end: Int, _ now: UInt64) -> Int {
        var p = start
        let b = readBuffer
        while end - p >= 2 {
            let b0 = b.load(fromByteOffset: p, as: UInt8.self)
            let b1 = b.load(fromByteOffset: p + 1, as: UInt8.self)
            var length = Int(b1 & 0x7F)
            var header = 2
            if length == 126 {
                if end - p < 4 { break }
                length = Int(UInt16(bigEndian: b.loadUnaligned(fromByteOffset: p + 2, as: UInt16.self)))
                header = 4
            } else if length == 127 {
                if end - p < 10 { break }
                length = Int(UInt64(bigEndian: b.loadUnaligned(fromByteOffset: p + 2, as: UInt64.self)))
                header = 10
            }
            if end - p < header + length { break }
            handler.frame(c, opcode: b0 & 0x0F, payload: UnsafeRawBufferPointer(start: b + p + header, count: length), now: now)
            if c.state != .open { return end }
            p += header + length
        }
        return p
    }

    private func responses(_ c: ClientConnection, _ start: Int, _ end: Int) -> Int {
        var p = start
        while p < end {
            guard let headLength = headEnd(readBuffer + p, end - p) else { break }
            let status = statusCode(readBuffer + p, end - p)
            let bodyLength = contentLength(readBuffer + p, headLength)
            if end - p < headLength + bodyLength { break }
            handler.response(c, status: status)
            p += headLength + bodyLength
        }
        return p
    }

    // MARK: - Writing

    func send(_ c: ClientConnection, _ bytes: [UInt8]) {
        guard c.state != .closed else { return }
        if !c.pendingOutput.isEmpty {
            c.pendingOutput += bytes
            return
        }
        let n = bytes.withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n == bytes.count { return }
        if n < 0 && errno != EAGAIN { close(c, error: "send: errno \(errno)"); return }
        c.pendingOutput = Array(bytes[max(n, 0)...])
        setEvents(c, TW_EV_READ | TW_EV_WRITE)
    }

    /// A masked client frame (RFC 6455 §5.3).
    func sendFrame(_ c: ClientConnection, opcode: Opcode, _ payload: [UInt8]) {
        send(c, FrameEncoder.frame(opcode: opcode, payload: payload, mask: UInt32.random(in: 1...UInt32.max, using: &rng)))
    }

    private func flushPending(_ c: ClientConnection) {
        let n = c.pendingOutput.withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n < 0 {
            if errno != EAGAIN { close(c, error: "send: errno \(errno)") }
            return
        }
        c.pendingOutput.removeFirst(n)
        if c.pendingOutput.isEmpty { setEvents(c, TW_EV_READ) }
    }

    private func setEvents(_ c: ClientConnection, _ events: Int32) {
        ev_io_stop(loop.raw, c.io)
        tw_ev_io_set_events(c.io, events)
        ev_io_start(loop.raw, c.io)
    }

    func close(_ c: ClientConnection, error: String? = nil) {
        guard c.state != .closed else { return }
        ev_io_stop(loop.raw, c.io)
        Glibc.close(c.fd)
        c.state = .closed
        c.input.release(pool: pool)
        handler.closed(c, error: error)
    }

    /// Drops a connection from the table once it is closed (churn), so the table stays small.
    func forget(_ c: ClientConnection) {
        if c.id < connections.count, connections[c.id] === c {
            connections[c.id] = ClientConnection(id: c.id, role: .http)
            connections[c.id].state = .closed
        }
    }

    private func fail(_ c: ClientConnection, _ message: String) {
        failures += 1
        lastError = message
        if c.fd >= 0 && c.state != .closed {
            ev_io_stop(loop.raw, c.io)
            Glibc.close(c.fd)
        }
        c.state = .closed
        handler.closed(c, error: message)
    }

    // MARK: - Small HTTP parsing

    private func headEnd(_ b: UnsafeMutableRawPointer, _ count: Int) -> Int? {
        guard count >= 4 else { return nil }
        var i = 0
        while i + 3 < count {
            if b.load(fromByteOffset: i, as: UInt32.self) == 0x0A0D_0A0D { return i + 4 }
            i += 1
        }
        return nil
    }

    private func statusCode(_ b: UnsafeMutableRawPointer, _ count: Int) -> Int {
        guard count >= 12 else { return 0 }
        var code = 0
        for k in 9..<12 { code = code * 10 + Int(b.load(fromByteOffset: k, as: UInt8.self) &- 48) }
        return code
    }

    private func contentLength(_ b: UnsafeMutableRawPointer, _ headLength: Int) -> Int {
        let head = String(decoding: UnsafeRawBufferPointer(start: b, count: headLength), as: UTF8.self).lowercased()
        guard let r = head.range(of: "content-length:") else { return 0 }
        let digits = head[r.upperBound...].drop { $0 == " " }.prefix { $0.isNumber }
        return Int(digits) ?? 0
    }
}

extension String {
    func range(of needle: String) -> Range<String.Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
