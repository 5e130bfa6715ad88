import AccessToken
import ArgumentParser
import Authentication
import CLibEV
import Cluster
import EdgeServer
import Glibc
import Logging

struct Tickwire: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tickwire",
        abstract: "Real-time WebSocket edge server for trading dashboards.",
        discussion: "Every option can also be set with an environment variable: TICKWIRE_ and the option's name in capitals with underscores (--max-connections: TICKWIRE_MAX_CONNECTIONS; flags take true/false, --cors-origin a comma-separated list). A flag on the command line wins over the environment. Durations take a unit (500ms, 30s, 2m, 1h; seconds when none); sizes take a binary unit (64KiB, 16MiB; bytes when none).",
        version: TickwireVersion.string
    )

    @Option(help: "Address to listen on.")
    var host = "0.0.0.0"

    @Option(help: "TCP port for HTTP and WebSocket.")
    var port = 8080

    @Option(help: "Reactor threads, each with its own epoll loop and SO_REUSEPORT socket (default: online CPUs).")
    var workers: Int?

    @Flag(help: "Pin reactor thread i to CPU i.")
    var pinWorkers = false

    @Option(help: "Most WebSocket connections at once, across reactors; more get HTTP 503.")
    var maxConnections = 1_000_000

    @Option(help: "Largest client message (bytes or KiB/MiB), summed over fragments; larger ones close with 1009.")
    var maxMessageSize = ByteSizeArgument(bytes: 1 << 20)

    @Option(help: "Interval between server pings to each WebSocket client.")
    var pingInterval = DurationArgument(milliseconds: 30_000)

    @Option(help: "Close a WebSocket client that sent nothing (not even a pong) for this long.")
    var idleTimeout = DurationArgument(milliseconds: 75_000)

    @Option(help: "Close a connection that has not completed a request or upgrade within this time; also the HTTP keep-alive timeout.")
    var handshakeTimeout = DurationArgument(milliseconds: 5_000)

    @Option(help: "How long to wait for a peer's Close reply, and for its side to close, after ours.")
    var closeTimeout = DurationArgument(milliseconds: 2_000)

    @Option(help: "On SIGTERM/SIGINT, how long clients get to finish the closing handshake before exit.")
    var shutdownGrace = DurationArgument(milliseconds: 5_000)

    @Option(help: "Allowed CORS origin (repeatable); '*' allows any.")
    var corsOrigin: [String] = []

    @Option(help: "Largest HTTP request head (request line and headers).")
    var maxHeaderBytes = ByteSizeArgument(bytes: 8192)

    @Option(help: "Largest HTTP request body (POST /api/publish).")
    var maxBodySize = ByteSizeArgument(bytes: 4 << 20)

    @Flag(help: "Serve the /echo WebSocket endpoint (conformance tests and benchmarks).")
    var echo = false

    @Option(help: "Broadcast messages kept for lossless resume (the spec's capacity is 1000).")
    var history = 1000

    @Option(help: "Unsent bytes per subscriber before slow-consumer handling: market data is conflated, and if trades/positions/signals alone exceed it the connection closes with 1013.")
    var maxBacklog = ByteSizeArgument(bytes: 1 << 20)

    @Option(help: "SO_SNDBUF for client sockets (default: kernel autotuning). Smaller saves kernel memory on very large nodes.")
    var sendBuffer: ByteSizeArgument?

    @Option(help: "Bearer token required by POST /api/publish (at least 16 characters). Without it only loopback peers may publish.")
    var publishToken: String?

    @Flag(inversion: .prefixedNo, help: "Run the built-in market simulator (prices, candles, paper trades, AI signals, bot status).")
    var simulator = true

    @Option(help: "Comma-separated symbols for the simulator.")
    var symbols = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT"

    @Option(help: "Simulator MarketData messages per second, all symbols together.")
    var simRate = 8.0

    @Option(help: "Seed for a reproducible simulator run.")
    var simSeed: UInt64?

    @Option(help: "PEM certificate chain: with --tls-key, the port speaks TLS 1.2/1.3 only (wss://, https://); SIGHUP reloads both files.")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(help: "Access tokens (JWT) on /ws and /api/snapshot: off, optional (checked when given; none sees public data only) or required (401 without a valid one).")
    var auth = "off"

    @Option(help: "File holding the HS256 secret (at least 32 bytes) tokens are signed with.")
    var jwtSecretFile: String?

    @Option(help: "PEM RSA (RS256) or EC P-256 (ES256) public key tokens are signed with.")
    var jwtPublicKeyFile: String?

    @Option(help: "JSON Web Key Set file (RS256/ES256/HS256 keys, chosen by the token's kid). Read at start-up; never fetched.")
    var jwksFile: String?

    @Option(help: "Required token issuer (iss); unchecked when not given.")
    var jwtIssuer: String?

    @Option(help: "Required token audience (aud); unchecked when not given.")
    var jwtAudience: String?

    @Option(help: "Clock skew allowed on exp and nbf.")
    var jwtLeeway = DurationArgument(milliseconds: 30_000)

    @Option(help: "Tokens each worker remembers having verified, by their exact bytes: a reconnect with the same token skips the parse and the signature (its exp, nbf, iss and aud are checked again). At most 8 KiB each. 0: verify every time.")
    var jwtCacheSize = 1024

    @Option(help: "How long before a token expires the server asks the client for a new one (RefreshToken).")
    var tokenRefreshLead = DurationArgument(milliseconds: 60_000)

    @Option(help: "Origin allowed to open WebSockets (repeatable), against cross-site WebSocket hijacking; others get 403. Default: any origin.")
    var allowedOrigin: [String] = []

    @Option(help: "Most open WebSocket connections per client address (behind a proxy on this host: the last X-Forwarded-For hop); more get 429. 0: no limit.")
    var maxConnectionsPerIp = 0

    @Option(help: "Most new WebSocket connections per client address per second; more get 429. 0: no limit.")
    var maxNewConnectionsPerIp = 0

    @Option(help: "Most open WebSocket connections per account (the token's sub); more get 429. 0: no limit.")
    var maxConnectionsPerAccount = 0

    @Option(help: "Client messages per /ws connection per second (bursts of twice that pass); beyond: Error RATE_LIMITED, and a sustained flood closes with 1008.")
    var maxMessagesPerSecond = 100

    @Option(help: "Most symbols one connection's subscription may name.")
    var maxSymbols = 256

    @Option(help: "Highest max_frequency (updates per second per symbol and timeframe) a Subscribe may ask for on prices and candles; more gets Error INVALID_SUBSCRIPTION.")
    var maxFrequencyLimit = 60

    @Option(help: "Bytes per second sent to each /ws connection (0: no cap). Past it, prices and candles are conflated to the newest per key; trades and positions are queued (1013 past --max-backlog).")
    var maxBandwidth = ByteSizeArgument(bytes: 0)

    @Option(help: "permessage-deflate for clients that offer it: on or off. Broadcasts are compressed once per message, not per client.")
    var compression = "on"

    @Option(help: "Messages smaller than this are sent uncompressed.")
    var compressionMinSize = ByteSizeArgument(bytes: 128)

    @Option(help: "zlib compression level, 1 (fastest) to 9 (smallest).")
    var compressionLevel = 6

    @Option(help: "Join a cluster through this Redis: redis://[[user]:password@]HOST[:PORT][/DB]. seq, epoch and history then live in Redis. Without it the node stands alone.")
    var redis: String?

    @Option(help: "File holding the Redis password (overrides one in --redis; keeps it out of the process list).")
    var redisPasswordFile: String?

    @Option(help: "Redis connect and handshake timeout.")
    var redisConnectTimeout = DurationArgument(milliseconds: 1000)

    @Option(help: "Redis reply timeout; past it the link is dropped and reconnected, and publishes get 503.")
    var redisCommandTimeout = DurationArgument(milliseconds: 1000)

    @Option(help: "How long start-up waits for the cluster's head and history before giving up.")
    var redisStartupTimeout = DurationArgument(milliseconds: 10_000)

    @Option(help: "With --redis: how long a leader lease (the simulator runs on one node, its holder) outlives its last renew; renewed every third of it. A dead leader is replaced within about this.")
    var leaderLeaseTtl = DurationArgument(milliseconds: 5000)
    @Option(help: "Binance-format upstream stream to ingest (repeatable), e.g. ws://HOST:PORT/stream?streams=btcusdt@ticker/btcusdt@kline_1m. Turns the simulator off unless --simulator is also given.")
    var upstream: [String] = []

    @Option(help: "Open a successor upstream connection this long after each one opened, and switch to it without a gap (Binance ends connections after 24 h; default 23 h).")
    var upstreamRotate = DurationArgument(milliseconds: 23 * 3_600_000)

    @Option(help: "A symbol with no upstream event for this long is stale: /health lists it and clients get a broadcast Error FEED_STALE.")
    var upstreamStale = DurationArgument(milliseconds: 30_000)

    @Option(help: "PEM file of the CAs that wss:// upstreams are verified against (default: the system's trust store; verification is always on).")
    var upstreamCaFile: String?

    @Option(help: "Lowest log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Log line format: text or json.")
    var logFormat: String = "text"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical (got '\(logLevel)')")
        }
        guard LogFormat(rawValue: logFormat) != nil else {
            throw ValidationError("--log-format must be text or json (got '\(logFormat)')")
        }
        guard compression == "on" || compression == "off" else {
            throw ValidationError("--compression must be on or off (got '\(compression)')")
        }
        guard AuthMode(rawValue: auth) != nil else {
            throw ValidationError("--auth must be off, optional or required (got '\(auth)')")
        }
        let problems = try makeConfiguration().validate()
        if let first = problems.first { throw ValidationError(first) }
    }

    func makeConfiguration() throws -> ServerConfiguration {
        var config = ServerConfiguration()
        config.auth = AuthMode(rawValue: auth) ?? .off
        switch loadKeys() {
        case .success(let keys):
            if !keys.isEmpty {
                config.tokenVerifier = TokenVerifier(
                    keys: keys,
                    policy: ClaimsPolicy(issuer: jwtIssuer, audience: jwtAudience, leewaySeconds: Int64(jwtLeeway.milliseconds / 1000)))
            }
        case .failure(let error):
            throw ValidationError(error.description)
        }
        guard (0...1 << 20).contains(jwtCacheSize) else { throw ValidationError("--jwt-cache-size must be from 0 to 1048576 tokens") }
        config.tokenCacheSize = jwtCacheSize
        config.tokenRefreshLeadMilliseconds = tokenRefreshLead.milliseconds
        config.allowedOrigins = allowedOrigin
        config.compression = compression != "off"
        config.compressionMinBytes = compressionMinSize.bytes
        config.compressionLevel = compressionLevel
        config.maxConnectionsPerAddress = maxConnectionsPerIp
        config.maxNewConnectionsPerAddressPerSecond = maxNewConnectionsPerIp
        config.maxConnectionsPerAccount = maxConnectionsPerAccount
        config.maxMessagesPerSecond = maxMessagesPerSecond
        config.maxSymbolsPerSubscription = maxSymbols
        config.maxFrequencyLimit = maxFrequencyLimit
        config.maxBandwidthBytesPerSecond = maxBandwidth.bytes
        config.host = host
        config.port = port
        config.workers = workers ?? ReactorCount.online
        config.pinWorkers = pinWorkers
        config.maxConnections = maxConnections
        config.maxMessageSize = maxMessageSize.bytes
        config.pingIntervalMilliseconds = pingInterval.milliseconds
        config.idleTimeoutMilliseconds = idleTimeout.milliseconds
        config.handshakeTimeoutMilliseconds = handshakeTimeout.milliseconds
        config.closeTimeoutMilliseconds = closeTimeout.milliseconds
        config.shutdownGraceMilliseconds = shutdownGrace.milliseconds
        config.corsOrigins = corsOrigin.isEmpty ? ["*"] : corsOrigin
        config.httpLimits.maxHeadBytes = maxHeaderBytes.bytes
        config.maxRequestBodyBytes = maxBodySize.bytes
        config.echo = echo
        config.historySize = history
        config.maxBacklogBytes = maxBacklog.bytes
        config.publishToken = publishToken
        config.sendBufferBytes = sendBuffer?.bytes
        config.simulator = simulator
        config.simulatorSymbols = symbols.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        config.simulatorRate = simRate
        config.simulatorSeed = simSeed
        config.tlsCertificateFile = tlsCert
        config.tlsKeyFile = tlsKey
        if let redis {
            var endpoint: RedisEndpoint
            do { endpoint = try RedisEndpoint(url: redis) } catch { throw ValidationError("--redis: \(error)") }
            if let file = redisPasswordFile {
                guard let text = readSmallFile(file) else { throw ValidationError("--redis-password-file \(file) cannot be read") }
                let password = String(text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).first ?? "")
                guard !password.isEmpty else { throw ValidationError("--redis-password-file \(file) is empty") }
                endpoint.password = password
            }
            config.redis = endpoint
        } else if redisPasswordFile != nil {
            throw ValidationError("--redis-password-file needs --redis")
        }
        config.redisConnectTimeoutMilliseconds = redisConnectTimeout.milliseconds
        config.redisCommandTimeoutMilliseconds = redisCommandTimeout.milliseconds
        config.redisStartupTimeoutMilliseconds = redisStartupTimeout.milliseconds
        config.leaderLeaseTTLMilliseconds = leaderLeaseTtl.milliseconds
        config.upstreams = upstream
        config.upstreamRotateMilliseconds = upstreamRotate.milliseconds
        config.upstreamStaleMilliseconds = upstreamStale.milliseconds
        config.upstreamCAFile = upstreamCaFile
        // --upstream replaces the simulator unless both were asked for.
        if !upstream.isEmpty && !SimulatorChoice.explicit { config.simulator = false }
        return config
    }

    private func loadKeys() -> Result<KeySet, KeyLoadingError> {
        Result { () throws(KeyLoadingError) in try KeySet.load(secretFile: jwtSecretFile, publicKeyFile: jwtPublicKeyFile, jwksFile: jwksFile) }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel)!
        let format = LogFormat(rawValue: logFormat)!
        let output = LogOutput(fd: 2, format: format)
        SignalLoop.logOutput = output
        LoggingSystem.bootstrap { label in LogLineHandler(label: label, level: level, output: output) }
        let logger = Logger(label: "tickwire")
        let server = Server(config: try makeConfiguration(), logger: logger)
        do {
            try server.start()
        } catch {
            fail("\(error)", code: 1)
        }
        SignalLoop.run(server: server, logger: logger)
    }
}

/// The main thread's only job once reactors run: wait for SIGTERM/SIGINT on libev's
/// default loop, start the graceful shutdown, and exit when it is done or the grace is up.
enum SignalLoop {
    nonisolated(unsafe) static var server: Server?
    nonisolated(unsafe) static var logger: Logger?
    nonisolated(unsafe) static var deadline: UInt64 = 0
    nonisolated(unsafe) static var signals = 0
    /// Written from its own thread: flushed before every exit so the last lines are kept.
    nonisolated(unsafe) static var logOutput: LogOutput?

    /// Exits once the queued log lines are out (at most a second: a stuck stderr must not
    /// hold up the exit).
    static func exit(_ code: Int32) -> Never {
        logOutput?.flush(timeoutMilliseconds: 1000)
        Glibc.exit(code)
    }

    static func run(server: Server, logger: Logger) {
        self.server = server
        self.logger = logger
        // A parent (a test harness, a supervisor) may have left these blocked, and the
        // mask is inherited: unblock them on this thread, which alone handles them.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGHUP)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        let loop = ev_default_loop(0)
        let sigint = UnsafeMutablePointer<ev_signal>.allocate(capacity: 1)
        let sigterm = UnsafeMutablePointer<ev_signal>.allocate(capacity: 1)
        let poll = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
        tw_ev_signal_init(sigint, onSignal, SIGINT)
        tw_ev_signal_init(sigterm, onSignal, SIGTERM)
        ev_signal_start(loop, sigint)
        ev_signal_start(loop, sigterm)
        let sighup = UnsafeMutablePointer<ev_signal>.allocate(capacity: 1)
        tw_ev_signal_init(sighup, onReload, SIGHUP)
        ev_signal_start(loop, sighup)
        // Checks for the end of the shutdown ten times a second.
        tw_ev_timer_init(poll, onShutdownPoll, 0.1, 0.1)
        ev_timer_start(loop, poll)
        ev_run(loop, 0)
    }

    static func monotonicNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}

private func onSignal(_ loop: OpaquePointer?, _ watcher: UnsafeMutablePointer<ev_signal>?, _ revents: Int32) {
    SignalLoop.signals += 1
    let name = watcher!.pointee.signum == SIGINT ? "SIGINT" : "SIGTERM"
    if SignalLoop.signals > 1 {
        SignalLoop.logger?.warning("second \(name): exiting now")
        SignalLoop.exit(0)
    }
    let grace = SignalLoop.server!.config.shutdownGraceMilliseconds
    SignalLoop.logger?.info("\(name) received: closing connections (grace \(grace) ms)")
    SignalLoop.deadline = SignalLoop.monotonicNow() + UInt64(grace)
    SignalLoop.server!.beginShutdown()
}

/// SIGHUP: the TLS certificate and key are read again; open connections stay as they are.
private func onReload(_ loop: OpaquePointer?, _ watcher: UnsafeMutablePointer<ev_signal>?, _ revents: Int32) {
    guard let server = SignalLoop.server else { return }
    guard server.config.tlsEnabled else {
        SignalLoop.logger?.info("SIGHUP received: nothing to reload (TLS is off)")
        return
    }
    switch server.reloadTLS() {
    case .success:
        SignalLoop.logger?.notice("SIGHUP received: TLS certificate reloaded", metadata: ["cert": "\(server.config.tlsCertificateFile!)"])
    case .failure(let error):
        SignalLoop.logger?.error("SIGHUP received: TLS certificate NOT reloaded, the previous one stays in use: \(error.message)")
    }
}

private func onShutdownPoll(_ loop: OpaquePointer?, _ watcher: UnsafeMutablePointer<ev_timer>?, _ revents: Int32) {
    guard SignalLoop.signals > 0, let server = SignalLoop.server else { return }
    if server.isStopped {
        SignalLoop.logger?.info("shutdown complete")
        SignalLoop.exit(0)
    }
    if SignalLoop.monotonicNow() >= SignalLoop.deadline {
        SignalLoop.logger?.warning("shutdown grace elapsed with \(server.webSocketCount) connections still open; exiting")
        SignalLoop.exit(0)
    }
}

/// A small text file (a password), read without Foundation.
func readSmallFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buffer, 1, buffer.count, f)
        if n <= 0 { break }
        bytes += buffer[0..<n]
        if bytes.count > 1 << 16 { return nil }
    }
    return String(decoding: bytes, as: UTF8.self)
}

enum ReactorCount {
    static var online: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

func fail(_ message: String, code: Int32) -> Never {
    // After the lines already queued, so the error comes last, as it happened.
    SignalLoop.logOutput?.flush(timeoutMilliseconds: 1000)
    var line = "tickwire: error: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(code)
}

/// Environment variables become command-line options unless the command line sets them.
func argumentsWithEnvironment() -> [String] {
    var args = Array(CommandLine.arguments.dropFirst())
    let given = Set(args.filter { $0.hasPrefix("--") }.map { String($0.split(separator: "=")[0]) })
    let options = [
        "host", "port", "workers", "max-connections", "max-message-size", "ping-interval", "idle-timeout",
        "handshake-timeout", "close-timeout", "shutdown-grace", "max-header-bytes", "max-body-size",
        "log-level", "log-format", "history", "max-backlog", "publish-token", "symbols", "sim-rate", "sim-seed", "send-buffer",
        "tls-cert", "tls-key", "auth", "jwt-secret-file", "jwt-public-key-file", "jwks-file", "jwt-issuer",
        "jwt-audience", "jwt-leeway", "jwt-cache-size", "token-refresh-lead", "max-connections-per-ip", "max-new-connections-per-ip",
        "max-connections-per-account", "max-messages-per-second", "max-symbols", "compression", "compression-min-size", "compression-level",
        "redis", "redis-password-file", "redis-connect-timeout", "redis-command-timeout", "redis-startup-timeout",
        "leader-lease-ttl", "max-frequency-limit", "max-bandwidth",
    ]
    let flags = ["echo", "pin-workers"]
    func variable(_ option: String) -> String? {
        let name = "TICKWIRE_" + option.uppercased().replacingDashes()
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
    for option in options where !given.contains("--\(option)") {
        if let value = variable(option), !value.isEmpty { args += ["--\(option)", value] }
    }
    for flag in flags where !given.contains("--\(flag)") {
        if let value = variable(flag), ["1", "true", "yes", "on"].contains(value.lowercased()) { args.append("--\(flag)") }
    }
    // TICKWIRE_SIMULATOR=false is --no-simulator.
    if !given.contains("--simulator") && !given.contains("--no-simulator"), let value = variable("simulator") {
        args.append(["0", "false", "no", "off"].contains(value.lowercased()) ? "--no-simulator" : "--simulator")
    }
    for list in ["cors-origin", "allowed-origin"] where !given.contains("--\(list)") {
        guard let value = variable(list) else { continue }
        for origin in value.split(separator: ",") { args += ["--\(list)", String(origin).trimmingCharacters(in: .whitespaces)] }
    }
    // The upstream feeds: TICKWIRE_UPSTREAM is a comma-separated list of URLs; the two
    // durations go like any other option.
    for option in ["upstream-rotate", "upstream-stale", "upstream-ca-file"] where !given.contains("--\(option)") {
        if let value = variable(option), !value.isEmpty { args += ["--\(option)", value] }
    }
    if !given.contains("--upstream"), let value = variable("upstream") {
        for url in value.split(separator: ",") where !url.isEmpty { args += ["--upstream", String(url).trimmingCharacters(in: .whitespaces)] }
    }
    SimulatorChoice.explicit = args.contains("--simulator")
    return args
}

/// Whether --simulator (or TICKWIRE_SIMULATOR=true) was given, not just defaulted: with
/// --upstream the simulator runs only when asked for.
enum SimulatorChoice {
    nonisolated(unsafe) static var explicit = false
}

extension String {
    func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}

// Parse errors print one line saying what to fix and exit 64 (EX_USAGE).
do {
    var command = try Tickwire.parseAsRoot(argumentsWithEnvironment())
    try command.run()
} catch {
    let code = Tickwire.exitCode(for: error)
    let message = Tickwire.message(for: error)
    if code == .success {
        print(Tickwire.fullMessage(for: error))
        exit(0)
    }
    let firstLine = message.split(separator: "\n").first.map(String.init) ?? "invalid arguments"
    fail("\(firstLine) (see tickwire --help)", code: code == .validationFailure ? 64 : code.rawValue)
}
