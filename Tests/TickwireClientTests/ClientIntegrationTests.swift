import EdgeServer
import Foundation
import Testing
@testable import TickwireClient

/// Against a real in-process server on loopback. Serialized: each test starts a server
/// with two reactor threads, and the machine may have only two cores.
@Suite("Client against a live server", .serialized, .timeLimit(.minutes(1)))
struct ClientIntegrationTests {
    /// Fast reconnects for tests: fixed 200 ms, so a "while away" window exists but is short.
    static func configuration(_ change: (inout TickwireClient.Configuration) -> Void = { _ in }) -> TickwireClient.Configuration {
        var c = TickwireClient.Configuration()
        c.reconnect = ReconnectPolicy(initialDelay: .milliseconds(200), factor: 1, maxDelay: .milliseconds(200), maxAttempts: 5, jitter: false)
        c.connectTimeout = .seconds(3)
        c.snapshotTimeout = .seconds(3)
        change(&c)
        return c
    }

    @Test func connectsAndReceivesTypedMessages() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        #expect(recorder.events.states.prefix(2) == [.connecting, .connected])
        #expect(recorder.events.snapshots.count == 1)  // first connect loads the snapshot
        #expect(await client.epoch == server.server.epoch)

        let seqs = try await server.publish(batch([
            tradeJSON("BTCUSDT", n: 1),
            marketJSON("ETHUSDT", price: 3000.5),
            #"{"type":"BotStatusUpdate","data":{"status":"running","active_positions":1,"total_pnl":5.5,"total_trades":2,"uptime":60}}"#,
        ]))
        let got = try await recorder.wait(for: "three messages") { events -> [TickwireEnvelope]? in
            let m = events.messages.filter { $0.payload.channel != nil }
            return m.count >= 3 ? m : nil
        }
        #expect(got.map(\.seq) == seqs.map { Optional($0) })
        #expect(got[0].payload == .tradeExecuted(TradeExecuted(symbol: "BTCUSDT", side: .buy, quantity: 0.5, price: 50000, timestamp: 1, pnl: 1)))
        guard case .marketData(let md) = got[1].payload else { throw TestFailure("expected MarketData, got \(got[1].payload)") }
        #expect(md.symbol == "ETHUSDT" && md.price == 3000.5)
        guard case .botStatusUpdate(let bot) = got[2].payload else { throw TestFailure("expected BotStatusUpdate") }
        #expect(bot.totalTrades == 2)
        #expect(got.allSatisfy { $0.timestampMilliseconds != nil })
        #expect(await client.lastSeq == seqs.last)

        await client.shutdown()
        try await recorder.wait(for: "disconnected") { $0.states.last == .disconnected ? true : nil }
        await server.stop()
    }

    @Test func invalidMessagesAreSkippedAndErrorsDelivered() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }

        // The server accepts any data object; a trade without its fields cannot be typed.
        let seqs = try await server.publish(batch([#"{"type":"TradeExecuted","data":{"symbol":"BTCUSDT"}}"#, tradeJSON(n: 2)]))
        let trades = try await recorder.wait(for: "the valid trade") { $0.trades.isEmpty ? nil : $0.trades }
        #expect(trades.map(\.seq) == [seqs[1]])
        let invalid = try #require(recorder.events.diagnostics.first { $0.kind == .invalidMessage })
        #expect(invalid.seq == seqs[0] && invalid.message.contains("'TradeExecuted'"))
        #expect(await client.statistics.invalidMessages == 1)

        // A per-connection Error repeats an old seq and is still delivered.
        try await client.send(type: "Subscribe", data: ["channels": ["nope"]])
        let error = try await recorder.wait(for: "the UNKNOWN_CHANNEL error") { events in
            events.messages.lazy.compactMap { m -> (UInt64?, ErrorData)? in
                if case .error(let e) = m.payload { return (m.seq, e) } else { return nil }
            }.first
        }
        #expect(error.1.code == "UNKNOWN_CHANNEL")
        #expect(error.0 == seqs[1])
        await client.shutdown()
        await server.stop()
    }

    @Test func heartbeatPingsAreAnswered() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration { $0.heartbeatInterval = .milliseconds(100) })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "two Pongs") { events in
            events.messages.filter { $0.payload == .pong }.count >= 2 ? true : nil
        }
        #expect(recorder.events.diagnostics.isEmpty)

        // The client itself is the event sequence; shutdown() ends it, which bounds the wait
        // (the sleep is that deadline, cancelled as soon as a Pong arrives).
        let watchdog = Task {
            try await Task.sleep(for: .seconds(5))
            await client.shutdown()
        }
        var sawPong = false
        for await event in client {
            if case .message(let m) = event, m.payload == .pong {
                sawPong = true
                break
            }
        }
        watchdog.cancel()
        #expect(sawPong)
        await client.shutdown()
        await server.stop()
    }

    @Test func serverPingsAreAnswered() async throws {
        // The server closes a connection that sends nothing, not even a pong, for 300 ms;
        // the client's own heartbeat is far slower, so only its pongs keep the link up.
        let server = try LiveServer {
            $0.pingIntervalMilliseconds = 100
            $0.idleTimeoutMilliseconds = 300
        }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration {
            $0.heartbeatInterval = .seconds(30)
            $0.staleTimeout = .seconds(30)
        })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        // What is tested is that nothing happens for three idle timeouts: this sleep is the
        // observation window, not a wait for something to happen.
        try await Task.sleep(for: .seconds(1))
        #expect(recorder.events.diagnostics.isEmpty)
        #expect(!recorder.events.states.contains(.reconnecting))
        #expect(await client.state == .connected)
        await client.shutdown()
        await server.stop()
    }

    @Test func staleConnectionIsReplacedAndResumed() async throws {
        // Nothing is published and the heartbeat is slow, so the link falls silent.
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration {
            $0.heartbeatInterval = .seconds(30)
            $0.staleTimeout = .milliseconds(300)
        })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        let stale = try await recorder.wait(for: "a stale diagnostic") { $0.diagnostics.first { $0.kind == .stale } }
        #expect(stale.message.contains("nothing received"))
        let resumed = try await recorder.wait(for: "the resume") { events in
            events.syncs.first { if case .resumed = $0.source { return true } else { return false } }
        }
        #expect(resumed.source == .resumed(replayed: 0))
        await client.shutdown()
        await server.stop()
    }

    @Test func subscriptionFiltersChannelsAndSymbols() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }

        try await client.subscribe(channels: [.tradeExecuted], symbols: ["ETHUSDT"])
        let confirmation = try await recorder.wait(for: "SubscriptionConfirmed") { events in
            events.messages.lazy.compactMap { m -> SubscriptionConfirmed? in
                if case .subscriptionConfirmed(let c) = m.payload { return c } else { return nil }
            }.first
        }
        #expect(confirmation.channels == ["TradeExecuted"] && confirmation.symbols == ["ETHUSDT"])
        // The confirmation is followed by a snapshot reload, filtered by the subscription.
        try await recorder.wait(for: "the resync") { $0.syncs.count >= 2 ? true : nil }
        let resync = try #require(recorder.events.snapshots.last)
        #expect(resync.market.isEmpty)

        let seqs = try await server.publish(batch([
            tradeJSON("BTCUSDT", n: 1), marketJSON("ETHUSDT", price: 1), tradeJSON("ETHUSDT", n: 2), tradeJSON("ETHUSDT", n: 3),
        ]))
        let trades = try await recorder.wait(for: "two ETH trades") { $0.trades.count >= 2 ? $0.trades : nil }
        #expect(trades.map(\.seq) == [seqs[2], seqs[3]])
        #expect(trades.allSatisfy { $0.trade.symbol == "ETHUSDT" })
        #expect(!recorder.events.messages.contains { if case .marketData = $0.payload { return true } else { return false } })

        // Removing the last symbol leaves nothing, and the client remembers that.
        try await client.unsubscribe(symbols: ["ETHUSDT"])
        #expect(await client.subscription.channels == [])
        await #expect(throws: TickwireClientError.self) { try await client.unsubscribe(symbols: ["X"]) }
        await client.shutdown()
        await server.stop()
    }

    @Test func resumesLosslesslyAfterALostConnection() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }

        var published = try await server.publish(batch((1...3).map { tradeJSON(n: $0) }))
        try await recorder.wait(for: "three live trades") { $0.trades.count >= 3 ? true : nil }

        await client.dropConnectionForTesting()
        try await recorder.wait(for: "reconnecting") { $0.states.last == .reconnecting ? true : nil }
        published += try await server.publish(batch((4...8).map { tradeJSON(n: $0) }))  // while away

        let resumed = try await recorder.wait(for: "the resume") { events in
            events.syncs.first { if case .resumed = $0.source { return true } else { return false } }
        }
        #expect(resumed.source == .resumed(replayed: 5))
        published += try await server.publish(batch((9...10).map { tradeJSON(n: $0) }))  // live again

        let trades = try await recorder.wait(for: "all ten trades") { $0.trades.count >= 10 ? $0.trades : nil }
        // A marker published after everything: the stream is in seq order, so a duplicate
        // trade would arrive before it. Waiting for the marker replaces "wait and hope".
        let marker = try await server.publish(#"{"type":"BotStatusUpdate","data":{"status":"marker","active_positions":0,"total_pnl":0,"total_trades":10,"uptime":1}}"#)
        try await recorder.wait(for: "the marker") { $0.messages.contains { $0.seq == marker.first } ? true : nil }
        #expect(recorder.events.trades.count == 10)  // no duplicate came later
        #expect(trades.map(\.seq) == published)  // no gap, no duplicate, in order
        #expect(trades.map(\.trade.timestamp) == Array(1...10))
        #expect(recorder.events.snapshots.count == 1)  // only the first connect loaded one
        #expect(await client.lastSeq == marker.last)
        #expect(await client.statistics.reconnects == 1)
        await client.shutdown()
        await server.stop()
    }

    @Test func reloadsTheSnapshotWhenTheServerCannotReplay() async throws {
        let server = try LiveServer { $0.historySize = 5 }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        let first = try await server.publish(tradeJSON(n: 1))
        try await recorder.wait(for: "a live trade") { $0.trades.count >= 1 ? true : nil }

        await client.dropConnectionForTesting()
        try await recorder.wait(for: "reconnecting") { $0.states.last == .reconnecting ? true : nil }
        let away = try await server.publish(batch((2...12).map { tradeJSON(n: $0) }))  // more than the history holds

        let confirmation = try await recorder.wait(for: "recovered: false") { events in
            events.messages.lazy.compactMap { m -> SubscriptionConfirmed? in
                if case .subscriptionConfirmed(let c) = m.payload, c.recovered != nil { return c } else { return nil }
            }.first
        }
        #expect(confirmation.recovered == false)
        let reload = try await recorder.wait(for: "the snapshot reload") { $0.snapshots.count >= 2 ? $0.snapshots.last : nil }
        #expect(reload.seq == away.last)
        #expect(reload.recentTrades.first?.seq == away.last)  // newest first
        #expect(reload.recentTrades.count == 12)
        try await recorder.wait(for: "the sync from the snapshot") { events in
            events.syncs.last.map { $0.source == .snapshot && $0.seq == away.last! } == true ? true : nil
        }

        let live = try await server.publish(tradeJSON(n: 13))
        try await recorder.wait(for: "the next live trade") { $0.trades.last?.seq == live.first ? true : nil }
        // Nothing the snapshot covers is delivered again after it.
        let afterReload = recorder.events.after { if case .snapshot = $0 { return true } else { return false } }
        #expect(afterReload.trades.map(\.seq) == live)
        #expect(recorder.events.trades.map(\.seq) == first + live)
        await client.shutdown()
        await server.stop()
    }

    @Test func unknownEpochLeadsToASnapshot() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        await client.setResumePointForTesting(epoch: "0123456789abcdef", seq: 3)
        await client.dropConnectionForTesting()
        let sync = try await recorder.wait(for: "the second sync") { $0.syncs.count >= 2 ? $0.syncs.last : nil }
        #expect(sync.source == .snapshot && sync.epoch == server.server.epoch)
        #expect(recorder.events.snapshots.count == 2)
        await client.shutdown()
        await server.stop()
    }

    @Test func disconnectStopsReconnecting() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        await client.disconnect()
        #expect(await client.state == .disconnected)
        _ = try await server.publish(tradeJSON(n: 1))
        // "Nothing arrives and no reconnect is scheduled": the sleep is the observation
        // window (2.5 reconnect delays of 200 ms), not a wait for something to happen.
        try await Task.sleep(for: .milliseconds(500))
        #expect(!recorder.events.contains { if case .reconnectScheduled = $0 { return true } else { return false } })
        #expect(recorder.events.trades.isEmpty)

        // connect() resumes from where it stopped: the trade published meanwhile arrives.
        await client.connect()
        let trades = try await recorder.wait(for: "the missed trade") { $0.trades.isEmpty ? nil : $0.trades }
        #expect(trades.count == 1)
        #expect(recorder.events.syncs.last?.source == .resumed(replayed: 1))
        await client.shutdown()
        await server.stop()
    }

    @Test func givesUpAfterMaxAttemptsWhenTheServerIsGone() async throws {
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration {
            $0.reconnect = ReconnectPolicy(initialDelay: .milliseconds(20), factor: 2, maxDelay: .milliseconds(100), maxAttempts: 3, jitter: true)
        })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }

        await server.stop()  // closes with 1001, then the port is closed
        try await recorder.wait(for: "giving up", timeout: .seconds(10)) { $0.states.last == .disconnected ? true : nil }
        let events = recorder.events
        let attempts = events.compactMap { if case .reconnectScheduled(let a, _) = $0 { return a } else { return nil } }
        #expect(attempts == [1, 2, 3])
        #expect(events.diagnostics.first?.closeCode == 1001)
        #expect(events.diagnostics.filter { $0.kind == .connectFailed }.count == 3)
        #expect(events.diagnostics.last?.kind == .gaveUp)
        #expect(events.states.suffix(7) == [.reconnecting, .connecting, .reconnecting, .connecting, .reconnecting, .connecting, .disconnected])
        #expect(await client.state == .disconnected)
        await client.shutdown()
    }
}
