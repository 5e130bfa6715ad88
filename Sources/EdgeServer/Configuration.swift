import Authentication
import Cluster
import Glibc
import Upstream
import WireProtocol

/// Whether `/ws` and `/api/snapshot` take access tokens (PROTOCOL.md "Authentication").
public enum AuthMode: String, Sendable, CaseIterable {
    /// No tokens: one tenant; messages published with an `account` reach everyone.
    case off
    /// A token is checked when given; without one a client sees public data only.
    case optional
    /// Every WebSocket upgrade and snapshot needs a valid token (401 otherwise).
    case required
}

/// Every limit and timeout the edge server enforces, each with the reason for its default.
/// Validated once at start-up (`validate()`), so a bad value stops the server with a
/// message instead of misbehaving later.
public struct ServerConfiguration: Sendable {
    /// Address to listen on. 0.0.0.0: an edge node serves every interface by default.
    public var host = "0.0.0.0"
    /// The spec's port.
    public var port = 8080
    /// Reactor threads; one per online core keeps every core busy without contention.
    public var workers = 1
    /// Pin reactor i to CPU i (benchmarks, dedicated nodes).
    public var pinWorkers = false
    /// WebSocket connections across all reactors; beyond it, upgrades get 503. The default
    /// is "no limit but the file-descriptor limit".
    public var maxConnections = 1_000_000
    /// Largest message a client may send, summed over fragments: 1 MiB fits any dashboard
    /// command by far while bounding what one peer can make us buffer. Over it: close 1009.
    public var maxMessageSize = 1 << 20
    /// Server-initiated ping interval: 30 s, the spec's heartbeat, well under the 60-100 s
    /// idle timeouts of common proxies and load balancers.
    public var pingIntervalMilliseconds = 30_000
    /// A connection that sent nothing (not even a pong) for this long is closed. 75 s is
    /// two missed heartbeats and a half: a slow network is not mistaken for a dead peer.
    public var idleTimeoutMilliseconds = 75_000
    /// Time from accept to a completed request (or upgrade); also the keep-alive timeout
    /// of plain HTTP connections. 5 s defeats slow-loris clients without hurting real ones.
    public var handshakeTimeoutMilliseconds = 5_000
    /// After we send or answer a Close, how long to wait for the peer to finish the
    /// closing handshake and close its side before we drop the socket (§7.1.1).
    public var closeTimeoutMilliseconds = 2_000
    /// On SIGTERM/SIGINT: how long to let clients complete the closing handshake.
    public var shutdownGraceMilliseconds = 5_000
    /// `Access-Control-Allow-Origin` values; `*` allows any origin (the spec's default).
    public var corsOrigins: [String] = ["*"]
    /// Serve `/echo` (Autobahn conformance runs and echo benchmarks only).
    public var echo = false
    /// Request-head limits (bytes, header count).
    public var httpLimits = HTTPLimits()
    /// Largest request body (POST /api/publish batches). Over it: 413.
    public var maxRequestBodyBytes = 4 << 20
    /// Output a connection may have queued before the server stops reading from it
    /// (echo and HTTP only; broadcast backlog has its own policy).
    public var maxOutputBytes = 4 << 20
    /// Per-reactor read buffer: one read moves up to this much; 256 KiB drains a full
    /// loopback socket buffer in a few calls.
    public var readBufferBytes = 256 << 10
    /// SO_SNDBUF for accepted sockets; nil leaves the kernel's autotuning. Smaller buffers
    /// cut kernel memory per connection on very large nodes and make a stalled client hit
    /// the backlog policy sooner.
    public var sendBufferBytes: Int?
    /// Kernel accept backlog for each reactor's listening socket.
    public var listenBacklog: Int32 = 4096
    /// PEM certificate chain and private key: with both, the port speaks TLS 1.2/1.3 only
    /// (wss:// and https://), and plain HTTP on it gets a 400 saying so. Without them, plain
    /// (TLS terminated elsewhere, as in deploy/nginx).
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?
    public var tlsEnabled: Bool { tlsCertificateFile != nil && tlsKeyFile != nil }

    // Authentication.
    public var auth = AuthMode.off
    /// The keys and claim rules tokens are checked with; needed unless `auth` is off.
    public var tokenVerifier: TokenVerifier?
    /// Tokens each reactor remembers having verified (`VerifiedTokenCache`); 0: none.
    public var tokenCacheSize = 1024
    /// How long before a token's `exp` the server asks for a fresh one (`RefreshToken`):
    /// a minute is many round trips for the client to fetch one, even on a poor link.
    public var tokenRefreshLeadMilliseconds = 60_000

    // Abuse limits (PROTOCOL.md "Limits"); 0 means no limit.
    /// Origins allowed to open WebSockets (cross-site WebSocket hijacking); empty: any.
    public var allowedOrigins: [String] = []
    /// Open WebSocket connections per client address.
    public var maxConnectionsPerAddress = 0
    /// New WebSocket connections per client address per second.
    public var maxNewConnectionsPerAddressPerSecond = 0
    /// Open WebSocket connections per account (a token's `sub`).
    public var maxConnectionsPerAccount = 0
    /// Client messages per `/ws` connection per second (a token bucket holding two seconds'
    /// worth): a dashboard sends a few; 100 leaves room for bursts of subscription changes.
    public var maxMessagesPerSecond = 100

    // Compression.
    /// permessage-deflate (RFC 7692) for clients that offer it; browsers all do.
    public var compression = true
    /// Messages shorter than this go uncompressed: deflate's framing eats the gain on tiny ones.
    public var compressionMinBytes = 128
    /// zlib's level (1 fastest ... 9 smallest). A broadcast is compressed once for all its
    /// subscribers, so the default (6) costs little there; replies and echo pay it per message.
    public var compressionLevel = 6

    // The trading stream.
    /// Broadcast messages kept for resume: the spec's broadcast capacity (1000). At the
    /// simulator's rate that is about two minutes of reconnect window.
    public var historySize = 1000
    /// Unsent bytes a subscriber may have before the slow-consumer policy applies
    /// (conflation, then close 1013): 1 MiB is seconds of a busy stream, far more than a
    /// healthy client ever lags, and bounds what one stalled client costs.
    public var maxBacklogBytes = 1 << 20
    /// Bearer token for POST /api/publish; nil: loopback peers only.
    public var publishToken: String?
    /// Symbols one Subscribe may name.
    public var maxSymbolsPerSubscription = 256
    /// The highest `max_frequency` a Subscribe may ask for (updates per second per key):
    /// screens redraw at 60 Hz at most, and a higher rate is the full feed in all but name.
    public var maxFrequencyLimit = 60
    /// Bytes per second each `/ws` connection may be sent (0: no cap). Past it, prices and
    /// candles are conflated (newest per key) until the bucket refills; events are queued
    /// under --max-backlog as for any slow consumer.
    public var maxBandwidthBytesPerSecond = 0
    /// Run the built-in market simulator.
    public var simulator = true
    public var simulatorSymbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
    /// Simulator MarketData messages per second (all symbols together).
    public var simulatorRate = 8.0
    public var simulatorSeed: UInt64?
    /// The simulator's demo trader: a token with this `sub` sees its trades and positions.
    public var simulatorAccount = "demo"

    // The cluster (issue 10). Without `redis` the node is a cluster of one, as before.
    /// `--redis redis://HOST:PORT[/DB]`: seq, epoch and history live in that Redis.
    public var redis: RedisEndpoint?
    /// TCP connect plus handshake to Redis: loopback or a LAN answers in well under a
    /// millisecond, so a second means it is not there.
    public var redisConnectTimeoutMilliseconds = 1000
    /// Oldest unanswered Redis command: past it the link is dropped (a stopped or
    /// partitioned Redis) and publishes get 503 instead of piling up.
    public var redisCommandTimeoutMilliseconds = 1000
    /// How long start-up waits for the cluster's head and history; a node that cannot
    /// load them does not accept clients (its supervisor restarts it).
    public var redisStartupTimeoutMilliseconds = 10_000
    /// `--leader-lease-ttl`: how long a leader's lease (the simulator's) outlives its last
    /// renew. A dead leader's work resumes on another node within about this; a leader cut
    /// off from Redis stops at 80% of it. 5 s rides out a Redis failover or a GC-free
    /// stall without flapping.
    public var leaderLeaseTTLMilliseconds = 5000

    public var redisLinkSettings: RedisLinkSettings {
        var s = RedisLinkSettings()
        s.connectTimeout = Double(redisConnectTimeoutMilliseconds) / 1000
        s.commandTimeout = Double(redisCommandTimeoutMilliseconds) / 1000
        return s
    }

    // Upstream feeds (issue 13). Without `upstreams` nothing is ingested from a venue.
    /// `--upstream` URLs: Binance-format streams (`ws://HOST[:PORT]/stream?streams=...`).
    public var upstreams: [String] = []
    /// `--upstream-rotate`: a successor connection opens this long after each connection
    /// opened (Binance ends connections at 24 h; 23 h leaves an hour to switch).
    public var upstreamRotateMilliseconds = 23 * 3_600_000
    /// `--upstream-stale`: a symbol without an upstream event this long is stale. Binance
    /// sends a ticker every second; 30 s is a feed that stopped, not a quiet market.
    public var upstreamStaleMilliseconds = 30_000
    /// `--upstream-ca-file`: CAs (PEM) that wss:// upstreams are verified against; nil: the
    /// system's trust store. Verification is always on.
    public var upstreamCAFile: String?

    /// The ingester's settings (call after `validate()` found no problem).
    public var upstreamSettings: UpstreamSettings {
        var s = UpstreamSettings()
        s.urls = upstreams.compactMap { try? UpstreamURL($0) }
        s.rotateSeconds = Double(upstreamRotateMilliseconds) / 1000
        s.staleSeconds = Double(upstreamStaleMilliseconds) / 1000
        // A connection silent (not even a ping) for twice the staleness limit, and at least
        // 10 s, is taken for half-open and replaced.
        s.connection.silenceTimeout = max(10, 2 * s.staleSeconds)
        s.caFile = upstreamCAFile
        return s
    }

    public init() {}

    /// Problems with the settings, each phrased as what to fix; empty when valid.
    public func validate() -> [String] {
        var problems: [String] = []
        // Deadline lists keep 32-bit milliseconds compared with wrapping arithmetic.
        let maxTimeout = 24 * 24 * 3600 * 1000
        if !(0...65535).contains(port) { problems.append("--port must be between 0 and 65535 (got \(port))") }
        if !(1...1024).contains(workers) { problems.append("--workers must be between 1 and 1024 (got \(workers))") }
        if maxConnections < 1 { problems.append("--max-connections must be at least 1 (got \(maxConnections))") }
        if !(125...(1 << 30)).contains(maxMessageSize) {
            problems.append("--max-message-size must be between 125 and 1073741824 bytes (got \(maxMessageSize))")
        }
        if !(100...maxTimeout).contains(pingIntervalMilliseconds) { problems.append("--ping-interval must be between 0.1 s and 24 days") }
        if !(100...maxTimeout).contains(idleTimeoutMilliseconds) { problems.append("--idle-timeout must be between 0.1 s and 24 days") }
        if idleTimeoutMilliseconds <= pingIntervalMilliseconds {
            problems.append("--idle-timeout (\(idleTimeoutMilliseconds) ms) must be longer than --ping-interval (\(pingIntervalMilliseconds) ms), or every client times out between pings")
        }
        if !(100...maxTimeout).contains(handshakeTimeoutMilliseconds) { problems.append("--handshake-timeout must be between 0.1 s and 24 days") }
        if !(10...maxTimeout).contains(closeTimeoutMilliseconds) { problems.append("--close-timeout must be between 0.01 s and 24 days") }
        if !(0...maxTimeout).contains(shutdownGraceMilliseconds) { problems.append("--shutdown-grace must be between 0 s and 24 days") }
        if corsOrigins.isEmpty { problems.append("--cors-origin needs at least one origin, or '*'") }
        if httpLimits.maxHeadBytes < 512 { problems.append("the request head limit must be at least 512 bytes") }
        if httpLimits.maxHeaderCount < 8 { problems.append("the header count limit must be at least 8") }
        if readBufferBytes < 16 << 10 { problems.append("the read buffer must be at least 16 KiB") }
        if let b = sendBufferBytes, !((4 << 10)...(64 << 20)).contains(b) { problems.append("--send-buffer must be between 4KiB and 64MiB") }
        if !(1...10_000_000).contains(historySize) { problems.append("--history must be between 1 and 10000000 messages (got \(historySize))") }
        if !((16 << 10)...(1 << 34)).contains(maxBacklogBytes) { problems.append("--max-backlog must be between 16KiB and 16GiB (got \(maxBacklogBytes))") }
        if let token = publishToken, token.count < 16 { problems.append("--publish-token must be at least 16 characters") }
        if simulator && simulatorSymbols.isEmpty { problems.append("--symbols needs at least one symbol for the simulator") }
        if simulatorSymbols.contains(where: { $0.isEmpty || $0.count > 32 || !$0.allSatisfy { $0.isLetter || $0.isNumber || "-_./:".contains($0) } }) {
            problems.append("--symbols takes comma-separated symbols of letters, digits and -_./: (at most 32 characters each)")
        }
        if (tlsCertificateFile == nil) != (tlsKeyFile == nil) {
            problems.append("--tls-cert and --tls-key go together: give both PEM files, or neither for plain HTTP")
        }
        for (flag, file) in [("--tls-cert", tlsCertificateFile), ("--tls-key", tlsKeyFile)] {
            if let file, access(file, R_OK) != 0 { problems.append("\(flag) \(file) cannot be read: check the path and its permissions") }
        }
        if auth != .off && (tokenVerifier?.keys.isEmpty ?? true) {
            problems.append("--auth \(auth.rawValue) needs a key to check tokens with: --jwt-secret-file, --jwt-public-key-file or --jwks-file")
        }
        if auth == .off && !(tokenVerifier?.keys.isEmpty ?? true) {
            problems.append("JWT keys were given but --auth is off: add --auth optional or --auth required, or drop the key options")
        }
        for (flag, value) in [("--max-connections-per-ip", maxConnectionsPerAddress), ("--max-new-connections-per-ip", maxNewConnectionsPerAddressPerSecond),
                              ("--max-connections-per-account", maxConnectionsPerAccount)] where value < 0 {
            problems.append("\(flag) must be 0 (no limit) or more (got \(value))")
        }
        if !(1...1_000_000).contains(maxMessagesPerSecond) { problems.append("--max-messages-per-second must be between 1 and 1000000 (got \(maxMessagesPerSecond))") }
        if !(1...100_000).contains(maxSymbolsPerSubscription) { problems.append("--max-symbols must be between 1 and 100000 (got \(maxSymbolsPerSubscription))") }
        if let bad = allowedOrigins.first(where: { !($0.hasPrefix("http://") || $0.hasPrefix("https://")) || $0.hasSuffix("/") }) {
            problems.append("--allowed-origin takes origins like https://app.example.com (scheme and host, no path); got '\(bad)'")
        }
        if !(0...(1 << 30)).contains(compressionMinBytes) { problems.append("--compression-min-size must be between 0 and 1GiB") }
        if !(1...9).contains(compressionLevel) { problems.append("--compression-level must be between 1 (fastest) and 9 (smallest)") }
        if !(1000...maxTimeout).contains(tokenRefreshLeadMilliseconds) { problems.append("--token-refresh-lead must be between 1 s and 24 days") }
        if redis != nil {
            if !(10...60_000).contains(redisConnectTimeoutMilliseconds) { problems.append("--redis-connect-timeout must be between 10 ms and 60 s") }
            if !(10...60_000).contains(redisCommandTimeoutMilliseconds) { problems.append("--redis-command-timeout must be between 10 ms and 60 s") }
            if !(100...600_000).contains(redisStartupTimeoutMilliseconds) { problems.append("--redis-startup-timeout must be between 0.1 s and 10 min") }
            if let why = LeaderLease.validate(ttl: Double(leaderLeaseTTLMilliseconds) / 1000) { problems.append("--leader-lease-ttl \(why)") }
        }
        if maxBandwidthBytesPerSecond != 0 && !((1 << 10)...(1 << 34)).contains(maxBandwidthBytesPerSecond) {
            problems.append("--max-bandwidth must be 0 (no cap) or between 1KiB and 16GiB per second (got \(maxBandwidthBytesPerSecond))")
        }
        if !(1...1000).contains(maxFrequencyLimit) { problems.append("--max-frequency-limit must be between 1 and 1000 updates per second (got \(maxFrequencyLimit))") }
        if !(0.1...100_000).contains(simulatorRate) { problems.append("--sim-rate must be between 0.1 and 100000 messages per second") }
        for url in upstreams {
            do { _ = try UpstreamURL(url) } catch { problems.append("--upstream \(error.description)") }
        }
        if !upstreams.isEmpty {
            if !(1000...(24 * 3_600_000)).contains(upstreamRotateMilliseconds) {
                problems.append("--upstream-rotate must be between 1 s and 24 h (Binance ends connections after 24 h)")
            }
            if !(500...3_600_000).contains(upstreamStaleMilliseconds) { problems.append("--upstream-stale must be between 0.5 s and 1 h") }
            if let file = upstreamCAFile, access(file, R_OK) != 0 {
                problems.append("--upstream-ca-file \(file) cannot be read: check the path and its permissions")
            }
        }
        return problems
    }
}
