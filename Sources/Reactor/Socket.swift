import CSystemShims
import Glibc

/// A failed system call: which one, and errno.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32

    public init(_ call: String, errno: Int32 = Glibc.errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// Thin wrappers over the socket calls a reactor makes. They return raw results (errno
/// included) instead of throwing, because EAGAIN is the normal case on the hot path.
public enum Socket {
    /// Opens a non-blocking listening socket on `host:port`. With `reusePort`, several
    /// reactors each bind their own socket to the same address and the kernel spreads
    /// incoming connections between them (SO_REUSEPORT).
    public static func listen(host: String, port: Int, reusePort: Bool, backlog: Int32) throws(SystemError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw SystemError("getaddrinfo(\(host)): \(String(cString: gai_strerror(rc)))", errno: EINVAL)
        }
        defer { freeaddrinfo(list) }
        let info = first.pointee
        let fd = socket(info.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if reusePort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if info.ai_family == AF_INET6 {
            // Serve IPv4 too when bound to "::".
            var zero: Int32 = 0
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
        }
        if bind(fd, info.ai_addr, info.ai_addrlen) != 0 {
            let error = SystemError("bind \(host):\(port)")
            close(fd)
            throw error
        }
        if Glibc.listen(fd, backlog) != 0 {
            let error = SystemError("listen")
            close(fd)
            throw error
        }
        return fd
    }

    /// Accepts one connection, non-blocking and close-on-exec; -1 with errno set when none.
    @inlinable
    public static func accept(_ listenFd: Int32, peer: inout PeerAddress) -> Int32 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { tw_accept_nonblocking(listenFd, $0, &length) }
        }
        if fd >= 0 { peer = withUnsafePointer(to: &storage) { PeerAddress(storage: $0) } }
        return fd
    }

    /// The port a socket is bound to (for port 0).
    public static func localPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return withUnsafePointer(to: &storage) { Int(PeerAddress(storage: $0).port) }
    }

    /// Sets TCP_NODELAY: frames are written whole and corked per loop pass already, so
    /// Nagle's delay would only add latency.
    @inlinable
    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Gathers `count` buffers into one sendmsg(2): like writev, without the VFS layer
    /// (file position locking) a socket does not need, and without SIGPIPE.
    @inlinable
    public static func send(_ fd: Int32, _ iovecs: UnsafeMutablePointer<iovec>, count: Int) -> Int {
        var message = msghdr()
        message.msg_iov = iovecs
        message.msg_iovlen = count
        return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
    }

    /// Sets SO_SNDBUF (the kernel doubles it for bookkeeping).
    public static func setSendBuffer(_ fd: Int32, bytes: Int) {
        var size = Int32(clamping: bytes)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Raises the soft open-file limit to the hard limit; returns the new soft limit.
    @discardableResult
    public static func raiseFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return UInt64(limit.rlim_cur)
    }
}

/// A peer's IPv4 or IPv6 address, kept in 20 bytes for logs and metrics labels.
public struct PeerAddress: Sendable, Equatable {
    public static func == (a: PeerAddress, b: PeerAddress) -> Bool {
        a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1 && a.port == b.port && a.isIPv6 == b.isIPv6
    }

    /// IPv4 addresses use the first 4 bytes; IPv6 all 16.
    public var bytes: (UInt64, UInt64) = (0, 0)
    public var port: UInt16 = 0
    public var isIPv6 = false

    public init() {}

    public init(storage: UnsafePointer<sockaddr_storage>) {
        let family = Int32(storage.pointee.ss_family)
        if family == AF_INET {
            storage.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                bytes.0 = UInt64(sin.pointee.sin_addr.s_addr)
                port = UInt16(bigEndian: sin.pointee.sin_port)
            }
        } else if family == AF_INET6 {
            storage.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var addr = sin6.pointee.sin6_addr
                withUnsafeBytes(of: &addr) { raw in
                    bytes.0 = raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
                    bytes.1 = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                }
                port = UInt16(bigEndian: sin6.pointee.sin6_port)
                isIPv6 = true
            }
            // Show IPv4-mapped addresses (::ffff:a.b.c.d) as IPv4.
            if bytes.0 == 0 && (bytes.1 & 0xFFFF_FFFF) == 0xFFFF_0000 {
                bytes.0 = bytes.1 >> 32
                bytes.1 = 0
                isIPv6 = false
            }
        }
    }

    /// True for 127.0.0.0/8 and ::1.
    public var isLoopback: Bool {
        if isIPv6 { return bytes.0 == 0 && bytes.1 == UInt64(1) << 56 }
        return bytes.0 & 0xFF == 127
    }

    /// "a.b.c.d" or the RFC 5952 form of an IPv6 address.
    public var host: String {
        var out = [CChar](repeating: 0, count: 64)
        var copy = bytes
        withUnsafeBytes(of: &copy) { raw in
            _ = inet_ntop(isIPv6 ? AF_INET6 : AF_INET, raw.baseAddress, &out, socklen_t(out.count))
        }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
