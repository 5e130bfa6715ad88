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
}
