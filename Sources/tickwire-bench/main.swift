import ArgumentParser
import Foundation

struct Common: ParsableArguments {
    @Option(help: "Server address (loopback only: load is never aimed elsewhere).")
    var host = "127.0.0.1"
    @Option(help: "Server port.")
    var port = 8080
    @Option(help: "PID of the server, for its CPU time and resident memory.")
    var serverPid: Int32?
    @Option(help: "Write the JSON result here.")
    var output: String?
    @Option(help: "Name of the server in the report.")
    var label = "tickwire"
    @Flag(help: "Never sleep in epoll_wait (the generator uses a whole CPU; the server's sends stop paying to wake it).")
    var busyPoll = false

    func engine() throws -> ClientEngine {
        let e = try ClientEngine(host: host, port: port)
        e.busyPoll = busyPoll
        return e
    }

    func validate() throws {
        guard host.hasPrefix("127.") else { throw ValidationError("--host must be a loopback address (127.0.0.0/8)") }
    }

    func emit(_ result: [String: Any]) throws {
        var result = result
        result["label"] = label
        result["generator_busy_poll"] = busyPoll
        result["date"] = ISO8601DateFormatter().string(from: Date())
        let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
        if let output { try data.write(to: URL(fileURLWithPath: output)) }
        print(String(decoding: data, as: UTF8.self))
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tickwire-bench",
        abstract: "Load generator for Tickwire (and the kernel-floor reference server).",
        subcommands: [Fanout.self, Connections.self, Echo.self, Churn.self]
    )
}

struct Fanout: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "N subscribers, publishers at a fixed rate: deliveries/s, loss, duplicates, end-to-end latency.")
    @OptionGroup var common: Common
    @Option var subscribers = 1000
    @Option var publishers = 1
    @Option(help: "Messages per second, all publishers together.") var rate = 200.0
    @Option var warmup = 3.0
    @Option(help: "Measured seconds (after warm-up).") var duration = 10.0
    @Option(help: "Distinct symbols the publishers cycle through.") var symbols = 1
    @Option(help: "Messages per POST.") var batch = 1
    @Option(help: "Subscriber query string, e.g. 'channels=prices&symbols=S0' (Tickwire only).") var query = ""
    @Option(help: "Publish to this port instead of --port (another node of a cluster; --server-pid is then the subscribers' node).") var publishPort: Int?

    func run() throws {
        let engine = try common.engine()
        var o = FanoutOptions()
        o.publishPort = publishPort
        o.subscribers = subscribers; o.publishers = publishers; o.rate = rate; o.warmupSeconds = warmup
        o.durationSeconds = duration; o.symbols = symbols; o.batch = batch; o.query = query
        o.serverPid = common.serverPid; o.label = common.label
        try common.emit(FanoutBenchmark(engine: engine, options: o).run())
    }
}

struct Connections: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open N WebSocket connections and hold them: upgrades/s, failures, memory per connection.")
    @OptionGroup var common: Common
    @Option var count = 10_000
    @Option(help: "Seconds to hold after all are open.") var hold = 3.0
    @Option var path = "/ws"
    @Option(help: "After the hold, end every connection at once and sample the server's RSS each millisecond for this many seconds (0: skip).")
    var disconnectWatch = 2.0
    @Option(help: "How they end: tcp (clients close their sockets: a load balancer failing over), close-frame (clients send Close 1001 and wait for the answer: browsers leaving), server (SIGTERM to the server: a deploy).")
    var disconnect = DisconnectMode.tcp

    func run() throws {
        let engine = try common.engine()
        try common.emit(ConnectionsBenchmark(engine: engine, count: count, holdSeconds: hold, serverPid: common.serverPid, path: path,
                                                    disconnectWatchSeconds: disconnectWatch, disconnectMode: disconnect).run())
    }
}

struct Echo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "N clients in a request/response loop on /echo: round trips/s and latency.")
    @OptionGroup var common: Common
    @Option var clients = 50
    @Option(help: "Message size in bytes.") var size = 64
    @Option var warmup = 2.0
    @Option var duration = 10.0

    func run() throws {
        let engine = try common.engine()
        try common.emit(EchoBenchmark(engine: engine, clients: clients, size: size, warmupSeconds: warmup, durationSeconds: duration, serverPid: common.serverPid).run())
    }
}

struct Churn: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connect, subscribe, receive, disconnect in a loop; checks the server's memory returns to baseline.")
    @OptionGroup var common: Common
    @Option var cycles = 100_000
    @Option var concurrency = 200
    @Option(help: "Background messages per second for subscribers to receive.") var publishRate = 2000.0
    @Option(help: "Cycles before the memory baseline is taken.") var warmupCycles = 5_000

    func run() throws {
        let engine = try common.engine()
        try common.emit(ChurnBenchmark(engine: engine, cycles: cycles, concurrency: concurrency, serverPid: common.serverPid, publishRate: publishRate, warmupCycles: warmupCycles).run())
    }
}

Bench.main()
