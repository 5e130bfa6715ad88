import Foundation
import Testing
@testable import Ingestion
@testable import TradingStream

func scan(_ s: String) -> Result<JSONValue, JSONError> {
    Array(s.utf8).withUnsafeBytes { raw in
        do throws(JSONError) { return .success(try JSONScanner.parse(raw)) } catch { return .failure(error) }
    }
}

@Suite struct JSONScannerTests {
    @Test(arguments: [
        #"{}"#, #"[]"#, #"{"a":1}"#, #" {"a" : [1, -2.5e3, true, false, null, "x\n\u00e9\ud83d\ude00"]} "#,
        #""just a string""#, "0", "-0.0", "1E+2", #"{"nested":{"deep":[[[{}]]]}}"#, #"{"κόσμε":"€"}"#,
    ])
    func valid(_ text: String) {
        if case .failure(let e) = scan(text) { Issue.record("\(text): \(e)") }
    }

    @Test(arguments: [
        "", "{", "}", #"{"a"}"#, #"{"a":}"#, #"{"a":1,}"#, "[1,]", "01", "1.", ".5", "-", "1e", "+1",
        "tru", "nul", #""unterminated"#, "\"tab\there\"", #""\x""#, #""\u12G4""#, "[1] 2", "{'a':1}", "NaN",
    ])
    func invalid(_ text: String) {
        if case .success = scan(text) { Issue.record("accepted invalid JSON: \(text)") }
    }

    @Test func invalidUTF8InStringIsRejected() {
        // An overlong "/" inside a string.
        let bytes: [UInt8] = [0x22, 0xC0, 0xAF, 0x22]
        let r = bytes.withUnsafeBytes { raw -> Result<JSONValue, JSONError> in
            do throws(JSONError) { return .success(try JSONScanner.parse(raw)) } catch { return .failure(error) }
        }
        guard case .failure(let error) = r else {
            Issue.record("accepted a string with invalid UTF-8")
            return
        }
        #expect(error.reason.lowercased().contains("utf"), "rejected, but for another reason: \(error.reason)")
    }

    @Test func nestingIsBounded() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        guard case .failure(let e) = scan(deep) else { Issue.record("accepted 100 levels"); return }
        #expect(e.reason.contains("nesting"))
        let ok = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        if case .failure = scan(ok) { Issue.record("rejected 60 levels") }
    }

    @Test func membersElementsAndValues() throws {
        let text = #"{"type":"Subscribe","data":{"channels":["prices","tr\u0061des"],"since":12345678901,"x":-3,"f":1.5},"type2":null}"#
        let bytes = Array(text.utf8)
        try bytes.withUnsafeBytes { raw in
            let root = try JSONScanner.parse(raw)
            #expect(JSONScanner.members(of: root, in: raw).count == 3)
            let type = JSONScanner.member("type", of: root, in: raw)!
            #expect(JSONScanner.string(type, in: raw) == "Subscribe")
            let data = JSONScanner.member("data", of: root, in: raw)!
            let channels = JSONScanner.elements(of: JSONScanner.member("channels", of: data, in: raw)!, in: raw)
            #expect(channels.map { JSONScanner.string($0, in: raw) } == ["prices", "trades"])
            #expect(JSONScanner.integer(JSONScanner.member("since", of: data, in: raw)!, in: raw) == 12_345_678_901)
            #expect(JSONScanner.integer(JSONScanner.member("x", of: data, in: raw)!, in: raw) == -3)
            #expect(JSONScanner.integer(JSONScanner.member("f", of: data, in: raw)!, in: raw) == nil)
            #expect(JSONScanner.double(JSONScanner.member("f", of: data, in: raw)!, in: raw) == 1.5)
            #expect(JSONScanner.member("missing", of: root, in: raw) == nil)
        }
    }
}

@Suite struct EnvelopeAndChannelTests {
    @Test func envelopeIsCompactSpecJSON() throws {
        var w = EnvelopeWriter()
        w.begin(type: "Error", seq: 42)
        w.data(Array(#"{"message":"m","code":"C"}"#.utf8))
        w.message("hi \"there\"\n")
        w.end(timestampMilliseconds: 1_609_459_200_000)
        #expect(String(decoding: w.bytes, as: UTF8.self)
            == #"{"type":"Error","seq":42,"data":{"message":"m","code":"C"},"message":"hi \"there\"\n","timestamp":"2021-01-01T00:00:00.000Z"}"#)
        _ = try JSONSerialization.jsonObject(with: Data(w.bytes))
    }

    @Test func channelNamesAndAliases() {
        #expect(Channel(name: "prices") == .marketData)
        #expect(Channel(name: "MarketData") == .marketData)
        #expect(Channel(name: "trades") == .tradeExecuted)
        #expect(Channel(name: "signals") == .aiSignalReceived)
        #expect(Channel(name: "status") == .botStatusUpdate)
        #expect(Channel(name: "positions") == .positionUpdate)
        #expect(Channel(name: "charts") == .chartUpdate)
        #expect(Channel(name: "Pong") == nil)
        #expect(Channel.allCases.filter(\.isConflatable) == [.marketData, .chartUpdate, .botStatusUpdate])
    }

    @Test func subscriptionMatching() {
        let s = Subscription(channels: [.marketData, .tradeExecuted], symbols: ["BTCUSDT", "ETHUSDT", "BTCUSDT"])
        #expect(s.symbols == ["BTCUSDT", "ETHUSDT"])
        #expect(s.matches(channel: Channel.marketData.rawValue, symbolHash: SymbolHash.hash("BTCUSDT")))
        #expect(!s.matches(channel: Channel.marketData.rawValue, symbolHash: SymbolHash.hash("SOLUSDT")))
        #expect(s.matches(channel: Channel.tradeExecuted.rawValue, symbolHash: 0))
        #expect(!s.matches(channel: Channel.chartUpdate.rawValue, symbolHash: SymbolHash.hash("BTCUSDT")))
        #expect(Subscription.everything.isEverything)
        let many = (0..<50).map { SymbolHash.hash("S\($0)") }.sorted()
        #expect(Subscription.contains(many, SymbolHash.hash("S37")))
        #expect(!Subscription.contains(many, SymbolHash.hash("S50")))
    }

    @Test func numbersAreValidJSON() {
        #expect(JSONNumber.format(50250.75) == "50250.75")
        #expect(JSONNumber.format(1000) == "1000.0")
        #expect(JSONNumber.format(0.1 + 0.2, places: 2) == "0.3")
        #expect(JSONNumber.format(.nan) == "0")
    }
}

/// Collects delivered frames instead of sending them to reactors.
final class CollectingSink: BroadcastSink, @unchecked Sendable {
    var frames: [BroadcastFrame] = []
    func deliver(_ f: [BroadcastFrame]) { frames += f }
}

@Suite struct PublisherTests {
    @Test func seqsAreConsecutiveAndFramesAreWebSocketText() async throws {
        let sink = CollectingSink()
        let publisher = StreamPublisher(epoch: "e", sink: sink)
        let outcome = await publisher.publish(body: Array("[\(#"{"type":"MarketData","data":{"symbol":"X","price":1}}"#),\(#"{"type":"BotStatusUpdate","data":{"status":"running"}}"#)]".utf8))
        #expect(outcome == .accepted(seqs: [1, 2]))
        try #require(sink.frames.map(\.seq) == [1, 2])
        let f = sink.frames[0]
        #expect(f.bytes.load(as: UInt8.self) == 0x81)
        #expect(f.symbolHash == SymbolHash.hash("X"))
        #expect(f.conflationKey != 0)
        #expect(sink.frames[1].symbolHash == 0)
        let json = String(decoding: f.json, as: UTF8.self)
        #expect(json.hasPrefix(#"{"type":"MarketData","seq":1,"data":{"symbol":"X","price":1},"timestamp":"#))
        #expect(await publisher.headSeq == 2)
    }

    @Test func eventsAreNeverConflationCandidates() async throws {
        let sink = CollectingSink()
        let publisher = StreamPublisher(epoch: "e", sink: sink)
        _ = await publisher.publish(body: Array(#"{"type":"TradeExecuted","data":{"symbol":"X"}}"#.utf8))
        let frame = try #require(sink.frames.first)
        #expect(frame.symbolHash == SymbolHash.hash("X"))
        #expect(frame.conflationKey == 0)
        // The same symbol as market data is a conflation candidate: the key above is a policy.
        _ = await publisher.publish(body: Array(#"{"type":"MarketData","data":{"symbol":"X","price":1}}"#.utf8))
        #expect(sink.frames.last?.conflationKey != 0)
    }

    @Test func simulatorProducesEveryMessageType() async throws {
        let sink = CollectingSink()
        let publisher = StreamPublisher(epoch: "e", sink: sink)
        var config = SimulatorConfiguration()
        config.ticksPerSecond = 400
        config.candleSeconds = 1
        config.botStatusSeconds = 1
        config.seed = 7
        let simulator = MarketSimulator(publisher: publisher, config: config)
        await simulator.start()
        let all: Set<Channel> = [.marketData, .chartUpdate, .positionUpdate, .tradeExecuted, .aiSignalReceived, .botStatusUpdate]
        try await waitUntil("every message type from the simulator", timeout: 30) { await publisher.channelsSeen() == all }
        await simulator.stop()
        let snapshot = String(decoding: await publisher.snapshotJSON(), as: UTF8.self)
        let object = try JSONSerialization.jsonObject(with: Data(snapshot.utf8)) as? [String: Any]
        #expect((object?["market"] as? [String: Any])?.count == 4)
    }
}

extension StreamPublisher {
    func channelsSeen() -> Set<Channel> {
        Set(Channel.allCases.filter { stats.published[Int($0.rawValue)] > 0 })
    }
}

struct WaitTimedOut: Error, CustomStringConvertible { let description: String }

/// Waits for `condition`, polling every 20 ms (the poll interval is the only sleep), and
/// throws after `timeout` seconds saying what did not happen.
func waitUntil(_ what: String, timeout: Double = 5, _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(timeout)
    while try await !condition() {
        if clock.now >= deadline { throw WaitTimedOut(description: "timed out after \(timeout) s waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}
