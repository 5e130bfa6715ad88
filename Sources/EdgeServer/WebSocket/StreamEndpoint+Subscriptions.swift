// Subscribe and Unsubscribe (PROTOCOL.md "Subscriptions"): parsing the lists, checking them
// against the token's grant, and the per-connection errors they produce.
import AccessToken
import Logging
import Reactor
import TradingStream
import WireProtocol

extension StreamEndpoint {
    // MARK: - Subscribe / Unsubscribe

    struct SubscriptionProblem: Error {
        let code: String
        let message: String
        let details: String?
    }

    func subscribe(_ c: UnsafeMutablePointer<Connection>, _ data: JSONValue?, _ raw: UnsafeRawBufferPointer) {
        if let data, data.kind != .object {
            return sendError(c, code: "INVALID_MESSAGE", message: "'data' must be an object", details: nil)
        }
        var channels: [String]?
        var symbols: [String]?
        var resumeRequest: (epoch: String, since: UInt64)?
        var maxFrequency = 0
        if let data {
            if let value = JSONScanner.member("max_frequency", of: data, in: raw), value.kind != .null {
                switch checkFrequency(JSONScanner.integer(value, in: raw).map { Int(clamping: $0) }) {
                case .success(let n): maxFrequency = n
                case .failure(let p): return sendError(c, code: p.code, message: p.message, details: p.details)
                }
            }
            if let value = JSONScanner.member("channels", of: data, in: raw) {
                guard let list = stringList(value, raw) else {
                    return sendError(c, code: "INVALID_SUBSCRIPTION", message: "'channels' must be an array of strings", details: nil)
                }
                channels = list
            }
            if let value = JSONScanner.member("symbols", of: data, in: raw) {
                guard let list = stringList(value, raw) else {
                    return sendError(c, code: "INVALID_SUBSCRIPTION", message: "'symbols' must be an array of strings", details: nil)
                }
                symbols = list
            }
            if let value = JSONScanner.member("resume", of: data, in: raw), value.kind != .null {
                guard value.kind == .object,
                      let e = JSONScanner.member("epoch", of: value, in: raw), let epoch = JSONScanner.string(e, in: raw),
                      let s = JSONScanner.member("since", of: value, in: raw), let since = JSONScanner.integer(s, in: raw), since >= 0
                else {
                    return sendError(c, code: "INVALID_MESSAGE", message: "'resume' must be {\"epoch\": string, \"since\": non-negative integer}", details: nil)
                }
                resumeRequest = (epoch, UInt64(since))
            }
        }
        var subscription: Subscription
        switch parseSubscription(channels: channels, symbols: symbols).flatMap({ permit($0, channels: channels, symbols: symbols, BroadcastPath.grant(of: c)) }) {
        case .success(let s): subscription = s
        case .failure(let p): return sendError(c, code: p.code, message: p.message, details: p.details)
        }
        subscription.maxFrequency = maxFrequency
        path.joinIndex(c, subscription)
        var resumed: (recovered: Bool, replayed: Int)?
        if let resumeRequest {
            resumed = resume(c, epoch: resumeRequest.epoch, since: resumeRequest.since)
            sendConfirmation(c, resumed: resumed, seq: c.pointee.controlSeq)
        } else {
            sendConfirmation(c, resumed: nil, seq: path.placeControl(c))
        }
    }

    func unsubscribe(_ c: UnsafeMutablePointer<Connection>, _ data: JSONValue?, _ raw: UnsafeRawBufferPointer) {
        guard let data, data.kind == .object else {
            return sendError(c, code: "INVALID_MESSAGE", message: "Unsubscribe needs 'data' with 'channels' and/or 'symbols'", details: nil)
        }
        var current = path.currentSubscription(c)
        if let value = JSONScanner.member("channels", of: data, in: raw) {
            guard let list = stringList(value, raw) else {
                return sendError(c, code: "INVALID_SUBSCRIPTION", message: "'channels' must be an array of strings", details: nil)
            }
            let (known, unknown) = resolveChannels(list)
            if !unknown.isEmpty { return unknownChannels(c, unknown) }
            for channel in known { current.channelMask &= ~channel.bit }
        }
        if let value = JSONScanner.member("symbols", of: data, in: raw) {
            guard let list = stringList(value, raw) else {
                return sendError(c, code: "INVALID_SUBSCRIPTION", message: "'symbols' must be an array of strings", details: nil)
            }
            if !list.isEmpty {
                if current.symbols.isEmpty {
                    return sendError(c, code: "INVALID_SUBSCRIPTION",
                                     message: "this connection receives every symbol; Subscribe with the symbols you want instead of unsubscribing some",
                                     details: nil)
                }
                let remaining = current.symbols.filter { !list.contains($0) }
                let frequency = current.maxFrequency
                current = Subscription(channels: current.channels, symbols: remaining)
                current.maxFrequency = frequency
                // No symbols left means nothing left, not "every symbol".
                if remaining.isEmpty { current.channelMask = 0 }
            }
        }
        path.joinIndex(c, current)
        sendConfirmation(c, resumed: nil, seq: path.placeControl(c))
    }

    func parseSubscription(channels: [String]?, symbols: [String]?) -> Result<Subscription, SubscriptionProblem> {
        var resolved = Channel.allCases
        if let channels {
            let (known, unknown) = resolveChannels(channels)
            if !unknown.isEmpty {
                return .failure(SubscriptionProblem(
                    code: "UNKNOWN_CHANNEL",
                    message: "unknown channel\(unknown.count > 1 ? "s" : ""): \(unknown.joined(separator: ", "))",
                    details: unknownChannelDetails(unknown)))
            }
            resolved = known
        }
        let symbolList = symbols ?? []
        if symbolList.count > config.maxSymbolsPerSubscription {
            return .failure(SubscriptionProblem(code: "INVALID_SUBSCRIPTION",
                message: "\(symbolList.count) symbols; at most \(config.maxSymbolsPerSubscription) per subscription", details: nil))
        }
        if let bad = symbolList.first(where: { $0.isEmpty || $0.utf8.count > 64 }) {
            return .failure(SubscriptionProblem(code: "INVALID_SUBSCRIPTION",
                message: "symbol '\(bad.prefix(64))' must be 1 to 64 bytes", details: nil))
        }
        return .success(Subscription(channels: resolved, symbols: symbolList))
    }

    /// `max_frequency`: a whole number of updates per second per key, 1 to
    /// --max-frequency-limit. (nil: not an integer.)
    func checkFrequency(_ value: Int?) -> Result<Int, SubscriptionProblem> {
        let limit = config.maxFrequencyLimit
        guard let n = value, (1...limit).contains(n) else {
            return .failure(SubscriptionProblem(code: "INVALID_SUBSCRIPTION",
                message: "'max_frequency' must be a whole number of updates per second from 1 to \(limit), or null for every update",
                details: "{\"max_frequency_limit\":\(limit)}"))
        }
        return .success(n)
    }

    /// The subscription within what the token grants (PROTOCOL.md "Permissions"). Channels
    /// or symbols the client named beyond it: FORBIDDEN, and nothing changes. Where it named
    /// none, the subscription narrows to what is granted.
    func permit(_ s: Subscription, channels: [String]?, symbols: [String]?, _ grant: AccessGrant?) -> Result<Subscription, SubscriptionProblem> {
        guard let grant else { return .success(s) }
        var s = s
        if channels != nil {
            let forbidden = grant.forbiddenChannels(s.channelMask)
            if !forbidden.isEmpty {
                stats.forbiddenSubscriptions.bump()
                return .failure(SubscriptionProblem(code: "FORBIDDEN", message: "your token does not allow channel\(forbidden.count > 1 ? "s" : "") \(forbidden.joined(separator: ", "))",
                                                    details: Self.listJSON("channels", forbidden)))
            }
        } else {
            s.channelMask &= grant.channelMask
        }
        if let allowed = grant.symbols {
            if let symbols, !symbols.isEmpty {
                let forbidden = grant.forbiddenSymbols(symbols)
                if !forbidden.isEmpty {
                    stats.forbiddenSubscriptions.bump()
                    return .failure(SubscriptionProblem(code: "FORBIDDEN", message: "your token does not allow symbol\(forbidden.count > 1 ? "s" : "") \(forbidden.prefix(16).joined(separator: ", "))",
                                                        details: Self.listJSON("symbols", forbidden)))
                }
            } else {
                // "Every symbol" means every symbol granted; none granted means none at all.
                s = Subscription(channels: s.channels, symbols: allowed)
                if allowed.isEmpty { s.channelMask = 0 }
            }
        }
        return .success(s)
    }

    private static func listJSON(_ key: String, _ items: [String]) -> String {
        var w = EnvelopeWriter(capacity: 128)
        w.appendRaw("{\"\(key)\":[")
        for (i, item) in items.prefix(64).enumerated() {
            if i > 0 { w.appendRaw(",") }
            w.appendQuoted(String(item.prefix(64)))
        }
        w.appendRaw("]}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    private func resolveChannels(_ names: [String]) -> (known: [Channel], unknown: [String]) {
        var known: [Channel] = []
        var unknown: [String] = []
        for name in names {
            if let c = Channel(name: name) { if !known.contains(c) { known.append(c) } } else { unknown.append(name) }
        }
        return (known, unknown)
    }

    private func unknownChannelDetails(_ unknown: [String]) -> String {
        var w = EnvelopeWriter(capacity: 256)
        w.appendRaw("{\"channels\":[")
        for (i, name) in unknown.enumerated() {
            if i > 0 { w.appendRaw(",") }
            w.appendQuoted(String(name.prefix(64)))
        }
        w.appendRaw("],\"available\":[")
        for (i, c) in Channel.allCases.enumerated() {
            if i > 0 { w.appendRaw(",") }
            w.appendRaw("\"\(c.typeName)\",\"\(c.alias)\"")
        }
        w.appendRaw("]}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    private func unknownChannels(_ c: UnsafeMutablePointer<Connection>, _ unknown: [String]) {
        sendError(c, code: "UNKNOWN_CHANNEL", message: "unknown channel\(unknown.count > 1 ? "s" : ""): \(unknown.joined(separator: ", "))",
                  details: unknownChannelDetails(unknown))
    }

    private func stringList(_ value: JSONValue, _ raw: UnsafeRawBufferPointer) -> [String]? {
        guard value.kind == .array else { return nil }
        var out: [String] = []
        for element in JSONScanner.elements(of: value, in: raw) {
            guard let s = JSONScanner.string(element, in: raw) else { return nil }
            out.append(s)
        }
        return out
    }

    func splitList(_ s: String) -> [String] {
        s.split(separator: ",").map { String($0) }.filter { !$0.isEmpty }
    }
}
