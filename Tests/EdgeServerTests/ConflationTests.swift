import Foundation
import Testing
@testable import EdgeServer

/// `max_frequency` (PROTOCOL.md "Maximum frequency"): the tick grid, and over real sockets
/// the rate, the newest value, events never throttled and the stream in seq order.
/// (Tests/Conflation drives the binary the same way, with many subscribers and resume.)
@Suite struct ConflationTests {
    @Test func cohortTicksFallOnOneGridStrictlyAfterNow() {
        let four = RateCohort(frequency: 4)
        #expect(four.tick(after: 1000) == 1250)
        #expect(four.tick(after: 1001) == 1250)
        #expect(four.tick(after: 1249) == 1250)
        #expect(four.tick(after: 1250) == 1500)
        let three = RateCohort(frequency: 3)
        #expect(three.tick(after: 0) == 334)
        #expect(three.tick(after: 334) == 667)
        #expect(three.tick(after: 667) == 1000)
        let sixty = RateCohort(frequency: 60)
        var t: UInt64 = 0
        for _ in 0..<60 { t = sixty.tick(after: t) }
        #expect(t == 1000)
    }

    @Test func frequencyIsEchoedAndInvalidOnesLeaveTheSubscription() throws {
        let server = try TestServer { $0.maxFrequencyLimit = 20 }
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Subscribe","data":{"channels":["prices"],"symbols":["BTCUSDT"],"max_frequency":4}}"#)
        let confirmed = try client.next("SubscriptionConfirmed")
        #expect((confirmed.data?["max_frequency"] as? NSNumber)?.intValue == 4)
        for bad in ["0", "-1", "21", "1.5", "\"4\"", "[]"] {
            try client.send(#"{"type":"Subscribe","data":{"channels":["trades"],"max_frequency":\#(bad)}}"#)
            let error = try client.next("Error")
            #expect(error.data?["code"] as? String == "INVALID_SUBSCRIPTION", "\(bad)")
        }
        // Still prices for BTCUSDT at 4/s: its price arrives, the trade does not.
        _ = try acceptedSeqs(publish(server.port, "[" + trade("BTCUSDT", 1) + "," + marketData("BTCUSDT", 7) + "]"))
        let m = try client.next()
        #expect(m.type == "MarketData" && (m.data?["price"] as? NSNumber)?.doubleValue == 7)
    }

    @Test func throttledSubscriberGetsTheNewestAtMostNPerSecondAndEveryTrade() throws {
        let server = try TestServer()
        let client = try StreamClient(port: server.port)
        _ = try client.next("Connected")
        try client.send(#"{"type":"Subscribe","data":{"channels":["prices","trades"],"max_frequency":5}}"#)
        _ = try client.next("SubscriptionConfirmed")

        let started = monotonicNow()
        var lastPrice = 0.0
        var trades = 0
        for round in 0..<20 {
            var batch: [String] = []
            for i in 0..<25 {
                lastPrice = Double(round * 25 + i)
                batch.append(marketData("BTCUSDT", lastPrice))
            }
            if round % 4 == 0 {
                batch.append(trade("BTCUSDT", trades))
                trades += 1
            }
            _ = try acceptedSeqs(publish(server.port, "[" + batch.joined(separator: ",") + "]"))
            usleep(50_000)
        }
        let window = monotonicNow() - started

        var prices: [Double] = []
        var tradeNumbers: [Int] = []
        var seqs: [Int] = []
        while prices.last != lastPrice || tradeNumbers.count < trades {
            let m = try client.next()   // the socket's receive timeout bounds the wait
            switch m.type {
            case "MarketData": prices.append((m.data?["price"] as? NSNumber)?.doubleValue ?? -1)
            case "TradeExecuted": tradeNumbers.append((m.data?["n"] as? NSNumber)?.intValue ?? -1)
            default: continue
            }
            if let s = m.seq { seqs.append(s) }
        }
        #expect(tradeNumbers == Array(0..<trades))
        #expect(prices.last == lastPrice)
        // 5/s over the window plus the tick after it, plus one early update per trade.
        let bound = 5 * (window + 1) + Double(trades) + 2
        #expect(prices.count >= 2 && Double(prices.count) <= bound, "\(prices.count) prices in \(window) s")
        #expect(prices == prices.sorted(), "an older price after a newer one")
        #expect(zip(seqs, seqs.dropFirst()).allSatisfy { $0 < $1 }, "seqs out of order: \(seqs)")
    }
}
