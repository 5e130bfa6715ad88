import EdgeServer
import Glibc
import Logging
import Testing

/// An in-process server on an ephemeral loopback port, stopped at the end of the test.
final class TestServer {
    let server: Server
    var port: Int { server.port }

    init(_ configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
        var config = ServerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.workers = 2
        config.echo = true
        config.shutdownGraceMilliseconds = 1000
        config.simulator = false
        configure(&config)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        server = Server(config: config, logger: logger)
        try server.start()
    }

    deinit { server.stop() }

    /// Polls `condition` for up to `seconds`.
    static func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = monotonicNow() + seconds
        while monotonicNow() < deadline {
            if condition() { return true }
            usleep(5_000)
        }
        return condition()
    }
}

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
