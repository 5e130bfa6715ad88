import CHiredis
import Foundation
import Glibc
import Synchronization
import Testing

/// A real `redis-server` on a free loopback port, in a temp dir, with no persistence,
/// killed when the test ends. Restarts keep the port (for reconnect tests).
/// Without redis-server installed the tests fail, loudly: `make deps` installs it.
final class RedisServer: @unchecked Sendable {
    let port: Int
    let directory: URL
    private var process: Child?
    private let extraArguments: [String]

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func binary() throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let path = env["REDIS_SERVER"] {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw Failure(description: "REDIS_SERVER=\(path) is not an executable redis-server")
            }
            return path
        }
        let dirs = (env["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        for d in dirs where FileManager.default.isExecutableFile(atPath: d + "/redis-server") {
            return d + "/redis-server"
        }
        throw Failure(description: "redis-server is not installed (run `make deps`, which installs the Debian redis-server): the cluster tests need a real Redis")
    }

    init(arguments: [String] = []) throws {
        port = try Self.freeLoopbackPort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tickwire-redis-\(getpid())-\(port)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        extraArguments = arguments
        try start()
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }

    func start(deadline: Double = 10) throws {
        precondition(process == nil)
        let p = try Child(Self.binary(), [
            "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", directory.path, "--daemonize", "no", "--logfile", directory.appendingPathComponent("redis.log").path,
        ] + extraArguments)
        process = p
        let until = Date().addingTimeInterval(deadline)
        while Date() < until {
            if ping() { return }
            if !p.isRunning { throw Failure(description: "redis-server exited at start: \(log())") }
            usleep(10_000)
        }
        throw Failure(description: "redis-server on port \(port) did not answer PING within \(deadline) s: \(log())")
    }

    /// SIGKILL and reap: the port is free again once this returns.
    func kill() {
        guard let p = process else { return }
        process = nil
        if paused { Glibc.kill(p.pid, SIGCONT) }
        paused = false
        Glibc.kill(p.pid, SIGKILL)
        p.reap()
    }

    private var paused = false
    func pause() {
        guard let p = process else { return }
        paused = true
        Glibc.kill(p.pid, SIGSTOP)
    }

    func resume() {
        guard let p = process else { return }
        paused = false
        Glibc.kill(p.pid, SIGCONT)
    }

    /// A child started with posix_spawn and reaped with waitpid, on the calling thread.
    /// Not Foundation's `Process`: its `waitUntilExit` spins a run loop on whichever
    /// cooperative thread the test runs on, while other suites start processes in parallel,
    /// and two test runs died of a SIGABRT with no message in this suite's teardown.
    final class Child {
        let pid: pid_t
        private var exited = false

        init(_ path: String, _ arguments: [String]) throws {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
            // No inherited descriptors: a parallel test's sockets must close when it does.
            // (glibc 2.34's addclosefrom_np, looked up: Swift's Glibc module omits GNU extensions.)
            typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
            if let f = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
                _ = unsafeBitCast(f, to: CloseFrom.self)(&actions, 3)
            }
            let argv = ([path] + arguments).map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var pid: pid_t = 0
            let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
            guard rc == 0 else { throw Failure(description: "posix_spawn \(path): \(String(cString: strerror(rc)))") }
            self.pid = pid
        }

        var isRunning: Bool {
            guard !exited else { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { exited = true }
            return !exited
        }

        func reap() {
            guard !exited else { return }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            exited = true
        }

        deinit {
            guard !exited else { return }
            Glibc.kill(pid, SIGKILL)
            reap()
        }
    }

    func log() -> String {
        (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
    }

    /// One blocking command over hiredis' synchronous API, for test set-up and checks.
    @discardableResult
    func command(_ args: String...) throws -> String { try command(db: 0, args) }

    /// The same in database `db` (authenticating first when the server has a password).
    @discardableResult
    func command(db: Int, _ args: [String]) throws -> String {
        if db != 0 || password != nil {
            return try session((password.map { [["AUTH", $0]] } ?? []) + [["SELECT", String(db)], args])
        }
        return try session([args])
    }

    /// Runs commands on one connection; returns the last reply.
    private func session(_ commands: [[String]]) throws -> String {
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        guard let c = redisConnectWithTimeout("127.0.0.1", Int32(port), tv) else { throw Failure(description: "redisConnect") }
        defer { redisFree(c) }
        if c.pointee.err != 0 { throw Failure(description: "connect: \(c.pointee.err)") }
        _ = redisSetTimeout(c, tv)
        var last = ""
        for args in commands { last = try run(c, args) }
        return last
    }

    private func run(_ c: UnsafeMutablePointer<redisContext>, _ args: [String]) throws -> String {
        var cstrings = args.map { strdup($0) }
        defer { cstrings.forEach { free($0) } }
        var lengths = args.map { $0.utf8.count }
        let raw = cstrings.withUnsafeMutableBufferPointer { argv in
            argv.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: args.count) { p in
                redisCommandArgv(c, Int32(args.count), p, &lengths)
            }
        }
        guard let raw else { throw Failure(description: "no reply to \(args)") }
        defer { freeReplyObject(raw) }
        let r = raw.assumingMemoryBound(to: redisReply.self).pointee
        switch r.type {
        case TW_REDIS_REPLY_INTEGER: return String(r.integer)
        case TW_REDIS_REPLY_ERROR: throw Failure(description: String(cString: r.str))
        case TW_REDIS_REPLY_NIL: return ""
        case TW_REDIS_REPLY_ARRAY: return "array(\(r.elements))"
        default: return r.str.map { String(cString: $0) } ?? ""
        }
    }

    private func ping() -> Bool {
        do { return try command("PING") == "PONG" } catch { return "\(error)".hasPrefix("NOAUTH") }
    }

    /// The `--requirepass` among the arguments, for `command`.
    private var password: String? {
        guard let i = extraArguments.firstIndex(of: "--requirepass"), i + 1 < extraArguments.count else { return nil }
        return extraArguments[i + 1]
    }

    private static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { throw Failure(description: "no free loopback port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// Polls `condition` until it holds or `seconds` pass; the condition, not the sleep, ends it.
func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let until = Date().addingTimeInterval(seconds)
    while Date() < until {
        if condition() { return true }
        usleep(2_000)
    }
    return condition()
}

/// What a callback on the loop thread hands the test thread.
final class Box<T: Sendable>: Sendable {
    private let value = Mutex<T?>(nil)
    func set(_ v: T) { value.withLock { $0 = v } }
    var get: T? { value.withLock { $0 } }
    func wait(_ seconds: Double = 5) -> T? {
        _ = waitUntil(seconds) { get != nil }
        return get
    }
}

/// An appending log filled on the loop thread, read on the test thread.
final class Recorder<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func append(_ v: T) { items.withLock { $0.append(v) } }
    var all: [T] { items.withLock { $0 } }
    var count: Int { items.withLock { $0.count } }
}
