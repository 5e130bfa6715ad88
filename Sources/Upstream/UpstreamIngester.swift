import CLibEV
import CTLSShims
import Glibc
import Ingestion
import Reactor
import Synchronization
import TradingStream
import WireProtocol

/// Settings of the upstream feeds (`--upstream*`), each with its reason.
public struct UpstreamSettings: Sendable {
    public var urls: [UpstreamURL] = []
    /// Open a successor connection this long after a connection opened. Binance ends every
    /// connection after 24 h; 23 h leaves an hour for the successor to come up.
    public var rotateSeconds = 23.0 * 3600
    /// A symbol with no upstream event for this long is stale (`FEED_STALE`): Binance sends
    /// a ticker every second, so 30 s is a feed that stopped, not a quiet market.
    public var staleSeconds = 30.0
    public var connection = UpstreamConnectionLimits()
    /// PEM file of the CAs wss:// upstreams are verified against; nil: the system store.
    public var caFile: String?

    public init() {}

    /// The client TLS context for wss:// URLs (peer and host name verified), nil when no
    /// URL needs one; a failure says why (an unreadable or invalid CA file).
    public func makeTLSContext() -> Result<OpaquePointer?, UpstreamTLSError> {
        guard urls.contains(where: { $0.scheme == .wss }) else { return .success(nil) }
        var error = [CChar](repeating: 0, count: 256)
        guard let context = tw_tls_client_context(1, caFile, &error, error.count) else {
            return .failure(UpstreamTLSError(message: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
        }
        return .success(context)
    }
}

public struct UpstreamTLSError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// What the ingester logs (the server turns it into its logger's levels).
public enum UpstreamLogLevel: Sendable { case info, warning }

/// The upstream ingestion edge: one `UpstreamSource` per `--upstream` URL, each a WebSocket
/// client connection (and during a rotation two), on the edge loop of the publisher, so
/// every mapped event is published synchronously, in order, through `StreamPublisher` —
/// the path of the simulator and `POST /api/publish`, and with `--redis` the cluster's.
///
/// `start()` and `stop()` may be called from any thread, any number of times (the lead's
/// leader lease calls them as leadership comes and goes). All other state lives on
/// `EdgeLoop.edge`'s thread; `/health` reads a summary through a lock, once per request.
public final class UpstreamIngester: @unchecked Sendable {
    // @unchecked: mutable state is touched on `edge`'s thread only (entry points hop there
    // or check it); `health` is behind its own lock.
    public let settings: UpstreamSettings
    let edge: EdgeLoop
    private let publisher: StreamPublisher
    private let logLine: @Sendable (UpstreamLogLevel, String) -> Void
    private var sources: [UpstreamSource] = []
    private var running = false
    private var mapper = UpstreamEventMapper()
    private var dedupe = StreamDedupe()
    private var symbols: [String: SymbolFreshness] = [:]
    /// Symbols tracked for staleness; beyond it new ones are published but not tracked.
    public static let maxTrackedSymbols = 10_000
    private let staleTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private var lastMalformedLog = -Double.infinity
    private var malformedSinceLog = 0
    /// At most one malformed-event warning per this many seconds (each says how many were skipped).
    static let malformedLogInterval = 10.0

    // Counters (edge thread).
    private(set) var events = [UInt64](repeating: 0, count: UpstreamEventType.allCases.count)
    var reconnects: UInt64 = 0
    var rotations: UInt64 = 0
    var pongs: UInt64 = 0
    private(set) var staleNotices: UInt64 = 0

    private let health = Mutex<String>("")
    /// What the current read pass mapped, published as one batch when the pass ends
    /// (`flushPublications`): one delivery per pass, not one per event. Reused.
    private var pending: [StreamPublisher.Publication] = []

    struct SymbolFreshness {
        var lastSeen: Double
        var stale = false
    }

    /// The client TLS context of wss:// connections (from `UpstreamSettings.makeTLSContext`).
    let tlsContext: OpaquePointer?

    public init(settings: UpstreamSettings, publisher: StreamPublisher, edge: EdgeLoop = .edge, tlsContext: OpaquePointer? = nil,
                log: @escaping @Sendable (UpstreamLogLevel, String) -> Void) {
        self.settings = settings
        self.tlsContext = tlsContext
        self.publisher = publisher
        self.edge = edge
        self.logLine = log
        tw_ev_timer_init(staleTimer, { _, w, _ in
            Unmanaged<UpstreamIngester>.fromOpaque(w!.pointee.data).takeUnretainedValue().checkStaleness()
        }, 0, 0)
        staleTimer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        sources = settings.urls.enumerated().map { UpstreamSource(index: $0.offset, url: $0.element, ingester: self) }
        health.withLock { $0 = Self.healthJSON(state: "stopped", up: 0, urls: settings.urls.count, stale: []) }
    }

    /// Connects every upstream and starts the staleness clock (idempotent).
    public func start() {
        let box = UpstreamBox(self)
        edge.onLoop { box.value.startOnLoop() }
    }

    /// Closes every upstream connection (Close 1001) and stops the clocks (idempotent): a
    /// stopped ingester publishes nothing, not even staleness notices.
    public func stop() {
        let box = UpstreamBox(self)
        edge.onLoop { box.value.stopOnLoop() }
    }

    private func startOnLoop() {
        guard !running else { return }
        running = true
        let now = ev_now(edge.rawLoop)
        // Every symbol the URLs name is watched from now: one that never sends goes stale too.
        for url in settings.urls {
            for symbol in url.symbols { symbols[symbol] = SymbolFreshness(lastSeen: now) }
        }
        for i in symbols.keys { symbols[i]?.lastSeen = now; symbols[i]?.stale = false }
        let interval = min(1.0, max(0.1, settings.staleSeconds / 10))
        tw_ev_timer_set(staleTimer, interval, interval)
        ev_timer_start(edge.rawLoop, staleTimer)
        for source in sources { source.start() }
        log(.info, "upstream ingestion started: \(settings.urls.map(\.description).joined(separator: ", "))")
        updateHealth()
    }

    private func stopOnLoop() {
        guard running else { return }
        flushPublications()
        running = false
        ev_timer_stop(edge.rawLoop, staleTimer)
        for source in sources { source.stop() }
        log(.info, "upstream ingestion stopped")
        updateHealth()
    }

    // MARK: - Events

    /// One upstream message: mapped, de-duplicated, published.
    func ingest(_ message: UnsafeRawBufferPointer, from source: UpstreamSource) {
        let event = mapper.map(message)
        switch event.outcome {
        case .malformed(let reason):
            events[UpstreamEventType.malformed.rawValue] += 1
            warnMalformed(reason, source: source)
            return
        case .unknown:
            events[UpstreamEventType.unknown.rawValue] += 1
            return
        default:
            break
        }
        touch(event.symbol)
        guard dedupe.admit(stream: event.streamHash, order: event.order) else {
            events[UpstreamEventType.duplicate.rawValue] += 1
            return
        }
        events[event.type.rawValue] += 1
        switch event.outcome {
        case .marketData:
            publish(.marketData, event.data, StreamPublisher.Keys(symbol: event.symbol))
        case .chartUpdate(let timeframe):
            publish(.chartUpdate, event.data, StreamPublisher.Keys(symbol: event.symbol, timeframe: timeframe))
        default:
            break
        }
    }

    private func publish(_ channel: Channel, _ data: [UInt8], _ keys: StreamPublisher.Keys) {
        pending.append(StreamPublisher.Publication(channel, data: data, keys: keys))
    }

    /// Publishes what is pending, in arrival order; called when a read pass ends and after
    /// staleness notices. Same executor (the edge loop): synchronous, so nothing overtakes.
    func flushPublications() {
        guard !pending.isEmpty else { return }
        publisher.assumeIsolated { $0.publish(batch: pending) }
        pending.removeAll(keepingCapacity: true)
    }

    private func warnMalformed(_ reason: String, source: UpstreamSource) {
        let now = ev_now(edge.rawLoop)
        malformedSinceLog += 1
        guard now - lastMalformedLog >= Self.malformedLogInterval else { return }
        let skipped = malformedSinceLog - 1
        log(.warning, "upstream \(source.url): malformed event skipped: \(reason)"
            + (skipped > 0 ? " (and \(skipped) more in the last \(Int(Self.malformedLogInterval)) s)" : ""))
        lastMalformedLog = now
        malformedSinceLog = 0
    }

    // MARK: - Staleness

    private func touch(_ symbol: String) {
        let now = ev_now(edge.rawLoop)
        if var state = symbols[symbol] {
            if state.stale {
                state.stale = false
                let silent = now - state.lastSeen
                state.lastSeen = now
                symbols[symbol] = state
                notice(symbol, code: "FEED_RECOVERED",
                       message: "upstream data for \(symbol) resumed after \(Self.seconds(silent)) s",
                       details: "{\"stale_for_ms\":\(Int(silent * 1000))}")
                updateHealth()
                return
            }
            state.lastSeen = now
            symbols[symbol] = state
        } else if symbols.count < Self.maxTrackedSymbols {
            symbols[symbol] = SymbolFreshness(lastSeen: now)
        }
    }

    private func checkStaleness() {
        let now = ev_now(edge.rawLoop)
        var changed = false
        for (symbol, state) in symbols where !state.stale && now - state.lastSeen > settings.staleSeconds {
            symbols[symbol]?.stale = true
            changed = true
            let age = now - state.lastSeen
            notice(symbol, code: "FEED_STALE",
                   message: "no upstream data for \(symbol) for \(Self.seconds(age)) s (limit \(Self.seconds(settings.staleSeconds)) s)",
                   details: "{\"age_ms\":\(Int(age * 1000)),\"stale_after_ms\":\(Int(settings.staleSeconds * 1000))}")
            log(.warning, "upstream: \(symbol) is stale (\(Self.seconds(age)) s without an event)")
        }
        if changed {
            flushPublications()
            updateHealth()
        }
    }

    /// A broadcast `Error` for one symbol (so symbol filters route it like its data).
    private func notice(_ symbol: String, code: String, message: String, details: String) {
        staleNotices += 1
        var data: [UInt8] = []
        data.append(literal: "{\"code\":")
        data.append(quoted: code)
        data.append(literal: ",\"symbol\":")
        data.append(quoted: symbol)
        data.append(literal: ",\"message\":")
        data.append(quoted: message)
        data.append(literal: ",\"details\":")
        data.append(contentsOf: details.utf8)
        data.append(UInt8(ascii: "}"))
        publish(.error, data, StreamPublisher.Keys(symbol: symbol))
    }

    static func seconds(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    // MARK: - Health and metrics

    func updateHealth() {
        let up = sources.filter(\.isUp).count
        let stale = symbols.filter(\.value.stale).map(\.key).sorted()
        let state = !running ? "stopped" : (up == 0 ? "down" : (stale.isEmpty ? "ok" : "stale"))
        let json = Self.healthJSON(state: state, up: up, urls: sources.count, stale: stale)
        health.withLock { $0 = json }
    }

    static func healthJSON(state: String, up: Int, urls: Int, stale: [String]) -> String {
        "{\"state\":\"\(state)\",\"connections_up\":\(up),\"upstreams\":\(urls),\"stale_symbols\":[\(stale.map { "\"\($0)\"" }.joined(separator: ","))]}"
    }

    /// The `upstream` object of `/health` (any thread): `state` is `ok`, `stale` (some symbol
    /// is), `down` (no connection up), or `stopped` (not ingesting, e.g. not the leader).
    public var healthFragment: String { health.withLock { $0 } }

    /// Whether `/health` should say `degraded`.
    public var isDegraded: Bool {
        let fragment = healthFragment
        return fragment.hasPrefix("{\"state\":\"stale\"") || fragment.hasPrefix("{\"state\":\"down\"")
    }

    public struct Metrics: Sendable {
        public var events: [(type: String, count: UInt64)] = []
        public var reconnects: UInt64 = 0
        public var rotations: UInt64 = 0
        public var pongs: UInt64 = 0
        public var connectionsUp = 0
        public var staleNotices: UInt64 = 0
        /// Seconds since each tracked symbol's last event, and whether it is stale.
        public var symbolAges: [(symbol: String, seconds: Double, stale: Bool)] = []
    }

    /// For the metrics exporter, on the edge loop's thread.
    public func metrics() -> Metrics {
        precondition(edge.isOnLoopThread, "UpstreamIngester.metrics() off the edge loop")
        var m = Metrics()
        m.events = UpstreamEventType.allCases.map { ($0.label, events[$0.rawValue]) }
        m.reconnects = reconnects
        m.rotations = rotations
        m.pongs = pongs + sources.reduce(0) { $0 + $1.pongsOfOpenConnections }
        m.connectionsUp = sources.filter(\.isUp).count
        m.staleNotices = staleNotices
        // ev_now is the loop pass's time; a scrape runs on the loop, so it is current.
        let loopNow = ev_now(edge.rawLoop)
        m.symbolAges = symbols.map { ($0.key, max(0, loopNow - $0.value.lastSeen), $0.value.stale) }.sorted { $0.symbol < $1.symbol }
        return m
    }

    func log(_ level: UpstreamLogLevel, _ line: String) { logLine(level, line) }
}

/// One `--upstream` URL: its connection, and during a rotation its successor. Reconnects
/// with `UpstreamBackoff`; rotates `rotateSeconds` after each connection opened: the
/// successor connects while the current one still delivers, takes over with its first
/// message, and the old one is closed; `StreamDedupe` drops what both delivered.
final class UpstreamSource: UpstreamConnectionOwner {
    let index: Int
    let url: UpstreamURL
    unowned let ingester: UpstreamIngester
    private var current: UpstreamConnection?
    private var successor: UpstreamConnection?
    /// Connections closed by us (rotation, stop) until they report closed.
    private var retiring: [UpstreamConnection] = []
    private var backoff = UpstreamBackoff()
    /// Retries of a failed successor: apart from `backoff`, which every delivered message
    /// resets, so a venue refusing new connections is not asked several times a second.
    private var rotationBackoff = UpstreamBackoff()
    private var random = SystemRandomNumberGenerator()
    private var connections = 0
    private var running = false
    private let reconnectTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private let rotateTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)

    init(index: Int, url: UpstreamURL, ingester: UpstreamIngester) {
        self.index = index
        self.url = url
        self.ingester = ingester
        tw_ev_timer_init(reconnectTimer, { _, w, _ in
            Unmanaged<UpstreamSource>.fromOpaque(w!.pointee.data).takeUnretainedValue().connect()
        }, 0, 0)
        tw_ev_timer_init(rotateTimer, { _, w, _ in
            Unmanaged<UpstreamSource>.fromOpaque(w!.pointee.data).takeUnretainedValue().rotate()
        }, 0, 0)
        let me = Unmanaged.passUnretained(self).toOpaque()
        reconnectTimer.pointee.data = me
        rotateTimer.pointee.data = me
    }

    var isUp: Bool { current?.state == .open }
    var pongsOfOpenConnections: UInt64 {
        UInt64(([current, successor].compactMap { $0 } + retiring).reduce(0) { $0 + $1.pongsSent })
    }

    private var loop: OpaquePointer { ingester.edge.rawLoop }

    func start() {
        guard !running else { return }
        running = true
        backoff.reset()
        connect()
    }

    func stop() {
        guard running else { return }
        running = false
        ev_timer_stop(loop, reconnectTimer)
        ev_timer_stop(loop, rotateTimer)
        for c in [current, successor].compactMap({ $0 }) { retire(c, code: .goingAway, reason: "ingestion stopped") }
        current = nil
        successor = nil
    }

    private func newConnection() -> UpstreamConnection {
        connections += 1
        let c = UpstreamConnection(url: url, edge: ingester.edge, limits: ingester.settings.connection, number: connections,
                                   tlsContext: ingester.tlsContext)
        c.owner = self
        return c
    }

    private func connect() {
        guard running, current == nil else { return }
        let c = newConnection()
        current = c
        c.start()
    }

    /// Opens the successor; the current connection keeps delivering meanwhile.
    private func rotate() {
        guard running, successor == nil, current != nil else { return }
        ingester.log(.info, "upstream \(url): rotating (connection \(connections + 1) opens before connection \(current!.number) ends)")
        let c = newConnection()
        successor = c
        c.start()
    }

    private func retire(_ c: UpstreamConnection, code: CloseCode, reason: String) {
        retiring.append(c)
        c.close(code: code, reason: reason)
    }

    private func scheduleReconnect() {
        let delay = backoff.nextDelay(random: Double.random(in: 0...1, using: &random))
        ingester.reconnects += 1
        ingester.log(.info, "upstream \(url): reconnecting in \(UpstreamIngester.seconds(delay)) s")
        ev_timer_stop(loop, reconnectTimer)
        tw_ev_timer_set(reconnectTimer, delay, 0)
        ev_timer_start(loop, reconnectTimer)
    }

    private func armRotation(after seconds: Double) {
        ev_timer_stop(loop, rotateTimer)
        tw_ev_timer_set(rotateTimer, seconds, 0)
        ev_timer_start(loop, rotateTimer)
    }

    // MARK: - UpstreamConnectionOwner

    func connectionOpened(_ connection: UpstreamConnection) {
        if connection === current {
            ingester.log(.info, "upstream \(url): connection \(connection.number) up")
            armRotation(after: ingester.settings.rotateSeconds)
            ingester.updateHealth()
        }
    }

    func connection(_ connection: UpstreamConnection, received message: UnsafeRawBufferPointer) {
        guard running else { return }
        if connection === successor, let old = current {
            // The successor delivers: it takes over, and the old connection is closed. What
            // the old one already received goes first, so the switch loses nothing.
            old.drain()
            guard running else { return }
            // (Unless the drain found the old one closed, which already promoted this one.)
            if connection === successor, let old = current {
                current = connection
                successor = nil
                ingester.rotations += 1
                rotationBackoff.reset()
                retire(old, code: .normalClosure, reason: "rotated")
                ingester.log(.info, "upstream \(url): connection \(connection.number) took over from connection \(old.number)")
                armRotation(after: ingester.settings.rotateSeconds)
            }
        }
        if connection === current { backoff.reset() }
        ingester.ingest(message, from: self)
    }

    func connectionReadPassEnded(_ connection: UpstreamConnection) {
        ingester.flushPublications()
    }

    func connectionClosed(_ connection: UpstreamConnection, reason: String) {
        ingester.pongs += UInt64(connection.pongsSent)
        if let i = retiring.firstIndex(where: { $0 === connection }) {
            retiring.remove(at: i)
            return
        }
        if connection === successor {
            successor = nil
            ingester.log(.warning, "upstream \(url): successor connection \(connection.number) failed (\(reason)); the current one carries on")
            armRotation(after: rotationBackoff.nextDelay(random: Double.random(in: 0...1, using: &random)))
            return
        }
        guard connection === current else { return }
        current = nil
        ingester.log(.warning, "upstream \(url): connection \(connection.number) lost: \(reason)")
        if let next = successor {
            // Mid-rotation: the successor is the connection now.
            successor = nil
            current = next
            armRotation(after: ingester.settings.rotateSeconds)
        } else if running {
            scheduleReconnect()
        }
        ingester.updateHealth()
    }
}
