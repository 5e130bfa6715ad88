import Foundation
import Testing
@testable import EdgeServer

@Suite struct StreamProtocolTests {
    @Test func connectedCarriesEpochSeqAndHeartbeat() throws {
        let server = try TestServer { $0.pingIntervalMilliseconds = 15_000; $0.idleTimeoutMilliseconds = 40_000 }
        _ = try acceptedSeqs(publish(server.port, marketData("BTCUSDT", 1)))
        let client = try StreamClient(port: server.port)
        let hello = try client.next()
        #expect(hello.type == "Connected")
        #expect(hello["message"] as? String == "WebSocket connection established")
        #expect(hello.data?["epoch"] as? String == server.server.epoch)
        #expect((hello.data?["heartbeat_interval_ms"] as? NSNumber)?.intValue == 15_000)
        #expect((hello.data?["seq"] as? NSNumber)?.intValue == 1)
        #expect(hello.seq == 1)
        let ts = hello["timestamp"] as? String ?? ""
        #expect(ts.count == 24 && ts.hasSuffix("Z") && ts.contains("."))
    }

    @Test func publishedMessageArrivesAsTheSpecEnvelope() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        let r = try publish(server.port, #"{"type":"TradeExecuted","data":{"symbol":"BTCUSDT","side":"BUY","quantity":0.5,"price":50000.0,"timestamp":1609459200000,"pnl":250.5}}"#)
        #expect(r.status == 202)
        #expect(r.text == #"{"accepted":1,"seqs":[1]}"#)
        let frame = try client.ws.readMessage()
        // Compact JSON, the data bytes forwarded exactly as sent.
        #expect(frame.text.hasPrefix(#"{"type":"TradeExecuted","seq":1,"data":{"symbol":"BTCUSDT","side":"BUY","quantity":0.5,"price":50000.0,"timestamp":1609459200000,"pnl":250.5},"timestamp":""#))
        #expect(frame.text.hasSuffix("Z\"}"))
    }

    @Test func batchesKeepOrderAndConsecutiveSeqs() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        let batch = "[" + (0..<50).map { marketData("ETHUSDT", Double($0), counter: $0) }.joined(separator: ",") + "]"
        let seqs = try acceptedSeqs(publish(server.port, batch))
        #expect(seqs == Array(1...50))
        for i in 0..<50 {
            let m = try client.next()
            #expect(m.seq == i + 1)
            #expect((m.data?["n"] as? NSNumber)?.intValue == i)
        }
    }

    @Test func publishRejections() throws {
        let server = try TestServer()
        func check(_ body: String, _ status: Int, _ fragment: String, contentType: String = "application/json") throws {
            let r = try publish(server.port, body, contentType: contentType)
            #expect(r.status == status, "\(body): \(r.text)")
            #expect(r.text.contains(fragment), "\(r.text)")
            #expect(r.text.hasPrefix("{\"status\":\(status),"))
        }
        try check("{not json", 400, "body is not valid JSON")
        try check(#"{"data":{}}"#, 400, "missing string field 'type'")
        try check(#"{"type":"Connected","data":{}}"#, 400, "'Connected' is not a publishable type")
        try check(#"{"type":"MarketData","data":[1]}"#, 400, "'data' must be an object")
        try check(#"{"type":"MarketData"}"#, 400, "'data' must be an object")
        try check("[]", 400, "empty array")
        try check("42", 400, "must be a message object or an array")
        try check("[" + marketData("A", 1) + #",{"type":"Nope","data":{}}]"#, 400, "message 1: 'Nope'")
        try check(marketData("A", 1), 415, "Content-Type must be application/json", contentType: "text/plain")
        // A bad batch publishes nothing: the next good message gets seq 1.
        #expect(try acceptedSeqs(publish(server.port, marketData("A", 1))) == [1])
    }

    @Test func publishBodyLimitGives413() throws {
        let server = try TestServer { $0.maxRequestBodyBytes = 1000 }
        let r = try publish(server.port, trade("BTCUSDT", 1, pad: 2000))
        #expect(r.status == 413)
    }

    @Test func publishTokenIsRequiredWhenSet() throws {
        let token = "s3cret-token-0123456789"
        let server = try TestServer { $0.publishToken = token }
        #expect(try publish(server.port, marketData("A", 1)).status == 401)
        let wrong = try publish(server.port, marketData("A", 1), token: "nope-nope-nope-nope")
        #expect(wrong.status == 401)
        #expect(wrong.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
        #expect(try publish(server.port, marketData("A", 1), token: token).status == 202)
    }

    @Test func pingPongAndErrorsKeepTheConnection() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Ping","timestamp":"2025-01-01T00:00:00Z"}"#)
        #expect(try client.next().type == "Pong")
        try client.send("{oops")
        let invalid = try client.next()
        #expect(invalid.type == "Error")
        #expect(invalid.data?["code"] as? String == "INVALID_JSON")
        #expect((invalid.data?["message"] as? String)?.contains("not valid JSON") == true)
        try client.send(#"{"data":{}}"#)
        #expect(try client.next().data?["code"] as? String == "INVALID_MESSAGE")
        try client.send(#"{"type":7}"#)
        #expect(try client.next().data?["code"] as? String == "INVALID_MESSAGE")
        try client.ws.send(opcode: 2, [1, 2, 3])
        #expect(try client.next().data?["code"] as? String == "INVALID_MESSAGE")
        // Unknown types are ignored (forward compatibility): the next Ping still gets its Pong.
        try client.send(#"{"type":"SomethingNew","data":{"x":1}}"#)
        try client.send(#"{"type":"Ping"}"#)
        #expect(try client.next().type == "Pong")
        #expect(server.server.counters().parseErrors == 4)
    }

    @Test func oversizeClientMessageCloses1009() throws {
        let server = try TestServer { $0.maxMessageSize = 4096 }
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Ping","pad":""# + String(repeating: "a", count: 5000) + #""}"#)
        #expect(try client.ws.readClose().closeCode == 1009)
    }
}

@Suite struct SubscriptionTests {
    func publishMix(_ port: Int) throws {
        let batch = [
            marketData("BTCUSDT", 1), marketData("ETHUSDT", 2),
            trade("BTCUSDT", 1), trade("SOLUSDT", 2),
            #"{"type":"BotStatusUpdate","data":{"status":"running","active_positions":1,"total_pnl":1.0,"total_trades":2,"uptime":5}}"#,
            #"{"type":"PositionUpdate","data":{"symbol":"ETHUSDT","side":"LONG","pnl":1.0,"current_price":2.0,"unrealized_pnl":1.0,"timestamp":1}}"#,
            #"{"type":"AISignalReceived","data":{"symbol":"BTCUSDT","signal":"long","confidence":0.85,"timestamp":1,"model_type":"LSTM","timeframe":"1h","reasoning":"x","strategy_scores":{"rsi":0.8}}}"#,
            #"{"type":"ChartUpdate","data":{"symbol":"ETHUSDT","timeframe":"1m","candle":{"timestamp":1,"open":1.0,"high":2.0,"low":0.5,"close":1.5,"volume":3.0,"is_closed":true},"latest_price":1.5,"timestamp":1}}"#,
        ]
        _ = try acceptedSeqs(publish(port, "[" + batch.joined(separator: ",") + "]"))
        // A marker that every subscription below receives, to know the batch is through.
        _ = try acceptedSeqs(publish(port, #"{"type":"Error","data":{"message":"marker","code":"MARKER"}}"#))
    }

    func collectUntilMarker(_ client: StreamClient) throws -> [String] {
        var seen: [String] = []
        while true {
            let m = try client.next()
            if m.type == "Error" && m.data?["code"] as? String == "MARKER" { return seen }
            let symbol = m.data?["symbol"] as? String ?? "-"
            seen.append("\(m.type!)/\(symbol)")
        }
    }

    @Test func defaultIsEverything() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try publishMix(server.port)
        #expect(try collectUntilMarker(client).count == 8)
    }

    @Test func aliasesAndSymbolFilter() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Subscribe","data":{"channels":["prices","trades","status","errors"],"symbols":["BTCUSDT"]}}"#)
        let confirmed = try client.next("SubscriptionConfirmed")
        #expect(confirmed.data?["channels"] as? [String] == ["MarketData", "TradeExecuted", "BotStatusUpdate", "Error"])
        #expect(confirmed.data?["symbols"] as? [String] == ["BTCUSDT"])
        #expect(confirmed.data?["recovered"] == nil)
        try publishMix(server.port)
        // Messages without a symbol (bot status) pass the symbol filter.
        #expect(try collectUntilMarker(client) == ["MarketData/BTCUSDT", "TradeExecuted/BTCUSDT", "BotStatusUpdate/-"])
    }

    @Test func changesTakeEffectWithoutReconnecting() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Subscribe","data":{"channels":["ChartUpdate","PositionUpdate","Error"]}}"#)
        _ = try client.next("SubscriptionConfirmed")
        try publishMix(server.port)
        #expect(try collectUntilMarker(client) == ["PositionUpdate/ETHUSDT", "ChartUpdate/ETHUSDT"])
        try client.send(#"{"type":"Unsubscribe","data":{"channels":["charts"]}}"#)
        let after = try client.next("SubscriptionConfirmed")
        #expect(after.data?["channels"] as? [String] == ["PositionUpdate", "Error"])
        try publishMix(server.port)
        #expect(try collectUntilMarker(client) == ["PositionUpdate/ETHUSDT"])
        try client.send(#"{"type":"Subscribe","data":{"channels":["signals","errors"],"symbols":["BTCUSDT","SOLUSDT"]}}"#)
        _ = try client.next("SubscriptionConfirmed")
        try publishMix(server.port)
        #expect(try collectUntilMarker(client) == ["AISignalReceived/BTCUSDT"])
        try client.send(#"{"type":"Unsubscribe","data":{"symbols":["BTCUSDT"]}}"#)
        #expect(try client.next("SubscriptionConfirmed").data?["symbols"] as? [String] == ["SOLUSDT"])
        // Back to everything.
        try client.send(#"{"type":"Subscribe","data":{}}"#)
        _ = try client.next("SubscriptionConfirmed")
        try publishMix(server.port)
        #expect(try collectUntilMarker(client).count == 8)
    }

    @Test func subscriptionInTheURL() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port, query: "channels=trades,errors&symbols=SOLUSDT")
        _ = try client.next("Connected")
        #expect(try client.next().type == "SubscriptionConfirmed")
        try publishMix(server.port)
        #expect(try collectUntilMarker(client) == ["TradeExecuted/SOLUSDT"])
    }

    @Test func unknownChannelIsAnErrorAndChangesNothing() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Subscribe","data":{"channels":["prices","bananas","Kiwis"]}}"#)
        let error = try client.next()
        #expect(error.type == "Error")
        #expect(error.data?["code"] as? String == "UNKNOWN_CHANNEL")
        #expect((error.data?["details"] as? [String: Any])?["channels"] as? [String] == ["bananas", "Kiwis"])
        #expect(((error.data?["details"] as? [String: Any])?["available"] as? [String])?.contains("prices") == true)
        try publishMix(server.port)
        #expect(try collectUntilMarker(client).count == 8)
    }

    @Test func invalidSubscriptions() throws {
        let server = try TestServer { $0.maxSymbolsPerSubscription = 3 }
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Subscribe","data":{"symbols":["A","B","C","D"]}}"#)
        #expect(try client.next().data?["code"] as? String == "INVALID_SUBSCRIPTION")
        try client.send(#"{"type":"Subscribe","data":{"channels":"prices"}}"#)
        #expect(try client.next().data?["code"] as? String == "INVALID_SUBSCRIPTION")
        try client.send(#"{"type":"Unsubscribe","data":{"symbols":["BTCUSDT"]}}"#)
        #expect(try client.next().data?["code"] as? String == "INVALID_SUBSCRIPTION")
        try client.send(#"{"type":"Subscribe","data":{"resume":{"epoch":1}}}"#)
        #expect(try client.next().data?["code"] as? String == "INVALID_MESSAGE")
    }

    @Test func orderAcrossWorkers() throws {
        // Many clients spread over four reactors all see the same sequence.
        let server = try TestServer { $0.workers = 4 }
        let clients = try (0..<12).map { _ in try StreamClient(port: server.port) }
        for c in clients { _ = try c.next("Connected") }
        var expected: [Int] = []
        for round in 0..<5 {
            let batch = "[" + (0..<40).map { trade("S\($0 % 3)", round * 40 + $0) }.joined(separator: ",") + "]"
            expected += try acceptedSeqs(publish(server.port, batch))
        }
        for c in clients {
            var got: [Int] = []
            while got.count < expected.count { got.append(try c.next("TradeExecuted").seq!) }
            #expect(got == expected)
        }
        // The clients really are spread: SO_REUSEPORT hashes each connection to a reactor,
        // and all twelve landing on one of four has a chance of 4^-11.
        let perWorker = server.server.counters().perWorkerWebSockets
        #expect(perWorker.reduce(0, +) == 12)
        #expect(perWorker.filter { $0 > 0 }.count >= 2, "per reactor: \(perWorker)")
    }
}

@Suite struct ResumeTests {
    @Test func resumeAfterForcedDisconnectHasNoGapAndNoDuplicate() throws {
        let server = try TestServer()
        var received: [Int] = []
        var epoch = ""
        do {
            let client = try StreamClient(port: server.port)
            epoch = try client.next("Connected").data?["epoch"] as? String ?? ""
            _ = try acceptedSeqs(publish(server.port, "[" + (0..<20).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
            for _ in 0..<10 { received.append(try client.next("TradeExecuted").seq!) }
            // Forced disconnect: the socket is dropped without a closing handshake.
        }
        // Published while the client is away.
        _ = try acceptedSeqs(publish(server.port, "[" + (20..<35).map { trade("ETHUSDT", $0) }.joined(separator: ",") + "]"))
        let last = received.last!
        let again = try StreamClient(port: server.port, query: "epoch=\(epoch)&since=\(last)")
        let hello = try again.next()
        #expect(hello.type == "Connected")
        #expect(hello.seq == last)
        let confirmed = try again.next()
        #expect(confirmed.type == "SubscriptionConfirmed")
        #expect(confirmed.data?["recovered"] as? Bool == true)
        #expect((confirmed.data?["replayed"] as? NSNumber)?.intValue == 35 - last)
        #expect(confirmed.seq == last)
        while received.count < 35 { received.append(try again.next("TradeExecuted").seq!) }
        // Then live.
        _ = try acceptedSeqs(publish(server.port, trade("BTCUSDT", 99)))
        received.append(try again.next("TradeExecuted").seq!)
        #expect(received == Array(1...36))
        #expect(server.server.counters().resumes == 1)
    }

    @Test func resumeThroughSubscribeWithAFilter() throws {
        let server = try TestServer()
        let epoch = server.server.epoch
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<30).map { trade($0 % 2 == 0 ? "BTCUSDT" : "ETHUSDT", $0) }.joined(separator: ",") + "]"))
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Subscribe","data":{"channels":["trades"],"symbols":["ETHUSDT"],"resume":{"epoch":"\#(epoch)","since":10}}}"#)
        let confirmed = try client.next("SubscriptionConfirmed")
        #expect(confirmed.data?["recovered"] as? Bool == true)
        #expect((confirmed.data?["replayed"] as? NSNumber)?.intValue == 10)   // seqs 12, 14, ..., 30
        var seqs: [Int] = []
        for _ in 0..<10 { seqs.append(try client.next("TradeExecuted").seq!) }
        #expect(seqs == Array(stride(from: 12, through: 30, by: 2)))
    }

    @Test func resumeAfterLiveMessagesReplaysOnlyWhatWasMissed() throws {
        let server = try TestServer()
        let epoch = server.server.epoch
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<10).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        // Live messages reach the new connection before its Subscribe.
        _ = try acceptedSeqs(publish(server.port, trade("BTCUSDT", 10)))
        #expect(try client.next("TradeExecuted").seq == 11)
        try client.send(#"{"type":"Subscribe","data":{"resume":{"epoch":"\#(epoch)","since":5}}}"#)
        let confirmed = try client.next("SubscriptionConfirmed")
        #expect(confirmed.data?["recovered"] as? Bool == true)
        var seqs: [Int] = []
        for _ in 0..<5 { seqs.append(try client.next("TradeExecuted").seq!) }
        #expect(seqs == [6, 7, 8, 9, 10])
        _ = try acceptedSeqs(publish(server.port, trade("BTCUSDT", 11)))
        #expect(try client.next("TradeExecuted").seq == 12)
    }

    @Test func wrongEpochOrExpiredHistoryIsNotRecovered() throws {
        let server = try TestServer { $0.historySize = 10 }
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<30).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
        let wrongEpoch = try StreamClient(port: server.port, query: "epoch=0000000000000000&since=25")
        _ = try wrongEpoch.next("Connected")
        #expect(try wrongEpoch.next("SubscriptionConfirmed").data?["recovered"] as? Bool == false)
        let tooOld = try StreamClient(port: server.port, query: "epoch=\(server.server.epoch)&since=5")
        _ = try tooOld.next("Connected")
        let c = try tooOld.next("SubscriptionConfirmed")
        #expect(c.data?["recovered"] as? Bool == false)
        #expect((c.data?["head"] as? NSNumber)?.intValue == 30)
        // The edge of the window is still recoverable: history holds seqs 21...30.
        let edge = try StreamClient(port: server.port, query: "epoch=\(server.server.epoch)&since=20")
        _ = try edge.next("Connected")
        #expect(try edge.next("SubscriptionConfirmed").data?["recovered"] as? Bool == true)
        #expect(try edge.next("TradeExecuted").seq == 21)
    }

    @Test func resumePointNeverIssuedIsNotRecoveredAndTheStreamStaysLive() throws {
        let server = try TestServer()
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<2).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
        // seq 3 was never issued in this epoch: claiming it would skip everything up to 3.
        let client = try StreamClient(port: server.port, query: "epoch=\(server.server.epoch)&since=3")
        _ = try client.next("Connected")
        let confirmed = try client.next("SubscriptionConfirmed")
        #expect(confirmed.data?["recovered"] as? Bool == false)
        #expect((confirmed.data?["head"] as? NSNumber)?.intValue == 2)
        // The client reloads its snapshot; live messages keep coming, none skipped.
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<2).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
        #expect(try client.next("TradeExecuted").seq == 3)
        #expect(try client.next("TradeExecuted").seq == 4)
    }

    @Test func resumeAtTheHeadIsRecoveredWithNothingToReplay() throws {
        let server = try TestServer()
        _ = try acceptedSeqs(publish(server.port, "[" + (0..<3).map { trade("BTCUSDT", $0) }.joined(separator: ",") + "]"))
        let client = try StreamClient(port: server.port, query: "epoch=\(server.server.epoch)&since=3")
        _ = try client.next("Connected")
        let confirmed = try client.next("SubscriptionConfirmed")
        #expect(confirmed.data?["recovered"] as? Bool == true)
        #expect((confirmed.data?["replayed"] as? NSNumber)?.intValue == 0)
        _ = try acceptedSeqs(publish(server.port, trade("BTCUSDT", 9)))
        #expect(try client.next("TradeExecuted").seq == 4)
    }
}

@Suite struct SnapshotTests {
    @Test func snapshotHoldsTheLatestState() throws {
        let server = try TestServer()
        var messages = [marketData("BTCUSDT", 1), marketData("BTCUSDT", 2), marketData("ETHUSDT", 3)]
        messages.append(#"{"type":"ChartUpdate","data":{"symbol":"BTCUSDT","timeframe":"1m","candle":{"timestamp":1,"open":1.0,"high":1.0,"low":1.0,"close":1.0,"volume":1.0,"is_closed":true},"timestamp":1}}"#)
        messages.append(#"{"type":"ChartUpdate","data":{"symbol":"BTCUSDT","timeframe":"5m","candle":{"timestamp":1,"open":1.0,"high":1.0,"low":1.0,"close":1.0,"volume":1.0,"is_closed":true},"timestamp":1}}"#)
        messages.append(#"{"type":"PositionUpdate","data":{"symbol":"BTCUSDT","side":"LONG","pnl":1.0,"current_price":2.0,"unrealized_pnl":1.0,"timestamp":1,"status":"OPEN"}}"#)
        messages.append(#"{"type":"PositionUpdate","data":{"symbol":"ETHUSDT","side":"SHORT","pnl":1.0,"current_price":2.0,"unrealized_pnl":1.0,"timestamp":1,"status":"OPEN"}}"#)
        messages.append(#"{"type":"PositionUpdate","data":{"symbol":"ETHUSDT","side":"SHORT","pnl":3.0,"current_price":2.0,"unrealized_pnl":0.0,"timestamp":2,"status":"CLOSED"}}"#)
        messages.append(#"{"type":"BotStatusUpdate","data":{"status":"running","active_positions":1,"total_pnl":3.0,"total_trades":5,"uptime":60}}"#)
        messages += (0..<25).map { trade("SOLUSDT", $0) }
        messages.append(#"{"type":"AISignalReceived","data":{"symbol":"BTCUSDT","signal":"long","confidence":0.85,"timestamp":1,"model_type":"LSTM","timeframe":"1h","reasoning":"Strong bullish momentum detected","strategy_scores":{"rsi":0.8,"macd":0.9,"bollinger":0.75}}}"#)
        let seqs = try acceptedSeqs(publish(server.port, "[" + messages.joined(separator: ",") + "]"))
        let snap = try getJSON(server.port, "/api/snapshot")
        #expect(snap["epoch"] as? String == server.server.epoch)
        #expect((snap["seq"] as? NSNumber)?.intValue == seqs.last)
        let market = snap["market"] as? [String: [String: Any]] ?? [:]
        #expect(Set(market.keys) == ["BTCUSDT", "ETHUSDT"])
        #expect((market["BTCUSDT"]?.data?["price"] as? NSNumber)?.doubleValue == 2)
        #expect(market["BTCUSDT"]?.seq == 2)
        let charts = snap["charts"] as? [String: [String: Any]] ?? [:]
        #expect(Set((charts["BTCUSDT"] ?? [:]).keys) == ["1m", "5m"])
        let positions = snap["positions"] as? [[String: Any]] ?? []
        #expect(positions.count == 1)
        #expect(positions.first?.data?["symbol"] as? String == "BTCUSDT")
        #expect((snap["bot_status"] as? [String: Any])?.data?["total_trades"] as? NSNumber == 5)
        let trades = snap["recent_trades"] as? [[String: Any]] ?? []
        #expect(trades.count == 20)
        #expect((trades.first?.data?["n"] as? NSNumber)?.intValue == 24)   // newest first
        #expect((snap["ai_signals"] as? [[String: Any]])?.count == 1)
    }
}
