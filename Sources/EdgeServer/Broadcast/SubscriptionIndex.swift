import AccessToken
import TradingStream

/// What a connection keeps only when it needs it: a narrowed subscription (and its places
/// in the index), or a slow consumer's private queue. Idle and default subscribers have none.
final class ConnectionExtras {
    var subscription = Subscription.everything
    /// (list key, position in that list) for every index list this connection is in.
    var memberships: [(key: UInt64, position: Int)] = []
    var slowQueue: SlowConsumerQueue?
    /// What the connection's token grants (nil: no token).
    var grant: AccessGrant?
    /// The grant's accounts, hashed as frames carry them, and their names.
    var accountHashes: [UInt64] = []
    /// (list key, position) for each account list this connection is in: kept apart from
    /// `memberships`, since a new subscription changes those and never these.
    var accountMemberships: [(key: UInt64, position: Int)] = []
    /// Its `max_frequency` cohort and rate groups, when it has one.
    var throttle: ThrottleState?

    var isEmpty: Bool { subscription.isEverything && subscription.maxFrequency == 0 && memberships.isEmpty && slowQueue == nil && grant == nil && throttle == nil }

    /// Whether a private message for (`hash`, `name`) is this connection's to see. The name
    /// is compared too, so that two accounts whose hashes collide never share messages.
    @inline(__always)
    func mayRead(accountHash hash: UInt64, frame: BroadcastFrame) -> Bool {
        guard let grant, let i = accountHashes.firstIndex(of: hash) else { return false }
        return grant.accounts[i] == frame.account
    }
}

/// A reactor's subscription index (FR-WEBSOCKET-004): which connections want which
/// channel and symbol, so that a broadcast touches only its subscribers. Default
/// subscribers (everything) sit in one list; narrowed ones sit in a list per channel
/// (all symbols) or per (channel, symbol). Removal is O(1) (swap with the last).
final class SubscriptionIndex {
    /// Connections subscribed to every channel and symbol.
    private(set) var everything: [UInt32] = []
    private(set) var lists: [UInt64: [UInt32]] = [:]

    static func channelKey(_ channel: UInt8) -> UInt64 { 0xFFFF_0000_0000_0000 | UInt64(channel) }
    /// Messages on `channel` that carry no symbol: filtered subscribers receive those too.
    static func noSymbolKey(_ channel: UInt8) -> UInt64 { 0xFFFE_0000_0000_0000 | UInt64(channel) }
    /// Private messages of one account: only connections whose token names it are listed.
    static func accountKey(_ accountHash: UInt64) -> UInt64 { (accountHash &* 0xC2B2_AE3D_27D4_EB4F) ^ 0xFFFD_0000_0000_0000 }
    static func symbolKey(_ channel: UInt8, _ symbolHash: UInt64) -> UInt64 {
        (symbolHash &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(channel) &+ 0x1000
    }

    var count: Int { everything.count + lists.values.reduce(0) { $0 + $1.count } }

    /// Adds `slot` under `subscription`; `position`/`extras` record where, for removal.
    func add(_ slot: UInt32, _ subscription: Subscription, position: inout UInt32, extras: ConnectionExtras?) {
        if subscription.isEverything {
            position = UInt32(everything.count)
            everything.append(slot)
            return
        }
        guard let extras else { preconditionFailure("narrowed subscriptions keep their memberships in extras") }
        for channel in subscription.channels {
            if subscription.symbolHashes.isEmpty {
                join(slot, Self.channelKey(channel.rawValue), extras)
            } else {
                for h in subscription.symbolHashes { join(slot, Self.symbolKey(channel.rawValue, h), extras) }
                join(slot, Self.noSymbolKey(channel.rawValue), extras)
            }
        }
    }

    private func join(_ slot: UInt32, _ key: UInt64, _ extras: ConnectionExtras) {
        var list = lists.removeValue(forKey: key) ?? []
        extras.memberships.append((key, list.count))
        list.append(slot)
        lists[key] = list
    }

    /// Removes `slot` from wherever `add` put it. `position(of:)`/`extras(of:)` find the
    /// records of the connection that moves into the freed place.
    func remove(
        _ slot: UInt32, everythingPosition: UInt32, extras: ConnectionExtras?,
        setPosition: (UInt32, UInt32) -> Void, extrasOf: (UInt32) -> ConnectionExtras?
    ) {
        if let extras, !extras.memberships.isEmpty {
            for (key, position) in extras.memberships {
                guard var list = lists.removeValue(forKey: key) else { continue }
                let last = list.removeLast()
                if position < list.count {
                    list[position] = last
                    if let moved = extrasOf(last), let k = moved.memberships.firstIndex(where: { $0.key == key && $0.position == list.count }) {
                        moved.memberships[k].position = position
                    }
                }
                if !list.isEmpty { lists[key] = list }
            }
            extras.memberships.removeAll()
            return
        }
        let p = Int(everythingPosition)
        guard p < everything.count, everything[p] == slot else { return }
        let last = everything.removeLast()
        if p < everything.count {
            everything[p] = last
            setPosition(last, UInt32(p))
        }
    }

    /// Puts `slot` in the list of each account it may read.
    func joinAccounts(_ slot: UInt32, _ hashes: [UInt64], _ extras: ConnectionExtras) {
        for h in hashes {
            let key = Self.accountKey(h)
            var list = lists.removeValue(forKey: key) ?? []
            extras.accountMemberships.append((key, list.count))
            list.append(slot)
            lists[key] = list
        }
    }

    func leaveAccounts(_ slot: UInt32, _ extras: ConnectionExtras, extrasOf: (UInt32) -> ConnectionExtras?) {
        for (key, position) in extras.accountMemberships {
            guard var list = lists.removeValue(forKey: key) else { continue }
            let last = list.removeLast()
            if position < list.count {
                list[position] = last
                if let moved = extrasOf(last), let k = moved.accountMemberships.firstIndex(where: { $0.key == key && $0.position == list.count }) {
                    moved.accountMemberships[k].position = position
                }
            }
            if !list.isEmpty { lists[key] = list }
        }
        extras.accountMemberships.removeAll()
    }

    /// Calls `body` with every connection that may want a message on (channel, symbol).
    /// `everything`: whether the default subscribers are candidates (not for a batch of
    /// private messages alone, which reach only their accounts' lists).
    @inline(__always)
    func forEachCandidate(keys: [UInt64], everything includeEverything: Bool = true, _ body: (UInt32) -> Void) {
        if includeEverything { for slot in everything { body(slot) } }
        for key in keys {
            if let list = lists[key] { for slot in list { body(slot) } }
        }
    }
}
