// Over 500 lines, on purpose for now: subscribe, token refresh, resume and sending all read
// and write the same connection slot and its extras on the reactor, through private helpers;
// splitting them across files would widen those helpers to module scope. The planned cut
// (next session) is Subscribe/Resume/TokenRefresh into their own files, per its MARK sections.
import AccessToken
import Logging
import Reactor
import TradingStream
import WireProtocol

/// The `/ws` trading stream's per-connection protocol (PROTOCOL.md): the greeting,
/// client messages (Ping, Subscribe, Unsubscribe), resume, and per-connection errors.
final class StreamEndpoint {
    private unowned(unsafe) let worker: Worker
    private let path: BroadcastPath
    private let output: OutputFlusher
    private let stats: WorkerStats
    private let config: ServerConfiguration
    private let context: ServerContext
    private var envelope = EnvelopeWriter(capacity: 512)
    private var invalidLogSecond: UInt64 = 0
    private var invalidLogCount = 0
    private var invalidLogSuppressed = 0

    init(worker: Worker, path: BroadcastPath, output: OutputFlusher) {
        self.worker = worker
        self.path = path
        self.output = output
        stats = worker.stats
        config = worker.config
        context = worker.context
    }

    private var log: BroadcastLog { path.log }
    private var logger: Logger { worker.logger }

    /// A `/ws` session just opened. Query parameters may narrow the subscription
    /// (`channels`, `symbols`) and resume (`epoch`, `since`) before anything is sent.
    /// `grant`: what the upgrade's token allows (nil: no token).
    func opened(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest, query: QueryParameters, grant: AccessGrant?) {
        // Everything queued so far (the 101) goes before any frame.
        c.pointee.controlMark = log.end
        c.pointee.controlSeq = log.headSeq
        c.pointee.liveFromSeq = log.headSeq
        c.pointee.minSeq = 0
        c.pointee.rateTokens = Float(2 * config.maxMessagesPerSecond)
        c.pointee.rateStamp = worker.clock.now
        c.pointee.bandwidthCap = AccessGrant.bandwidthCap(server: config.maxBandwidthBytesPerSecond, grant: grant)
        c.pointee.bandwidthTokens = c.pointee.bandwidthCap
        c.pointee.bandwidthStamp = worker.clock.now
        if let grant {
            c.pointee.flags.insert(.authenticated)
            path.grant(c, grant)
            if let exp = grant.expiresAt { worker.tokens.track(c, expiresAt: exp) }
        }

        // The default is everything the token allows.
        var subscription = (try? permit(Subscription.everything, channels: nil, symbols: nil, grant).get()) ?? .everything
        var problem: (code: String, message: String, details: String?)?
        if query["channels"] != nil || query["symbols"] != nil {
            let channels = query["channels"].map { splitList($0) }
            let symbols = query["symbols"].map { splitList($0) }
            switch parseSubscription(channels: channels, symbols: symbols).flatMap({ permit($0, channels: channels, symbols: symbols, grant) }) {
            case .success(let s): subscription = s
            case .failure(let p): problem = (p.code, p.message, p.details)
            }
        }
        if let text = query["max_frequency"] {
            // The URL form of Subscribe's max_frequency, so a reconnect keeps its rate.
            switch checkFrequency(Int(text)) {
            case .success(let n): if problem == nil { subscription.maxFrequency = n }
            case .failure(let p): problem = (p.code, p.message, p.details)
            }
        }
        path.joinIndex(c, subscription)

        var resumed: (recovered: Bool, replayed: Int)?
        if let epoch = query["epoch"], let sinceText = query["since"] {
            if let since = UInt64(sinceText) {
                resumed = resume(c, epoch: epoch, since: since)
            } else {
                problem = ("INVALID_MESSAGE", "'since' must be a non-negative integer", nil)
            }
        }
        let stamp = c.pointee.controlSeq
        var data = EnvelopeWriter(capacity: 160)
        data.appendRaw("{\"epoch\":\"\(path.epoch)\",\"seq\":\(log.headSeq),\"heartbeat_interval_ms\":\(config.pingIntervalMilliseconds),\"server\":\"tickwire/\(TickwireVersion.string)\"")
        if let grant {
            data.appendRaw(",\"accounts\":[")
            for (i, a) in grant.accounts.enumerated() {
                if i > 0 { data.appendRaw(",") }
                data.appendQuoted(a)
            }
            data.appendRaw("]")
            if let exp = grant.expiresAt { data.appendRaw(",\"expires_at\":\(exp)") }
        }
        data.appendRaw("}")
        sendMessage(c, type: "Connected", data: data.bytes, message: "WebSocket connection established", seq: stamp)
        if let resumed {
            sendConfirmation(c, resumed: resumed, seq: stamp)
        } else if !subscription.isEverything || subscription.maxFrequency > 0 {
            sendConfirmation(c, resumed: nil, seq: stamp)
        }
        if let problem { sendError(c, code: problem.code, message: problem.message, details: problem.details) }
        output.markDirty(c)
    }

    /// A message from a `/ws` client (FR-WEBSOCKET-006 for the errors).
    func onClientMessage(_ c: UnsafeMutablePointer<Connection>, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
        if !withinRate(c) { return }
        if opcode == .binary {
            stats.parseErrors.bump()
            sendError(c, code: "INVALID_MESSAGE", message: "binary messages are not accepted on /ws; send JSON text", details: nil)
            return
        }
        let root: JSONValue
        do {
            root = try JSONScanner.parse(payload)
        } catch {
            stats.parseErrors.bump()
            logInvalid(c, payload, reason: "\(error)")
            sendError(c, code: "INVALID_JSON", message: "message is not valid JSON: \(error)", details: "{\"offset\":\(error.offset)}")
            return
        }
        guard root.kind == .object,
              let typeValue = JSONScanner.member("type", of: root, in: payload),
              let type = JSONScanner.string(typeValue, in: payload)
        else {
            stats.parseErrors.bump()
            logInvalid(c, payload, reason: "no string 'type'")
            sendError(c, code: "INVALID_MESSAGE", message: "messages must be JSON objects with a string 'type'", details: nil)
            return
        }
        let data = JSONScanner.member("data", of: root, in: payload)
        switch type {
        case "Ping":
            sendMessage(c, type: "Pong", data: nil, message: nil)
        case "Subscribe":
            subscribe(c, data, payload)
        case "Unsubscribe":
            unsubscribe(c, data, payload)
        case "Refresh":
            refresh(c, data, payload)
        default:
            // Forward compatibility (FR-WEBSOCKET-002): newer clients may send types we do not know.
            logger.debug("ignoring unknown client message type", metadata: ["conn": "\(c.pointee.id)", "type": "\(type)"])
        }
    }

    /// The connection's token bucket (--max-messages-per-second, two seconds' burst). Past
    /// it a message is dropped unread; the first of a run is answered `RATE_LIMITED`, and
    /// a peer that keeps flooding (ten seconds' worth dropped in a row) is closed with 1008,
    /// so that what it costs the reactor stays bounded.
    @inline(__always)
    private func withinRate(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        let rate = Float(config.maxMessagesPerSecond)
        let now = worker.clock.now
        let elapsed = Float(now &- c.pointee.rateStamp)
        c.pointee.rateStamp = now
        c.pointee.rateTokens = min(2 * rate, c.pointee.rateTokens + elapsed * rate / 1000)
        if c.pointee.rateTokens >= 1 {
            c.pointee.rateTokens -= 1
            c.pointee.rateDropped = 0
            return true
        }
        c.pointee.rateDropped += 1
        stats.limitRefusals[LimitKind.messageRate.rawValue].bump()
        if c.pointee.rateDropped == 1 {
            sendError(c, code: "RATE_LIMITED", message: "more than \(config.maxMessagesPerSecond) messages per second; messages are dropped until you slow down",
                      details: "{\"limit_per_second\":\(config.maxMessagesPerSecond)}")
            output.markDirty(c)
        } else if c.pointee.rateDropped > UInt32(10 * config.maxMessagesPerSecond) {
            stats.floodCloses.bump()
            worker.lifecycle.close(c, .policy, reason: "message flood")
        }
        return false
    }

    // MARK: - Subscribe / Unsubscribe

    struct SubscriptionProblem: Error {
        let code: String
        let message: String
        let details: String?
    }

    private func subscribe(_ c: UnsafeMutablePointer<Connection>, _ data: JSONValue?, _ raw: UnsafeRawBufferPointer) {
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

    private func unsubscribe(_ c: UnsafeMutablePointer<Connection>, _ data: JSONValue?, _ raw: UnsafeRawBufferPointer) {
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

    private func parseSubscription(channels: [String]?, symbols: [String]?) -> Result<Subscription, SubscriptionProblem> {
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
    private func checkFrequency(_ value: Int?) -> Result<Int, SubscriptionProblem> {
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
    private func permit(_ s: Subscription, channels: [String]?, symbols: [String]?, _ grant: AccessGrant?) -> Result<Subscription, SubscriptionProblem> {
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

    // MARK: - Token refresh

    /// `{"type":"Refresh","data":{"token":"..."}}` (PROTOCOL.md "Token refresh"): a valid
    /// token for the same accounts extends the connection's life to its `exp`.
    private func refresh(_ c: UnsafeMutablePointer<Connection>, _ data: JSONValue?, _ raw: UnsafeRawBufferPointer) {
        guard let current = BroadcastPath.grant(of: c) else {
            return sendError(c, code: "INVALID_MESSAGE", message: "this connection has no token to refresh; connect with one", details: nil)
        }
        guard let data, data.kind == .object, let t = JSONScanner.member("token", of: data, in: raw), let token = JSONScanner.string(t, in: raw) else {
            return sendError(c, code: "INVALID_MESSAGE", message: "Refresh needs 'data' with a string 'token'", details: nil)
        }
        switch worker.authenticator.verify(token) {
        case .failure(let f):
            stats.tokenRefreshesRefused.bump()
            sendError(c, code: "TOKEN_INVALID", message: "refresh refused: \(f.message); the current token stays in force until it expires",
                      details: "{\"reason\":\"\(f.code)\"}")
        case .success(var fresh):
            guard Set(fresh.accounts) == Set(current.accounts) else {
                stats.tokenRefreshesRefused.bump()
                return sendError(c, code: "FORBIDDEN", message: "a refresh token must name the same accounts as the connection's; reconnect to change accounts",
                                 details: nil)
            }
            stats.tokenRefreshes.bump()
            // The grant's accounts stay (the index lists are theirs); permissions and expiry are the new token's.
            fresh.accounts = current.accounts
            BroadcastPath.extras(c)?.grant = fresh
            c.pointee.bandwidthCap = AccessGrant.bandwidthCap(server: config.maxBandwidthBytesPerSecond, grant: fresh)
            c.pointee.bandwidthTokens = min(c.pointee.bandwidthTokens, c.pointee.bandwidthCap == 0 ? Int.max : c.pointee.bandwidthCap)
            // Entries for the old `exp` go stale by themselves.
            if let exp = fresh.expiresAt { worker.tokens.track(c, expiresAt: exp) }
            var body = EnvelopeWriter(capacity: 48)
            body.appendRaw("{\"expires_at\":\(fresh.expiresAt.map(String.init) ?? "null")}")
            sendMessage(c, type: "TokenRefreshed", data: body.bytes, message: nil)
            // A token that grants less narrows the subscription now, not at the next Subscribe.
            let before = path.currentSubscription(c)
            var narrowed = before
            narrowed.channelMask &= fresh.channelMask
            if let allowed = fresh.symbols {
                let keep = narrowed.symbols.isEmpty ? allowed : narrowed.symbols.filter { allowed.contains($0) }
                let mask = narrowed.channelMask
                let frequency = narrowed.maxFrequency
                narrowed = Subscription(channels: narrowed.channels, symbols: keep)
                narrowed.channelMask = keep.isEmpty ? 0 : mask
                narrowed.maxFrequency = frequency
            }
            if narrowed != before {
                path.joinIndex(c, narrowed)
                sendConfirmation(c, resumed: nil, seq: path.placeControl(c))
            }
        }
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

    private func splitList(_ s: String) -> [String] {
        s.split(separator: ",").map { String($0) }.filter { !$0.isEmpty }
    }

    // MARK: - Resume

    /// Replays what a reconnecting client missed (PROTOCOL.md "Resume"). Positions the
    /// connection's own messages (the confirmation) just before the replay.
    func resume(_ c: UnsafeMutablePointer<Connection>, epoch: String, since: UInt64) -> (recovered: Bool, replayed: Int) {
        stats.resumes.bump()
        let head = log.headSeq
        guard epoch == path.epoch else { return (false, 0) }
        // A resume point this epoch never issued (a `since` beyond its head) cannot be
        // honoured: claiming it would silently skip everything up to that seq.
        if since > context.queues.headSeq.load(ordering: .acquiring) { return (false, 0) }
        if since >= head {
            // Nothing missed yet; this reactor may even be behind the client.
            c.pointee.minSeq = max(c.pointee.minSeq, since)
            if let t = BroadcastPath.extras(c)?.throttle { t.lastSent = max(t.lastSent, since) }
            c.pointee.controlSeq = since
            stats.resumesRecovered.bump()
            return (true, 0)
        }
        let window = UInt64(min(log.epochCount, config.historySize))
        guard window > 0 else { return (false, 0) }
        let oldest = log.entry(log.end - window).pointee.seq
        guard since + 1 >= oldest else { return (false, 0) }
        let from = log.firstIndex(afterSeq: since)
        c.pointee.minSeq = since
        var replayed = 0
        if !c.pointee.flags.contains(.sentBroadcast) && BroadcastPath.slowQueue(c) == nil {
            // Nothing sent live yet: rewind the cursor; the confirmation goes first. A throttled
            // subscriber's prices and candles replay conflated: its groups' newest update
            // per key after `since`.
            if let x = BroadcastPath.extras(c), let t = x.throttle {
                t.lastSent = since
                path.rateGroups.seed(c, t, x.subscription, log: log, from: from)
            }
            var index = from
            while index < log.end {
                if BroadcastPath.matches(c, log.entry(index)) { replayed += 1 }
                index += 1
            }
            c.pointee.cursor = from
            c.pointee.cursorOffset = 0
            if from < log.end { c.pointee.flags.insert(.broadcastPending) }
            c.pointee.controlMark = from
            c.pointee.controlSeq = since
        } else {
            // Frames already went out live: replay the ones from before this stream began
            // through the connection's own queue, ahead of anything still pending.
            let queue = SlowConsumerQueue()
            let existing = BroadcastPath.slowQueue(c)
            var pendingFrom = log.end
            if existing == nil && c.pointee.flags.contains(.broadcastPending) {
                pendingFrom = c.pointee.cursor
                if c.pointee.cursorOffset > 0 {
                    let e = log.entry(c.pointee.cursor)
                    let (bytes, count) = worker.streamFlusher.wire(c, e)
                    queue.append(e.pointee.frame, bytes: bytes, count: count, key: 0)
                    queue.consume(Int(c.pointee.cursorOffset))
                    pendingFrom += 1
                }
            }
            let mark = queue.end
            let to = log.firstIndex(afterSeq: c.pointee.liveFromSeq)
            var index = from
            var replayBytes = 0
            while index < to {
                let e = log.entry(index)
                if BroadcastPath.matches(c, e) {
                    let (bytes, count) = worker.streamFlusher.wire(c, e)
                    queue.append(e.pointee.frame, bytes: bytes, count: count, key: 0)
                    replayed += 1
                    replayBytes += Int(count)
                }
                index += 1
            }
            index = max(pendingFrom, to)
            while index < log.end {
                let e = log.entry(index)
                if BroadcastPath.matches(c, e) {
                    let key = Channel(rawValue: e.pointee.channel)!.isConflatable ? e.pointee.conflationKey : 0
                    let (bytes, count) = worker.streamFlusher.wire(c, e)
                    queue.append(e.pointee.frame, bytes: bytes, count: count, key: key)
                }
                index += 1
            }
            queue.allowance = replayBytes
            if existing == nil {
                c.pointee.flags.remove(.broadcastPending)
                c.pointee.cursorOffset = 0
                path.setSlowQueue(c, queue)
                c.pointee.controlMark = mark
            }
            // (A client already in slow-consumer mode resumes via reconnect instead.)
            c.pointee.controlSeq = since
        }
        stats.resumesRecovered.bump()
        output.markDirty(c)
        return (true, replayed)
    }

    // MARK: - Sending

    /// Sends a per-connection message; `seq` overrides the stamp (greeting and resume).
    func sendMessage(_ c: UnsafeMutablePointer<Connection>, type: String, data: [UInt8]?, message: String?, seq: UInt64? = nil) {
        let stamp = seq ?? path.placeControl(c)
        envelope.begin(type: type, seq: stamp)
        if let data { envelope.data(data) }
        if let message { envelope.message(message) }
        envelope.end(timestampMilliseconds: worker.clock.wall)
        envelope.bytes.withUnsafeBytes { output.enqueueFrame(c, .text, $0, placeInStream: false) }
        stats.messagesSent.bump()
    }

    private func sendConfirmation(_ c: UnsafeMutablePointer<Connection>, resumed: (recovered: Bool, replayed: Int)?, seq: UInt64) {
        let subscription = path.currentSubscription(c)
        var w = EnvelopeWriter(capacity: 256)
        w.appendRaw("{\"channels\":[")
        for (i, channel) in subscription.channels.enumerated() {
            if i > 0 { w.appendRaw(",") }
            w.appendRaw("\"\(channel.typeName)\"")
        }
        w.appendRaw("],\"symbols\":[")
        for (i, symbol) in subscription.symbols.enumerated() {
            if i > 0 { w.appendRaw(",") }
            w.appendQuoted(symbol)
        }
        w.appendRaw("]")
        if subscription.maxFrequency > 0 { w.appendRaw(",\"max_frequency\":\(subscription.maxFrequency)") }
        if let resumed {
            w.appendRaw(",\"recovered\":\(resumed.recovered),\"replayed\":\(resumed.replayed),\"epoch\":\"\(path.epoch)\",\"head\":\(log.headSeq)")
        }
        w.appendRaw("}")
        sendMessage(c, type: "SubscriptionConfirmed", data: w.bytes, message: nil, seq: seq)
    }

    /// An `Error` message for this connection (FR-WEBSOCKET-006's format).
    func sendError(_ c: UnsafeMutablePointer<Connection>, code: String, message: String, details: String?) {
        var w = EnvelopeWriter(capacity: 256)
        w.appendRaw("{\"message\":")
        w.appendQuoted(message)
        w.appendRaw(",\"code\":\"\(code)\"")
        if let details { w.appendRaw(",\"details\":\(details)") }
        w.appendRaw("}")
        sendMessage(c, type: "Error", data: w.bytes, message: nil)
    }

    /// The spec's "Invalid message format" warning, rate-limited per reactor so a client
    /// cannot flood the log.
    private func logInvalid(_ c: UnsafeMutablePointer<Connection>, _ payload: UnsafeRawBufferPointer, reason: String) {
        let second = worker.clock.monotonic / 1000
        if second != invalidLogSecond {
            if invalidLogSuppressed > 0 {
                logger.warning("suppressed \(invalidLogSuppressed) invalid-message warnings")
            }
            invalidLogSecond = second
            invalidLogCount = 0
            invalidLogSuppressed = 0
        }
        invalidLogCount += 1
        if invalidLogCount > 10 { invalidLogSuppressed += 1; return }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: payload.prefix(200)), as: UTF8.self)
        logger.warning("Invalid message format: \(text)", metadata: [
            "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "reason": "\(reason)",
        ])
    }
}
