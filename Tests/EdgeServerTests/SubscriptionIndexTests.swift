import Testing
import TradingStream
@testable import EdgeServer

/// The subscription index without sockets. `Table` plays the reactor's connection table:
/// the `everything` position each connection keeps, and its extras.
@Suite struct SubscriptionIndexTests {
    final class Table {
        let index = SubscriptionIndex()
        var positions: [UInt32: UInt32] = [:]
        var extras: [UInt32: ConnectionExtras] = [:]
        var subscriptions: [UInt32: Subscription] = [:]

        /// As the reactor joins: default subscribers need no extras, narrowed ones do.
        func add(_ slot: UInt32, _ subscription: Subscription, withExtras: Bool = false) {
            var position: UInt32 = .max
            var e = extras[slot]
            if e == nil && (withExtras || !subscription.isEverything) {
                e = ConnectionExtras()
                extras[slot] = e
            }
            e?.subscription = subscription
            index.add(slot, subscription, position: &position, extras: subscription.isEverything ? nil : e)
            if subscription.isEverything { positions[slot] = position }
            subscriptions[slot] = subscription
        }

        func remove(_ slot: UInt32) {
            index.remove(slot, everythingPosition: positions[slot] ?? .max, extras: extras[slot],
                         setPosition: { self.positions[$0] = $1 }, extrasOf: { self.extras[$0] })
            positions[slot] = nil
            extras[slot] = nil
            subscriptions[slot] = nil
        }

        /// The slots a frame on (channel, symbol) reaches, computed the way the broadcast
        /// path does: one channel list, one symbol (or no-symbol) list.
        func candidates(_ channel: Channel, _ symbol: String?) -> [UInt32] {
            let h = symbol.map(SymbolHash.hash) ?? 0
            let keys = [
                SubscriptionIndex.channelKey(channel.rawValue),
                h != 0 ? SubscriptionIndex.symbolKey(channel.rawValue, h) : SubscriptionIndex.noSymbolKey(channel.rawValue),
            ]
            var out: [UInt32] = []
            index.forEachCandidate(keys: keys) { out.append($0) }
            return out.sorted()
        }

        /// What the model says: every connection whose subscription matches.
        func expected(_ channel: Channel, _ symbol: String?) -> [UInt32] {
            let h = symbol.map(SymbolHash.hash) ?? 0
            return subscriptions.filter { $0.value.matches(channel: channel.rawValue, symbolHash: h) }.keys.sorted()
        }

        /// Every recorded position points back at its own slot, and nothing else is listed.
        func consistencyProblems() -> [String] {
            var problems: [String] = []
            for (slot, p) in positions {
                if Int(p) >= index.everything.count || index.everything[Int(p)] != slot {
                    problems.append("slot \(slot): everything position \(p) holds \(Int(p) < index.everything.count ? "\(index.everything[Int(p)])" : "nothing")")
                }
            }
            var memberships = 0
            for (slot, e) in extras {
                for (key, p) in e.memberships {
                    memberships += 1
                    guard let list = index.lists[key], p < list.count, list[p] == slot else {
                        problems.append("slot \(slot): list \(String(key, radix: 16)) position \(p) does not hold it")
                        continue
                    }
                }
            }
            if index.everything.count != positions.count { problems.append("everything lists \(index.everything.count), \(positions.count) recorded") }
            let listed = index.lists.values.reduce(0) { $0 + $1.count }
            if listed != memberships { problems.append("lists hold \(listed) entries, \(memberships) memberships recorded") }
            if index.lists.values.contains(where: \.isEmpty) { problems.append("an empty list is kept") }
            if index.count != positions.count + memberships { problems.append("count \(index.count)") }
            return problems
        }
    }

    static let everything = Subscription.everything
    static func only(_ channels: [Channel], _ symbols: [String] = []) -> Subscription { Subscription(channels: channels, symbols: symbols) }

    @Test func everythingSubscribersAndSwapRemove() {
        let t = Table()
        for slot: UInt32 in [10, 11, 12, 13] { t.add(slot, Self.everything) }
        #expect(t.index.everything == [10, 11, 12, 13])
        #expect(t.positions == [10: 0, 11: 1, 12: 2, 13: 3])
        t.remove(11)
        #expect(t.index.everything == [10, 13, 12], "the last one moves into the freed place")
        #expect(t.positions[13] == 1)
        t.remove(12)   // the last one: nothing moves
        #expect(t.index.everything == [10, 13])
        t.remove(10)
        #expect(t.index.everything == [13] && t.positions[13] == 0)
        #expect(t.consistencyProblems() == [])
        #expect(t.candidates(.marketData, "BTCUSDT") == [13])
        #expect(t.candidates(.error, nil) == [13])
    }

    @Test func aStaleEverythingPositionRemovesNothing() {
        let t = Table()
        t.add(1, Self.everything)
        t.add(2, Self.everything)
        // A position that no longer holds this slot (already removed) must not evict another.
        t.index.remove(1, everythingPosition: 1, extras: nil, setPosition: { _, _ in Issue.record("nothing moves") }, extrasOf: { _ in nil })
        #expect(t.index.everything == [1, 2])
        t.index.remove(9, everythingPosition: 7, extras: nil, setPosition: { _, _ in Issue.record("nothing moves") }, extrasOf: { _ in nil })
        #expect(t.index.everything == [1, 2])
    }

    @Test func perChannelSubscribers() {
        let t = Table()
        t.add(1, Self.only([.tradeExecuted]))
        t.add(2, Self.only([.tradeExecuted, .positionUpdate]))
        t.add(3, Self.everything)
        let trades = SubscriptionIndex.channelKey(Channel.tradeExecuted.rawValue)
        let positions = SubscriptionIndex.channelKey(Channel.positionUpdate.rawValue)
        #expect(t.index.lists[trades] == [1, 2])
        #expect(t.index.lists[positions] == [2])
        #expect(t.extras[1]!.memberships.map(\.key) == [trades] && t.extras[1]!.memberships.map(\.position) == [0])
        #expect(t.candidates(.tradeExecuted, "BTCUSDT") == [1, 2, 3])
        #expect(t.candidates(.tradeExecuted, nil) == [1, 2, 3])
        #expect(t.candidates(.positionUpdate, "ETHUSDT") == [2, 3])
        #expect(t.candidates(.marketData, "BTCUSDT") == [3])
        t.remove(1)
        #expect(t.index.lists[trades] == [2])
        #expect(t.extras[2]!.memberships.first { $0.key == trades }?.position == 0, "slot 2 moved to position 0")
        t.remove(2)
        #expect(t.index.lists.isEmpty, "empty lists are dropped")
        #expect(t.consistencyProblems() == [])
    }

    @Test func perSymbolSubscribersAlsoGetMessagesWithoutASymbol() {
        let t = Table()
        t.add(1, Self.only([.marketData, .tradeExecuted], ["BTCUSDT", "ETHUSDT"]))
        t.add(2, Self.only([.marketData], ["ETHUSDT"]))
        t.add(3, Self.only([.botStatusUpdate], ["BTCUSDT"]))
        // Two channels x (two symbols + the no-symbol list).
        #expect(t.extras[1]!.memberships.count == 6)
        #expect(t.candidates(.marketData, "BTCUSDT") == [1])
        #expect(t.candidates(.marketData, "ETHUSDT") == [1, 2])
        #expect(t.candidates(.marketData, "SOLUSDT") == [])
        #expect(t.candidates(.tradeExecuted, "ETHUSDT") == [1])
        #expect(t.candidates(.tradeExecuted, nil) == [1])
        #expect(t.candidates(.botStatusUpdate, nil) == [3], "bot status carries no symbol: filtered subscribers get it")
        #expect(t.candidates(.chartUpdate, "BTCUSDT") == [])
        #expect(t.consistencyProblems() == [])
    }

    @Test func swapRemoveUpdatesTheMovedConnectionsPositionInEveryList() {
        let t = Table()
        let sub = Self.only([.marketData, .chartUpdate], ["BTCUSDT"])
        for slot: UInt32 in 1...5 { t.add(slot, sub) }
        let btc = SubscriptionIndex.symbolKey(Channel.marketData.rawValue, SymbolHash.hash("BTCUSDT"))
        #expect(t.index.lists[btc] == [1, 2, 3, 4, 5])
        t.remove(2)
        #expect(t.index.lists[btc] == [1, 5, 3, 4])
        // Slot 5 moved to position 1 in each of its four lists, and its records say so.
        #expect(t.extras[5]!.memberships.map(\.position) == [1, 1, 1, 1])
        #expect(t.consistencyProblems() == [])
        // Removing the moved connection itself finds it where it was moved to.
        t.remove(5)
        #expect(t.index.lists[btc] == [1, 4, 3])
        #expect(t.consistencyProblems() == [])
    }

    @Test func everythingSubscriberWithExtrasIsRemovedFromEverything() {
        // A slow consumer subscribed to everything has extras (its queue) but no memberships.
        let t = Table()
        t.add(1, Self.everything, withExtras: true)
        t.add(2, Self.everything)
        t.extras[1]!.slowQueue = SlowConsumerQueue()
        t.remove(1)
        #expect(t.index.everything == [2] && t.positions[2] == 0)
        #expect(t.consistencyProblems() == [])
    }

    /// Random joins, re-subscriptions and leaves over 64 slots, checked against the model
    /// (and the index's own records) after every step.
    @Test(arguments: [21, 22, 23] as [UInt64])
    func randomizedAgainstAModel(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
        let channels = Channel.allCases
        func randomSubscription() -> Subscription {
            if Int.random(in: 0..<4, using: &rng) == 0 { return .everything }
            var picked = channels.filter { _ in Bool.random(using: &rng) }
            if picked.isEmpty { picked = [channels.randomElement(using: &rng)!] }
            let syms = Int.random(in: 0..<3, using: &rng) == 0 ? [] : symbols.filter { _ in Bool.random(using: &rng) }
            return Subscription(channels: picked, symbols: syms)
        }
        let t = Table()
        var removals = 0
        for step in 0..<3000 {
            let slot = UInt32.random(in: 0..<64, using: &rng)
            if t.subscriptions[slot] != nil {
                t.remove(slot)
                removals += 1
                // Often a re-subscription: leave, then join with another subscription.
                if Bool.random(using: &rng) { t.add(slot, randomSubscription(), withExtras: Int.random(in: 0..<5, using: &rng) == 0) }
            } else {
                t.add(slot, randomSubscription(), withExtras: Int.random(in: 0..<5, using: &rng) == 0)
            }
            let problems = t.consistencyProblems()
            if !problems.isEmpty {
                Issue.record("step \(step): \(problems.prefix(3).joined(separator: "; "))")
                return
            }
            let channel = channels.randomElement(using: &rng)!
            let symbol = Int.random(in: 0..<5, using: &rng) == 0 ? nil : (symbols + ["XRPUSDT"]).randomElement(using: &rng)!
            let got = t.candidates(channel, symbol)
            let want = t.expected(channel, symbol)
            if got != want {
                Issue.record("step \(step): \(channel) \(symbol ?? "-") reaches \(got), expected \(want)")
                return
            }
        }
        #expect(removals > 1000 && t.subscriptions.count > 10, "the run exercised both joins and leaves")
        // Exhaustively, at the end.
        for channel in channels {
            let probes: [String?] = symbols.map { $0 } + ["XRPUSDT", nil]
            for symbol in probes {
                #expect(t.candidates(channel, symbol) == t.expected(channel, symbol), "\(channel) \(symbol ?? "-")")
            }
        }
    }
}
