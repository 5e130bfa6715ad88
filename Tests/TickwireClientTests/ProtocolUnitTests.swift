import Foundation
import Testing
@testable import TickwireClient

@Suite("Backoff schedule")
struct BackoffTests {
    @Test func defaultScheduleDoublesToTheCap() {
        var policy = ReconnectPolicy()
        policy.jitter = false
        let delays = (1...8).map { policy.delay(forAttempt: $0) }
        #expect(delays == [1, 2, 4, 8, 16, 30, 30, 30].map { Duration.seconds($0) })
    }

    @Test func specificationScheduleIsFiveTenTwentyThirty() {
        let policy = ReconnectPolicy.specification
        #expect((1...5).map { policy.delay(forAttempt: $0) } == [5, 10, 20, 30, 30].map { Duration.seconds($0) })
        #expect(policy.maxAttempts == 10)
    }

    @Test func fullJitterScalesTheComputedDelay() {
        let policy = ReconnectPolicy()  // jitter on by default
        #expect(policy.delay(forAttempt: 3, random: { 0.5 }) == .seconds(2))
        #expect(policy.delay(forAttempt: 3, random: { 0 }) == .zero)
        #expect(policy.delay(forAttempt: 20, random: { 0.999 }) < .seconds(30))
        for _ in 0..<100 {
            let d = policy.delay(forAttempt: 4)
            #expect(d >= .zero && d < .seconds(8))
        }
    }

    @Test func attemptLimit() {
        let policy = ReconnectPolicy()
        #expect(policy.allows(attempt: 10))
        #expect(!policy.allows(attempt: 11))
        var forever = policy
        forever.maxAttempts = nil
        #expect(forever.allows(attempt: 1_000_000))
    }
}

@Suite("Endpoint and handshake")
struct EndpointTests {
    @Test func parsesWebSocketURLs() throws {
        let e = try TickwireEndpoint(url: "ws://127.0.0.1:8080/ws")
        #expect(e.host == "127.0.0.1" && e.port == 8080 && e.path == "/ws")
        #expect(e.hostHeader == "127.0.0.1:8080")
        #expect(e.defaultSnapshotPath == "/api/snapshot")
        let bare = try TickwireEndpoint(url: "WS://example.com")
        #expect(bare.port == 80 && bare.path == "/ws" && bare.hostHeader == "example.com")
        let v6 = try TickwireEndpoint(url: "ws://[::1]:9000/edge/ws?token=a%20b")
        #expect(v6.host == "::1" && v6.port == 9000 && v6.hostHeader == "[::1]:9000")
        #expect(v6.defaultSnapshotPath == "/edge/api/snapshot")
        #expect(v6.query == "token=a%20b")
    }

    @Test func parsesSecureURLs() throws {
        let e = try TickwireEndpoint(url: "wss://example.com/edge/ws")
        #expect(e.secure && e.port == 443 && e.hostHeader == "example.com" && e.description == "wss://example.com/edge/ws")
        let https = try TickwireEndpoint(url: "HTTPS://127.0.0.1:8443")
        #expect(https.secure && https.port == 8443 && https.hostHeader == "127.0.0.1:8443" && https.path == "/ws")
        // Port 80 is not the default under TLS, so the Host header names it.
        #expect(try TickwireEndpoint(url: "wss://h:80/ws").hostHeader == "h:80")
        #expect(try TickwireEndpoint(url: "ws://h:443/ws").hostHeader == "h:443")
        #expect(TickwireEndpoint(host: "h", secure: true).port == 443)
    }

    @Test func rejectsOtherSchemesAndGarbage() {
        #expect(throws: TickwireClientError.unsupportedScheme("ftp")) { try TickwireEndpoint(url: "ftp://x/ws") }
        #expect(throws: TickwireClientError.self) { try TickwireEndpoint(url: "127.0.0.1:8080") }
        #expect(throws: TickwireClientError.self) { try TickwireEndpoint(url: "ws://:80/ws") }
        #expect(throws: TickwireClientError.self) { try TickwireEndpoint(url: "ws://h:99999/ws") }
    }

    @Test func resumeTargetCarriesEpochSeqAndSubscription() throws {
        let e = try TickwireEndpoint(url: "ws://h:1/ws?token=t")
        #expect(e.target(resume: nil, subscription: .everything) == "/ws?token=t")
        let sub = TickwireSubscription(channels: [.tradeExecuted, .marketData], symbols: ["BTC/USDT", "ETHUSDT"])
        #expect(e.target(resume: ("9f0c2a51d4e8b736", 1042), subscription: sub)
            == "/ws?token=t&epoch=9f0c2a51d4e8b736&since=1042&channels=MarketData,TradeExecuted&symbols=BTC%2FUSDT,ETHUSDT")
        // Nothing subscribed is an explicit empty channel list, never "everything".
        #expect(e.target(resume: nil, subscription: TickwireSubscription(channels: [])) == "/ws?token=t&channels=")
    }

    @Test func handshakeRequestAndAcceptCheck() throws {
        // RFC 6455 §1.3's example key.
        let handshake = ClientHandshake(key: "dGhlIHNhbXBsZSBub25jZQ==")
        let request = String(decoding: handshake.request(hostHeader: "h:1", target: "/ws?x=1"), as: UTF8.self)
        #expect(request.hasPrefix("GET /ws?x=1 HTTP/1.1\r\nHost: h:1\r\n"))
        #expect(request.contains("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"))
        #expect(request.hasSuffix("\r\n\r\n"))

        func head(_ text: String) throws -> HTTPResponseHead {
            guard case .head(let h) = HTTPResponseHead.parse(Array(text.utf8)) else { throw TestFailure("no head") }
            return h
        }
        let good = try head("HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        #expect(handshake.problem(with: good) == nil)
        let wrongKey = try head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
        #expect(handshake.problem(with: wrongKey)?.contains("Sec-WebSocket-Accept") == true)
        let refused = try head("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        #expect(handshake.problem(with: refused)?.contains("503") == true)
        let extra = try head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        #expect(handshake.problem(with: extra) != nil)
        #expect(HTTPResponseHead.parse(Array("HTTP/1.1 101 Switching".utf8)) == .needMore)
        if case .invalid = HTTPResponseHead.parse(Array("SSH-2.0-OpenSSH\r\n\r\n".utf8)) {} else { Issue.record("accepted a non-HTTP answer") }
    }

    @Test func randomKeysAreSixteenBytes() {
        var rng = SystemRandomNumberGenerator()
        let a = ClientHandshake(using: &rng).key
        let b = ClientHandshake(using: &rng).key
        #expect(a.utf8.count == 24 && a.hasSuffix("==") && a != b)
    }

    @Test func chunkedBodies() throws {
        var parts: [[UInt8]] = [Array("llo\r\n0\r\n\r\n".utf8)]
        let body = try HTTPExchange.dechunk(Array("5;x=y\r\nhe".utf8), more: { parts.isEmpty ? nil : parts.removeFirst() }, limit: 100)
        #expect(String(decoding: body, as: UTF8.self) == "hello")
    }
}

@Suite("Message decoding")
struct MessageDecodingTests {
    let codec = MessageCodec()

    func decode(_ json: String) throws -> TickwireEnvelope {
        try codec.decodeMessage(Array(json.utf8)).get()
    }

    @Test func everyServerTypeDecodes() throws {
        let connected = try decode(#"{"type":"Connected","seq":7,"data":{"epoch":"9f0c2a51d4e8b736","seq":7,"heartbeat_interval_ms":30000,"server":"tickwire/0.1.0"},"message":"WebSocket connection established","timestamp":"2026-11-27T17:09:58.123Z"}"#)
        #expect(connected.payload == .connected(ConnectedInfo(epoch: "9f0c2a51d4e8b736", seq: 7, heartbeatIntervalMs: 30000, server: "tickwire/0.1.0")))
        #expect(connected.seq == 7 && connected.message == "WebSocket connection established")
        #expect(connected.timestampMilliseconds == 1_795_799_398_123)

        let market = try decode(#"{"type":"MarketData","seq":8,"data":{"symbol":"BTCUSDT","price":50250.75,"price_change_24h":250.5,"price_change_percent_24h":0.5,"volume_24h":10000.0,"timestamp":1609459200000,"high_24h":1}}"#)
        #expect(market.payload == .marketData(MarketData(symbol: "BTCUSDT", price: 50250.75, priceChange24h: 250.5, priceChangePercent24h: 0.5, volume24h: 10000, timestamp: 1_609_459_200_000)))
        #expect(market.payload.channel == .marketData && market.payload.symbol == "BTCUSDT")

        let chart = try decode(#"{"type":"ChartUpdate","seq":9,"data":{"symbol":"BTCUSDT","timeframe":"1m","candle":{"timestamp":1609459200000,"open":50000.0,"high":50500.0,"low":49500.0,"close":50250.0,"volume":1000.0,"is_closed":true},"latest_price":50250.0,"price_change_24h":250.0,"price_change_percent_24h":0.5,"volume_24h":10000.0,"timestamp":1609459200000}}"#)
        guard case .chartUpdate(let c) = chart.payload else { throw TestFailure("not a chart update") }
        #expect(c.candle == Candle(timestamp: 1_609_459_200_000, open: 50000, high: 50500, low: 49500, close: 50250, volume: 1000, isClosed: true))

        let position = try decode(#"{"type":"PositionUpdate","seq":10,"data":{"symbol":"BTCUSDT","side":"LONG","pnl":250.5,"current_price":50250.0,"unrealized_pnl":125.25,"timestamp":1,"quantity":0.5,"entry_price":50000,"status":"OPEN"}}"#)
        guard case .positionUpdate(let p) = position.payload else { throw TestFailure("not a position") }
        #expect(p.side == .long && p.status == .open && p.entryPrice == 50000)

        let trade = try decode(#"{"type":"TradeExecuted","seq":11,"data":{"symbol":"BTCUSDT","side":"BUY","quantity":0.5,"price":50000.0,"timestamp":1}}"#)
        #expect(trade.payload == .tradeExecuted(TradeExecuted(symbol: "BTCUSDT", side: .buy, quantity: 0.5, price: 50000, timestamp: 1, pnl: nil)))

        let signal = try decode(#"{"type":"AISignalReceived","seq":12,"data":{"symbol":"ETHUSDT","signal":"long","confidence":0.85,"timestamp":1,"model_type":"LSTM","timeframe":"1h","reasoning":"momentum","strategy_scores":{"rsi":0.8,"macd":0.9}}}"#)
        guard case .aiSignalReceived(let s) = signal.payload else { throw TestFailure("not a signal") }
        #expect(s.signal == .long && s.strategyScores["macd"] == 0.9)

        let status = try decode(#"{"type":"BotStatusUpdate","seq":13,"data":{"status":"running","active_positions":3,"total_pnl":1250.75,"total_trades":42,"uptime":86400}}"#)
        #expect(status.payload == .botStatusUpdate(BotStatus(status: "running", activePositions: 3, totalPnl: 1250.75, totalTrades: 42, uptime: 86400)))
        #expect(status.payload.symbol == nil)

        let error = try decode(#"{"type":"Error","seq":13,"data":{"message":"unknown channel: x","code":"UNKNOWN_CHANNEL","details":{"channels":["x"]}}}"#)
        guard case .error(let e) = error.payload else { throw TestFailure("not an error") }
        #expect(e.code == "UNKNOWN_CHANNEL" && e.details?["channels"] == .array([.string("x")]))

        #expect(try decode(#"{"type":"Pong","seq":13,"timestamp":"2026-11-27T17:09:58.123Z"}"#).payload == .pong)

        let confirmed = try decode(#"{"type":"SubscriptionConfirmed","seq":13,"data":{"channels":["TradeExecuted"],"symbols":[],"recovered":true,"replayed":2,"epoch":"e","head":15}}"#)
        guard case .subscriptionConfirmed(let sc) = confirmed.payload else { throw TestFailure("not a confirmation") }
        #expect(sc.recovered == true && sc.replayed == 2 && sc.knownChannels == [.tradeExecuted])
    }

    @Test func unknownTypesAreKeptForForwardCompatibility() throws {
        let m = try decode(#"{"type":"FundingRate","seq":3,"data":{"symbol":"BTCUSDT","rate":0.0001}}"#)
        #expect(m.payload == .unknown(type: "FundingRate", data: .object(["symbol": .string("BTCUSDT"), "rate": .number(0.0001)])))
        #expect(m.payload.symbol == "BTCUSDT")
    }

    @Test func invalidMessagesBecomeDiagnostics() {
        guard case .failure(let missing) = codec.decodeMessage(Array(#"{"type":"TradeExecuted","seq":5,"data":{"symbol":"BTCUSDT"}}"#.utf8)) else {
            Issue.record("accepted a trade without side")
            return
        }
        #expect(missing.kind == .invalidMessage && missing.seq == 5)
        #expect(missing.message.contains("TradeExecuted") && missing.message.contains("missing field"))
        for bad in ["not json", "[1,2]", #"{"seq":1}"#, #"{"type":"X","data":[1]}"#, #"{"type":"MarketData","data":"x"}"#] {
            guard case .failure(let d) = codec.decodeMessage(Array(bad.utf8)) else {
                Issue.record("accepted \(bad)")
                continue
            }
            #expect(d.kind == .invalidMessage && d.raw == bad)
        }
    }

    @Test func clientMessagesAreCompactJSON() throws {
        #expect(String(decoding: try codec.encodeMessage(type: "Ping", data: nil), as: UTF8.self) == #"{"type":"Ping"}"#)
        let subscribe = try codec.encodeMessage(type: "Subscribe", data: ["channels": ["TradeExecuted"], "symbols": ["BTCUSDT"]])
        #expect(String(decoding: subscribe, as: UTF8.self) == #"{"data":{"channels":["TradeExecuted"],"symbols":["BTCUSDT"]},"type":"Subscribe"}"#)
    }

    @Test func snapshotEntriesDecodeAndFilter() throws {
        let json = #"""
        {"epoch":"e1","seq":20,"market":{"BTCUSDT":{"type":"MarketData","seq":18,"data":{"symbol":"BTCUSDT","price":1,"price_change_24h":0,"price_change_percent_24h":0,"volume_24h":0,"timestamp":1},"timestamp":"2026-01-01T00:00:00.000Z"}},
         "charts":{},"positions":[],"bot_status":null,
         "recent_trades":[{"type":"TradeExecuted","seq":20,"data":{"symbol":"ETHUSDT","side":"SELL","quantity":1,"price":2,"timestamp":1}},{"type":"TradeExecuted","seq":19,"data":{"symbol":"BTCUSDT"}}],
         "ai_signals":[],"timestamp":"2026-01-01T00:00:00.000Z"}
        """#
        let snapshot = try codec.decodeSnapshot(Array(json.utf8))
        #expect(snapshot.epoch == "e1" && snapshot.seq == 20)
        #expect(snapshot.market["BTCUSDT"]?.seq == 18)
        #expect(snapshot.recentTrades.map(\.seq) == [20])
        #expect(snapshot.skippedEntries.count == 1)
        #expect(snapshot.allEntries.map(\.seq) == [18, 20])
        let eth = snapshot.filtered(by: TickwireSubscription(symbols: ["ETHUSDT"]))
        #expect(eth.market.isEmpty && eth.recentTrades.count == 1)
    }
}

@Suite("Stream synchronizer")
struct StreamSynchronizerTests {
    func env(_ type: String, _ seq: UInt64, _ payload: TickwireMessage) -> TickwireEnvelope {
        TickwireEnvelope(type: type, seq: seq, payload: payload)
    }

    func trade(_ seq: UInt64) -> TickwireEnvelope {
        env("TradeExecuted", seq, .tradeExecuted(TradeExecuted(symbol: "BTCUSDT", side: .buy, quantity: 1, price: 1, timestamp: Int64(seq))))
    }

    func connected(_ epoch: String, _ seq: UInt64) -> TickwireEnvelope {
        env("Connected", seq, .connected(ConnectedInfo(epoch: epoch, seq: seq, heartbeatIntervalMs: 30000)))
    }

    func confirmed(recovered: Bool?, replayed: Int? = nil, seq: UInt64) -> TickwireEnvelope {
        env("SubscriptionConfirmed", seq, .subscriptionConfirmed(SubscriptionConfirmed(channels: [], symbols: [], recovered: recovered, replayed: replayed)))
    }

    func delivered(_ actions: [StreamSynchronizer.Action]) -> [UInt64] {
        actions.compactMap { if case .deliver(let m) = $0, m.type == "TradeExecuted" { return m.seq } else { return nil } }
    }

    @Test func firstConnectLoadsTheSnapshotAndDropsWhatItCovers() {
        var sync = StreamSynchronizer()
        sync.connectionStarted(resuming: false)
        #expect(sync.receive(connected("e", 10)).contains(.loadSnapshot))
        #expect(sync.receive(trade(11)).isEmpty)  // buffered while loading
        #expect(sync.receive(trade(12)).isEmpty)
        guard case .applied(let actions) = sync.snapshotLoaded(TickwireSnapshot(epoch: "e", seq: 11)) else {
            Issue.record("snapshot not applied")
            return
        }
        #expect(actions.first == .deliverSnapshot(TickwireSnapshot(epoch: "e", seq: 11)))
        #expect(actions.contains(.synchronized(epoch: "e", seq: 11, source: .snapshot)))
        #expect(delivered(actions) == [12])
        #expect(sync.duplicatesDropped == 1)
        #expect(delivered(sync.receive(trade(12))).isEmpty)  // a duplicate
        #expect(delivered(sync.receive(trade(13))) == [13])
        #expect(sync.resumePoint! == ("e", 13))
    }

    @Test func snapshotOlderThanTheStreamIsRejected() {
        var sync = StreamSynchronizer()
        sync.connectionStarted(resuming: false)
        _ = sync.receive(connected("e", 10))
        #expect(sync.snapshotLoaded(TickwireSnapshot(epoch: "e", seq: 9)) != .ignored)
        if case .applied = sync.snapshotLoaded(TickwireSnapshot(epoch: "e", seq: 9)) { Issue.record("applied an old snapshot") }
        if case .applied = sync.snapshotLoaded(TickwireSnapshot(epoch: "other", seq: 20)) { Issue.record("applied another epoch") }
        guard case .applied = sync.snapshotLoaded(TickwireSnapshot(epoch: "e", seq: 10)) else {
            Issue.record("rejected a fitting snapshot")
            return
        }
        #expect(sync.snapshotLoaded(TickwireSnapshot(epoch: "e", seq: 10)) == .ignored)
    }

    @Test func resumeRecoveredReplaysWithoutSnapshot() {
        var sync = StreamSynchronizer()
        sync.connectionStarted(resuming: false)
        _ = sync.receive(connected("e", 0))
        _ = sync.snapshotLoaded(TickwireSnapshot(epoch: "e", seq: 5))
        sync.connectionEnded()
        sync.connectionStarted(resuming: true)
        #expect(!sync.receive(connected("e", 5)).contains(.loadSnapshot))
        let confirmation = sync.receive(confirmed(recovered: true, replayed: 2, seq: 5))
        #expect(confirmation.contains(.synchronized(epoch: "e", seq: 5, source: .resumed(replayed: 2))))
        #expect(delivered(sync.receive(trade(6)) + sync.receive(trade(7))) == [6, 7])
    }

    @Test func resumeNotRecoveredOrNewEpochLoadsTheSnapshot() {
        var sync = StreamSynchronizer()
        sync.setResumePointForTesting(epoch: "e", seq: 5)
        sync.connectionStarted(resuming: true)
        _ = sync.receive(connected("e", 50))
        #expect(sync.receive(confirmed(recovered: false, seq: 50)).contains(.loadSnapshot))

        sync.connectionEnded()
        sync.connectionStarted(resuming: true)
        #expect(sync.receive(connected("restarted", 0)).contains(.loadSnapshot))
    }

    @Test func errorsAreNeverDroppedAndStartWithoutSnapshotWhenAsked() {
        var sync = StreamSynchronizer(loadSnapshotOnFirstConnect: false)
        sync.connectionStarted(resuming: false)
        let greeting = sync.receive(connected("e", 10))
        #expect(greeting.contains(.synchronized(epoch: "e", seq: 10, source: .live)))
        #expect(delivered(sync.receive(trade(11))) == [11])
        // A per-connection error repeats the seq of the message before it.
        let perConnection = env("Error", 11, .error(ErrorData(message: "bad", code: "INVALID_JSON")))
        #expect(sync.receive(perConnection) == [.deliver(perConnection)])
        #expect(sync.seq == 11)
        // A broadcast error takes the next seq.
        let broadcast = env("Error", 12, .error(ErrorData(message: "feed down", code: "FEED")))
        #expect(sync.receive(broadcast) == [.deliver(broadcast)])
        #expect(sync.seq == 12)
        #expect(delivered(sync.receive(trade(12))).isEmpty)
    }

    @Test func confirmationTimeoutFallsBackToTheSnapshot() {
        var sync = StreamSynchronizer()
        sync.setResumePointForTesting(epoch: "e", seq: 5)
        sync.connectionStarted(resuming: true)
        _ = sync.receive(connected("e", 7))
        #expect(sync.confirmationTimedOut() == [.loadSnapshot])
        #expect(sync.confirmationTimedOut().isEmpty)
    }

    @Test func subscriptionChangeReloadsAfterItsConfirmation() {
        var sync = StreamSynchronizer(loadSnapshotOnFirstConnect: false)
        sync.connectionStarted(resuming: false)
        _ = sync.receive(connected("e", 1))
        sync.subscriptionChangeSent()
        #expect(sync.receive(confirmed(recovered: nil, seq: 1)).contains(.loadSnapshot))
        #expect(sync.phase == .loadingSnapshot)
    }

    @Test func iso8601Milliseconds() {
        #expect(ISO8601Milliseconds.parse("1970-01-01T00:00:00.000Z") == 0)
        #expect(ISO8601Milliseconds.parse("2021-01-01T00:00:00Z") == 1_609_459_200_000)
        #expect(ISO8601Milliseconds.parse("2021-01-01T00:00:00.5Z") == 1_609_459_200_500)
        #expect(ISO8601Milliseconds.parse("2021-01-01 00:00:00Z") == nil)
    }
}
