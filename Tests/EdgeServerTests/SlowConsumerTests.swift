import Foundation
import Testing
@testable import EdgeServer

/// Slow consumers (PROTOCOL.md): tiny socket buffers on both sides make a client that
/// stops reading hit the backlog bound after a few hundred kilobytes.
@Suite struct SlowConsumerTests {
    static func configure(_ c: inout ServerConfiguration) {
        c.maxBacklogBytes = 32 << 10
        c.sendBufferBytes = 4 << 10
        c.historySize = 5000
    }

    @Test func marketDataIsConflatedForASlowReader() throws {
        let server = try TestServer(Self.configure)
        let slow = try StreamClient(port: server.port, query: "channels=prices", receiveBuffer: 4096)
        _ = try slow.next("Connected")
        _ = try slow.next("SubscriptionConfirmed")
        // ~1 MB of prices for two symbols while the client reads nothing.
        for round in 0..<20 {
            let batch = "[" + (0..<200).map { marketData($0 % 2 == 0 ? "BTCUSDT" : "ETHUSDT", Double(round * 200 + $0), counter: round * 200 + $0) }.joined(separator: ",") + "]"
            _ = try acceptedSeqs(publish(server.port, batch))
        }
        let finals = try acceptedSeqs(publish(server.port, "[" + marketData("BTCUSDT", 99_999, counter: -1) + "," + marketData("ETHUSDT", 88_888, counter: -2) + "]"))
        try waitUntil("conflation or a backlog") { server.server.counters().conflated > 0 || server.server.counters().backlogBytes > 0 }
        // Now read it all: fewer messages than published, in order, ending with the newest prices.
        var seqs: [Int] = []
        var last: [String: Double] = [:]
        while seqs.last != finals.last {
            let m = try slow.next("MarketData")
            seqs.append(m.seq!)
            last[m.data?["symbol"] as? String ?? "?"] = (m.data?["price"] as? NSNumber)?.doubleValue
        }
        #expect(seqs == seqs.sorted())
        #expect(Set(seqs).count == seqs.count)
        #expect(seqs.count < 4002)
        #expect(last["BTCUSDT"] == 99_999)
        #expect(last["ETHUSDT"] == 88_888)
        let counters = server.server.counters()
        #expect(counters.conflated > 0)
        #expect(counters.slowConsumerDisconnects == 0)
        // Caught up, the connection is an ordinary fast subscriber again.
        let next = try acceptedSeqs(publish(server.port, marketData("BTCUSDT", 1)))
        #expect(try slow.next("MarketData").seq == next.first)
    }

    @Test func stalledTradeReaderIsClosedWith1013AndResumesLosslessly() throws {
        let server = try TestServer(Self.configure)
        let stalled = try StreamClient(port: server.port, query: "channels=trades", receiveBuffer: 4096)
        let epoch = try stalled.next("Connected").data?["epoch"] as? String ?? ""
        _ = try stalled.next("SubscriptionConfirmed")
        let fast = try StreamClient(port: server.port, query: "channels=trades")
        _ = try fast.next("Connected")
        _ = try fast.next("SubscriptionConfirmed")
        var published: [Int] = []
        var fastSeqs: [Int] = []
        for round in 0..<10 {
            published += try acceptedSeqs(publish(server.port, "[" + (0..<200).map { trade("BTCUSDT", round * 200 + $0, pad: 200) }.joined(separator: ",") + "]"))
            // The fast client keeps up and is not held back by the stalled one.
            while fastSeqs.count < published.count { fastSeqs.append(try fast.next("TradeExecuted").seq!) }
        }
        #expect(fastSeqs == published)
        try waitUntil("the slow consumer's disconnect") { server.server.counters().slowConsumerDisconnects == 1 }
        // The stalled client finally reads: a prefix of the trades, then Close 1013.
        var got: [Int] = []
        var closeCode: UInt16?
        var reason = ""
        while closeCode == nil {
            let frame = try stalled.ws.readFrame()
            switch frame.opcode {
            case 1:
                let m = try JSONSerialization.jsonObject(with: Data(frame.payload)) as! [String: Any]
                if m.type == "TradeExecuted" { got.append(m.seq!) }
            case 8:
                closeCode = frame.closeCode
                reason = frame.closeReason
            default:
                break
            }
        }
        #expect(closeCode == 1013)
        #expect(reason.contains("slow consumer"))
        // What filled its socket before the close: a prefix (and not an empty one, which
        // any sequence starts with).
        #expect(!got.isEmpty)
        #expect(got == Array(published.prefix(got.count)))
        #expect(got.count < published.count)
        // Reconnect and resume from the last trade received: the rest, once each.
        let resumed = try StreamClient(port: server.port, query: "channels=trades&epoch=\(epoch)&since=\(got.last ?? 0)")
        _ = try resumed.next("Connected")
        #expect(try resumed.next("SubscriptionConfirmed").data?["recovered"] as? Bool == true)
        while got.count < published.count { got.append(try resumed.next("TradeExecuted").seq!) }
        #expect(got == published)
        let counters = server.server.counters()
        #expect(counters.broadcastFailures >= 1)
    }
}
