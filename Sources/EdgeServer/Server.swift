import CLibEV
import Cluster
import Glibc
import Logging
import Ingestion
import Reactor
import Synchronization
import TradingStream
import Upstream

/// The build's version, reported by /health and --version.
public enum TickwireVersion {
    public static let string = "0.1.0"
}

/// What every reactor shares: the configuration (immutable), the logger, the list of
/// reactors (for health and metrics reads) and the one counter that must be global.
final class ServerContext: @unchecked Sendable {
    // @unchecked: `workers` is written once, before any reactor thread starts.
    let config: ServerConfiguration
    let logger: Logger
    let startedAtMonotonic = monotonicMilliseconds()
    let startedAtWallSeconds = Double(wallClockNanoseconds()) / 1e9
    /// WebSocket connections admitted, across reactors, for --max-connections. Changed
    /// once per upgrade and close, never per message.
    let admitted = Atomic<Int>(0)
    /// Shared counts for the per-address and per-account limits (`Admission`).
    let addressCounts = SharedCounts()
    let addressRates = SharedCounts()
    let accountCounts = SharedCounts()
    /// The TLS certificate's notAfter (seconds since the epoch; 0 without TLS).
    let tlsCertificateExpiry = Atomic<Int64>(0)
    /// Certificate reloads (SIGHUP) that took effect, and those refused for bad files.
    let tlsReloads = Atomic<UInt64>(0)
    let tlsReloadFailures = Atomic<UInt64>(0)
    var workers: [Worker] = []
    /// This run's history identity (PROTOCOL.md "Resume"); in a cluster the cluster's,
    /// replaced when Redis lost the stream. Read per connect and resume, never per
    /// message, so a lock is cheap enough and keeps the String whole.
    private let epochCell: Mutex<String>
    var epoch: String { epochCell.withLock { $0 } }
    func adopt(epoch: String) { epochCell.withLock { $0 = epoch } }
    let queues = BroadcastQueues()
    let publisher: StreamPublisher
    /// With `--redis`: the cluster's Redis edge (set in `start`, before any reactor runs).
    var cluster: ClusterIngest?
    /// With `--redis`: the leader leases this node competes for, by role (`simulator`),
    /// for `tickwire_cluster_leader{role}`. Set in `start`, before metrics are served.
    var leases: [(role: String, lease: LeaderLease)] = []
    /// Leases whose release Redis answered (or that held nothing) after `beginShutdown`.
    let leasesReleased = Atomic<Int>(0)
    /// With `--upstream`: the upstream feeds (set in `start`, before any reactor runs).
    var upstream: UpstreamIngester?

    /// The scrape-time aggregator of every reactor's counters. Made here, before any
    /// reactor can ask for it (a lazy property would race between reactors).
    private(set) var metrics: MetricsExporter!

    init(config: ServerConfiguration, logger: Logger) {
        self.config = config
        self.logger = logger
        var rng = SystemRandomNumberGenerator()
        let raw = rng.next() as UInt64
        let hex = String(raw, radix: 16)
        let epoch = String(repeating: "0", count: 16 - hex.count) + hex
        epochCell = Mutex(epoch)
        publisher = StreamPublisher(epoch: epoch, sink: queues, accountRouting: config.auth != .off)
        metrics = MetricsExporter(context: self)
    }
}

/// Why the server could not start.
public enum StartupError: Error, CustomStringConvertible {
    case invalidConfiguration([String])
    case portInUse(host: String, port: Int)
    case system(SystemError)
    case tls(TLSLoadError)
    case cluster(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let problems): return problems.joined(separator: "; ")
        case let .portInUse(host, port):
            return "port \(port) on \(host) is already in use; stop the other process or choose another --port"
        case .system(let error): return error.description
        case .tls(let error): return "TLS: \(error.message)"
        case .cluster(let why): return "cluster: \(why)"
        }
    }
}

/// The edge server: N reactor threads sharing one port through SO_REUSEPORT.
public final class Server: @unchecked Sendable {
    // @unchecked: mutable state is touched by the thread that calls start/stop only.
    public let config: ServerConfiguration
    let context: ServerContext
    private var threads: [ReactorThread] = []
    private let finished = Atomic<Int>(0)
    /// The port actually bound (differs from `config.port` when that is 0).
    public private(set) var port = 0
    private var simulator: MarketSimulator?

    /// The ingestion edge, for in-process producers.
    public var publisher: StreamPublisher { context.publisher }
    public var epoch: String { context.epoch }
    /// The upstream feeds (`--upstream`), for a leader lease to start and stop.
    public var upstream: UpstreamIngester? { context.upstream }

    public init(config: ServerConfiguration, logger: Logger) {
        self.config = config
        self.context = ServerContext(config: config, logger: logger)
    }

    /// Binds every reactor's socket and starts the reactor threads.
    public func start() throws(StartupError) {
        let problems = config.validate()
        if !problems.isEmpty { throw .invalidConfiguration(problems) }
        Socket.raiseFileLimit()
        signal(SIGPIPE, SIG_IGN)

        // A probe bound without SO_REUSEPORT fails if anyone, even another Tickwire with
        // SO_REUSEPORT, holds the port: without it, two servers would silently share it.
        var port = config.port
        do {
            let probe = try Socket.listen(host: config.host, port: port, reusePort: false, backlog: 1)
            port = Socket.localPort(probe)
            close(probe)
        } catch {
            if error.errno == EADDRINUSE { throw .portInUse(host: config.host, port: port) }
            throw .system(error)
        }
        self.port = port

        // What several reactors would otherwise create on first use, racing: made now.
        EdgeRequests.prepare()
        _ = StaticAssets.all

        var tlsContexts: [OpaquePointer] = []
        if let certificate = config.tlsCertificateFile, let key = config.tlsKeyFile {
            switch TLSServerContext.load(certificateFile: certificate, keyFile: key, count: config.workers) {
            case .success(let contexts): tlsContexts = contexts
            case .failure(let error): throw .tls(error)
            }
            context.tlsCertificateExpiry.store(TLSServerContext.notAfter(tlsContexts[0]), ordering: .relaxed)
        }

        var workers: [Worker] = []
        do throws(SystemError) {
            for i in 0..<config.workers {
                let fd = try Socket.listen(host: config.host, port: port, reusePort: true, backlog: config.listenBacklog)
                do {
                    workers.append(try Worker(index: i, context: context, listenFd: fd))
                } catch {
                    close(fd)
                    throw error
                }
            }
        } catch {
            // The workers made so far close their listening sockets as they go.
            if error.errno == EADDRINUSE { throw .portInUse(host: config.host, port: port) }
            throw .system(error)
        }
        for (worker, tls) in zip(workers, tlsContexts) { worker.tlsContext = tls }
        context.workers = workers
        context.queues.attach(workers.map(\.broadcastInbox))
        if let endpoint = config.redis { try startCluster(endpoint) }
        for worker in workers {
            let thread = ReactorThread(name: "tickwire-r\(worker.index)") { [self] in
                worker.run()
                self.finished.add(1, ordering: .releasing)
            }
            do {
                try thread.start(cpu: config.pinWorkers ? worker.index % ReactorThread.onlineCPUs : nil)
            } catch {
                throw .system(error)
            }
            threads.append(thread)
        }
        if config.simulator {
            var sim = SimulatorConfiguration()
            sim.symbols = config.simulatorSymbols
            sim.ticksPerSecond = config.simulatorRate
            sim.seed = config.simulatorSeed
            sim.account = config.simulatorAccount
            let simulator = MarketSimulator(publisher: context.publisher, config: sim)
            self.simulator = simulator
            if let cluster = context.cluster {
                startSimulatorUnderLease(simulator, cluster)
            } else {
                Task(executorPreference: EdgeLoop.edge) { await simulator.start() }
            }
        }
        if !config.upstreams.isEmpty {
            let logger = context.logger
            let settings = config.upstreamSettings
            var tls: OpaquePointer?
            switch settings.makeTLSContext() {
            case .success(let context): tls = context
            case .failure(let error): throw .invalidConfiguration(["--upstream-ca-file: \(error.message)"])
            }
            let ingester = UpstreamIngester(settings: settings, publisher: context.publisher, tlsContext: tls) { level, line in
                switch level {
                case .info: logger.info("\(line)")
                case .warning: logger.warning("\(line)")
                }
            }
            context.upstream = ingester
            // One ingester per cluster: with --redis only the lease holder ingests.
            if let cluster = context.cluster {
                startUpstreamUnderLease(ingester, cluster)
            } else {
                ingester.start()
            }
        }
        context.logger.info("tickwire listening", metadata: [
            "host": "\(config.host)", "port": "\(port)", "workers": "\(config.workers)",
            "echo": "\(config.echo)", "simulator": "\(config.simulator)", "epoch": "\(context.epoch)",
            "tls": "\(config.tlsEnabled)",
        ])
    }

    /// Joins the cluster: from now on seqs come from Redis, and the cluster's head and
    /// last `--history` messages are framed into the per-core queues before any reactor
    /// runs, so a node that just started already serves resumes.
    private func startCluster(_ endpoint: RedisEndpoint) throws(StartupError) {
        let logger = context.logger
        let ingest = ClusterIngest(
            endpoint: endpoint, settings: config.redisLinkSettings, history: config.historySize, target: context.publisher
        ) { warning, line in
            if warning { logger.warning("\(line)") } else { logger.notice("\(line)") }
        }
        context.cluster = ingest
        let context = self.context
        let loaded = StartupFlag()
        EdgeLoop.edge.onLoop {
            context.publisher.assumeIsolated { $0.attach(cluster: ingest) { epoch in context.adopt(epoch: epoch) } }
            ingest.start { loaded.value.store(true, ordering: .releasing) }
        }
        let deadline = monotonicMilliseconds() + UInt64(config.redisStartupTimeoutMilliseconds)
        while !loaded.value.load(ordering: .acquiring) {
            if monotonicMilliseconds() >= deadline {
                throw .cluster("Redis at \(endpoint) did not give the cluster's head and history within \(config.redisStartupTimeoutMilliseconds) ms")
            }
            usleep(2_000)
        }
        logger.info("joined the cluster", metadata: ["redis": "\(endpoint)", "epoch": "\(context.epoch)",
                                                     "head": "\(ingest.head.load(ordering: .relaxed))"])
    }

    /// In a cluster only the holder of `tickwire:lease:simulator` simulates, so markets
    /// are not simulated twice; another node takes over within the lease's ttl when the
    /// leader dies. Start and stop hop to the simulator through one FIFO (`onLoop`), so
    /// they keep the lease's order.
    private func startSimulatorUnderLease(_ simulator: MarketSimulator, _ cluster: ClusterIngest) {
        let logger = context.logger
        let key = "tickwire:lease:simulator"
        let lease = LeaderLease(
            link: cluster.command, key: key, ttl: Double(config.leaderLeaseTTLMilliseconds) / 1000,
            onAcquired: {
                logger.notice("cluster: leader lease acquired: this node runs the simulator", metadata: ["key": "\(key)"])
                EdgeLoop.edge.onLoop { simulator.assumeIsolated { $0.start() } }
            },
            onLost: { why in
                logger.warning("cluster: leader lease lost: simulator stopped", metadata: ["key": "\(key)", "reason": "\(why)"])
                EdgeLoop.edge.onLoop { simulator.assumeIsolated { $0.stop() } }
            })
        context.leases.append(("simulator", lease))
        logger.info("cluster: competing for the simulator's leader lease", metadata: [
            "key": "\(key)", "node": "\(lease.nodeID)", "ttl": "\(lease.ttl)",
        ])
        lease.start()
    }

    /// In a cluster one node ingests a given set of upstreams: the holder of
    /// `tickwire:lease:upstream:<hash of the URLs>` (nodes configured with the same feeds
    /// compete for one lease; different feeds do not block each other). When the holder
    /// dies another node's ingester starts within the ttl, and publishes continue the
    /// cluster's seq through the same script.
    private func startUpstreamUnderLease(_ ingester: UpstreamIngester, _ cluster: ClusterIngest) {
        let logger = context.logger
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a over the sorted URLs
        for byte in config.upstreams.sorted().joined(separator: " ").utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let key = "tickwire:lease:upstream:\(String(hash, radix: 16))"
        let lease = LeaderLease(
            link: cluster.command, key: key, ttl: Double(config.leaderLeaseTTLMilliseconds) / 1000,
            onAcquired: {
                logger.notice("cluster: leader lease acquired: this node ingests the upstreams", metadata: ["key": "\(key)"])
                ingester.start()
            },
            onLost: { why in
                logger.warning("cluster: leader lease lost: upstream ingestion stopped", metadata: ["key": "\(key)", "reason": "\(why)"])
                ingester.stop()
            })
        context.leases.append(("upstream", lease))
        logger.info("cluster: competing for the upstream's leader lease", metadata: [
            "key": "\(key)", "node": "\(lease.nodeID)", "ttl": "\(lease.ttl)",
        ])
        lease.start()
    }

    /// Reads the certificate and key files again (SIGHUP) and gives every reactor the new
    /// context for its next handshakes; open connections are untouched. With bad files
    /// the old credentials stay in use and the error says why.
    public func reloadTLS() -> Result<Void, TLSLoadError> {
        guard let certificate = config.tlsCertificateFile, let key = config.tlsKeyFile else {
            return .failure(TLSLoadError(message: "TLS is not enabled (no --tls-cert/--tls-key)"))
        }
        switch TLSServerContext.load(certificateFile: certificate, keyFile: key, count: context.workers.count) {
        case .failure(let error):
            context.tlsReloadFailures.add(1, ordering: .relaxed)
            return .failure(error)
        case .success(let contexts):
            context.tlsCertificateExpiry.store(TLSServerContext.notAfter(contexts[0]), ordering: .relaxed)
            for (worker, tls) in zip(context.workers, contexts) { worker.post(.tlsContext(tls)) }
            context.tlsReloads.add(1, ordering: .relaxed)
            return .success(())
        }
    }

    /// Starts the graceful shutdown: reactors stop accepting and send Close 1001.
    public func beginShutdown() {
        if context.leases.isEmpty, let simulator { Task(executorPreference: EdgeLoop.edge) { await simulator.stop() } }
        // A held lease stops its work (onLost) and is deleted in Redis, so another node
        // takes over at its next try rather than after the ttl.
        let context = self.context
        for (_, lease) in context.leases { lease.stop { context.leasesReleased.add(1, ordering: .relaxed) } }
        if context.leases.isEmpty { context.upstream?.stop() }
        for worker in context.workers { worker.post(.shutdown) }
    }

    /// True once every reactor has finished and every lease was given back.
    public var isStopped: Bool {
        finished.load(ordering: .acquiring) == threads.count && context.leasesReleased.load(ordering: .relaxed) >= context.leases.count
    }

    /// Shuts down gracefully and waits at most the shutdown grace (plus a little for the
    /// last sockets); returns whether every reactor finished in time.
    @discardableResult
    public func stop() -> Bool {
        beginShutdown()
        let deadline = monotonicMilliseconds() + UInt64(config.shutdownGraceMilliseconds) + 500
        while !isStopped && monotonicMilliseconds() < deadline {
            usleep(2_000)
        }
        if isStopped { for t in threads { t.join() } }
        return isStopped
    }

    /// Open WebSocket sessions across reactors.
    public var webSocketCount: Int {
        context.workers.reduce(0) { $0 + $1.stats.webSocketsOpen.load(ordering: .relaxed) }
    }
}

/// Totals across reactors, read without stopping them (each value is a relaxed load of a
/// counter its reactor alone writes).
public struct ServerCounters: Sendable {
    public var webSocketsOpen = 0
    public var webSocketsTotal: UInt64 = 0
    public var socketsOpen = 0
    public var httpRequests: UInt64 = 0
    public var messagesSent: UInt64 = 0
    public var messagesReceived: UInt64 = 0
    public var bytesSent: UInt64 = 0
    public var connectionErrors: UInt64 = 0
    public var parseErrors: UInt64 = 0
    public var upgradesRejected: UInt64 = 0
    public var resumes: UInt64 = 0
    public var resumesRecovered: UInt64 = 0
    public var conflated: UInt64 = 0
    public var slowConsumerDisconnects: UInt64 = 0
    public var broadcastFailures: UInt64 = 0
    public var backlogBytes = 0
    public var historyMessages = 0
    public var perWorkerWebSockets: [Int] = []
}

extension Server {
    public func counters() -> ServerCounters {
        var t = ServerCounters()
        for w in context.workers {
            let s = w.stats
            let open = s.webSocketsOpen.load(ordering: .relaxed)
            t.webSocketsOpen += open
            t.perWorkerWebSockets.append(open)
            t.webSocketsTotal += s.webSocketsTotal.load(ordering: .relaxed)
            t.socketsOpen += s.socketsOpen.load(ordering: .relaxed)
            t.httpRequests += s.httpRequests.load(ordering: .relaxed)
            t.messagesSent += s.messagesSent.load(ordering: .relaxed)
            t.messagesReceived += s.messagesReceived.load(ordering: .relaxed)
            t.bytesSent += s.bytesSent.load(ordering: .relaxed)
            t.connectionErrors += s.connectionErrors.load(ordering: .relaxed)
            t.parseErrors += s.parseErrors.load(ordering: .relaxed)
            t.upgradesRejected += s.upgradesRejected.load(ordering: .relaxed)
            t.resumes += s.resumes.load(ordering: .relaxed)
            t.resumesRecovered += s.resumesRecovered.load(ordering: .relaxed)
            t.conflated += s.conflated.load(ordering: .relaxed)
            t.slowConsumerDisconnects += s.slowConsumerDisconnects.load(ordering: .relaxed)
            t.broadcastFailures += s.broadcastFailures.load(ordering: .relaxed)
            t.backlogBytes += s.backlogBytes.load(ordering: .relaxed)
            t.historyMessages = max(t.historyMessages, s.historyMessages.load(ordering: .relaxed))
        }
        return t
    }
}

/// Set once the cluster's history is in the per-core queues (any thread).
final class StartupFlag: Sendable {
    let value = Atomic<Bool>(false)
}
