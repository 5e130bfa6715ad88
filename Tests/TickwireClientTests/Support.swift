import EdgeServer
import Foundation
import Logging
import Synchronization
import Testing
@testable import TickwireClient

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// An in-process Tickwire server on an ephemeral loopback port.
final class LiveServer: Sendable {
    let server: Server
    var port: Int { server.port }
    var url: String { "ws://127.0.0.1:\(port)/ws" }

    init(_ configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
        var config = ServerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.workers = 2
        config.simulator = false
        config.shutdownGraceMilliseconds = 1000
        configure(&config)
        var logger = Logger(label: "tickwire-client-tests")
        logger.logLevel = .critical
        server = Server(config: config, logger: logger)
        try server.start()
    }

    /// Stops the server off the cooperative pool (stop blocks until the reactors finish).
    func stop() async {
        let server = self.server
        _ = await DedicatedThread.run { server.stop() }
    }

    /// `POST /api/publish`; returns the seqs the server assigned.
    func publish(_ body: String) async throws -> [UInt64] {
        let exchange = HTTPExchange(host: "127.0.0.1", port: port, hostHeader: "127.0.0.1:\(port)", timeout: .seconds(5), maxBodyBytes: 1 << 20)
        let result = await DedicatedThread.run {
            Result { () throws(TransportError) in
                try exchange.perform(method: "POST", target: "/api/publish", headers: [("Content-Type", "application/json")], body: Array(body.utf8))
            }
        }
        let response = try #require(result).get()
        guard response.status == 202 else {
            throw TestFailure("publish answered \(response.status): \(String(decoding: response.body, as: UTF8.self))")
        }
        struct Accepted: Decodable { var seqs: [UInt64] }
        return try JSONDecoder().decode(Accepted.self, from: Data(response.body)).seqs
    }
}

func tradeJSON(_ symbol: String = "BTCUSDT", n: Int = 0) -> String {
    #"{"type":"TradeExecuted","data":{"symbol":"\#(symbol)","side":"BUY","quantity":0.5,"price":50000.0,"timestamp":\#(n),"pnl":1.0}}"#
}

func marketJSON(_ symbol: String, price: Double) -> String {
    #"{"type":"MarketData","data":{"symbol":"\#(symbol)","price":\#(price),"price_change_24h":1.5,"price_change_percent_24h":0.1,"volume_24h":100.0,"timestamp":1609459200000}}"#
}

func batch(_ messages: [String]) -> String { "[" + messages.joined(separator: ",") + "]" }

/// Collects a client's events for assertions; every wait is bounded.
final class EventRecorder: Sendable {
    private final class Storage: Sendable {
        let events = Mutex<[TickwireEvent]>([])
    }

    private let storage = Storage()
    private let task: Task<Void, Never>

    init(_ client: TickwireClient) {
        let events = client.events
        let storage = self.storage
        task = Task {
            for await event in events { storage.events.withLock { $0.append(event) } }
        }
    }

    deinit { task.cancel() }

    var events: [TickwireEvent] { storage.events.withLock { $0 } }

    /// Waits until `match` finds something in the events so far, polling every 10 ms (the
    /// poll interval is the only sleep); throws after `timeout` saying what was awaited.
    @discardableResult
    func wait<T>(for what: String, timeout: Duration = .seconds(5), _ match: ([TickwireEvent]) -> T?) async throws -> T {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            if let found = match(events) { return found }
            if clock.now >= deadline {
                throw TestFailure("timed out after \(timeout) waiting for \(what); events: \(Self.summary(events))")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    static func summary(_ events: [TickwireEvent]) -> String {
        events.suffix(40).map { event -> String in
            switch event {
            case .state(let s): return "state(\(s))"
            case .message(let m): return "\(m.type)#\(m.seq.map(String.init) ?? "-")"
            case .snapshot(let s): return "snapshot@\(s.seq)"
            case let .synchronized(_, seq, source): return "sync@\(seq) \(source)"
            case let .reconnectScheduled(attempt, delay): return "reconnect#\(attempt) in \(delay)"
            case .diagnostic(let d): return "diag(\(d))"
            }
        }.joined(separator: ", ")
    }
}

extension Array where Element == TickwireEvent {
    var messages: [TickwireEnvelope] {
        compactMap { if case .message(let m) = $0 { return m } else { return nil } }
    }

    var states: [ConnectionState] {
        compactMap { if case .state(let s) = $0 { return s } else { return nil } }
    }

    var snapshots: [TickwireSnapshot] {
        compactMap { if case .snapshot(let s) = $0 { return s } else { return nil } }
    }

    var diagnostics: [TickwireDiagnostic] {
        compactMap { if case .diagnostic(let d) = $0 { return d } else { return nil } }
    }

    var syncs: [(epoch: String, seq: UInt64, source: SyncSource)] {
        compactMap { if case let .synchronized(e, s, source) = $0 { return (e, s, source) } else { return nil } }
    }

    var trades: [(seq: UInt64, trade: TradeExecuted)] {
        messages.compactMap { m in
            if case .tradeExecuted(let t) = m.payload, let seq = m.seq { return (seq, t) }
            return nil
        }
    }

    /// The events after the last one matching `predicate` (all of them if none does).
    func after(last predicate: (TickwireEvent) -> Bool) -> [TickwireEvent] {
        guard let i = lastIndex(where: predicate) else { return self }
        return Array(self[(i + 1)...])
    }
}
