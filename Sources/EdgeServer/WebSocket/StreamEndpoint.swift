import AccessToken
import Logging
import Reactor
import TradingStream
import WireProtocol

/// The `/ws` trading stream's per-connection protocol (PROTOCOL.md): the greeting,
/// client messages (Ping, Subscribe, Unsubscribe), resume, and per-connection errors.
/// This file holds the session's state and message dispatch; each concern is an extension in
/// StreamEndpoint+Subscriptions/TokenRefresh/Resume/Sending.swift.
final class StreamEndpoint {
    unowned(unsafe) let worker: Worker
    let path: BroadcastPath
    let output: OutputFlusher
    let stats: WorkerStats
    let config: ServerConfiguration
    let context: ServerContext
    var envelope = EnvelopeWriter(capacity: 512)
    var invalidLogSecond: UInt64 = 0
    var invalidLogCount = 0
    var invalidLogSuppressed = 0

    init(worker: Worker, path: BroadcastPath, output: OutputFlusher) {
        self.worker = worker
        self.path = path
        self.output = output
        stats = worker.stats
        config = worker.config
        context = worker.context
    }

    var log: BroadcastLog { path.log }
    var logger: Logger { worker.logger }

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
}
