import Glibc
import Ingestion
import Logging
import Reactor
import WireProtocol

/// Compares secrets in time independent of where they differ.
func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    var diff = UInt8(truncatingIfNeeded: x.count ^ y.count)
    for i in 0..<max(x.count, y.count) {
        diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return diff == 0
}

extension HTTPStatus {
    static func of(_ code: Int) -> HTTPStatus {
        switch code {
        case 400: return .badRequest
        case 401: return .unauthorized
        case 403: return .forbidden
        case 413: return .contentTooLarge
        case 415: return .unsupportedMediaType
        case 503: return .serviceUnavailable
        default: return HTTPStatus(code, "Error")
        }
    }
}

/// A parsed request as the router sees it: the head and the body, both inside the buffer
/// that was read (valid only during the call).
struct HTTPRequest {
    let head: HTTPRequestHead
    let buffer: UnsafeRawBufferPointer
    let body: UnsafeRawBufferPointer

    var path: UnsafeRawBufferPointer { buffer.slice(head.path) }

    func pathIs(_ literal: StaticString) -> Bool {
        let p = path
        guard p.count == literal.utf8CodeUnitCount else { return false }
        return memcmp(p.baseAddress!, literal.utf8Start, p.count) == 0
    }

    func string(_ range: Range<Int>?) -> String? {
        guard let range else { return nil }
        return String(decoding: buffer.slice(range), as: UTF8.self)
    }

    var pathString: String { String(decoding: path, as: UTF8.self) }
    var methodString: String { String(decoding: buffer.slice(head.methodRange), as: UTF8.self) }
}

extension Worker {
    /// Parses and answers requests from `buffer[from...]` until one is incomplete, the
    /// connection upgrades, or a reply must come from off the reactor. Returns the position
    /// reached; what follows it is kept for the next read.
    func processHTTP(_ c: UnsafeMutablePointer<Connection>, _ buffer: UnsafeMutableRawBufferPointer, from start: Int) -> Int {
        var position = start
        while position < buffer.count && c.pointee.phase == .http {
            let rest = UnsafeRawBufferPointer(rebasing: buffer[position...])
            // A previous read may have searched part of this head already.
            let searchFrom = position == 0 ? max(0, Int(c.pointee.headScanned) - 3) : 0
            switch HTTPHeadParser.parse(rest, limits: config.httpLimits, searchFrom: searchFrom) {
            case .incomplete:
                c.pointee.headScanned = UInt32(rest.count)
                return position
            case .failure(let error):
                stats.httpRequests.bump()
                respondError(c, error.status, error.message, request: nil, close: true)
                return buffer.count
            case .complete(let head):
                c.pointee.headScanned = 0
                if head.chunked {
                    stats.httpRequests.bump()
                    respondError(c, .lengthRequired, "chunked request bodies are not supported; send Content-Length", request: nil, close: true)
                    return buffer.count
                }
                let bodyLength = head.contentLength ?? 0
                if bodyLength > config.maxRequestBodyBytes {
                    stats.httpRequests.bump()
                    respondError(c, .contentTooLarge, "request body of \(bodyLength) bytes is over the \(config.maxRequestBodyBytes)-byte limit", request: nil, close: true)
                    return buffer.count
                }
                let total = head.headLength + bodyLength
                if rest.count < total {
                    // Wait for the body; size the next read for it.
                    c.pointee.bodyRemaining = total - rest.count
                    if head.expectContinue && !c.pointee.flags.contains(.httpClose) && rest.count == head.headLength {
                        enqueue(c, UnsafeRawBufferPointer(staticString: "HTTP/1.1 100 Continue\r\n\r\n"))
                    }
                    return position
                }
                c.pointee.bodyRemaining = 0
                let request = HTTPRequest(
                    head: head, buffer: rest,
                    body: UnsafeRawBufferPointer(rebasing: rest[head.headLength..<total])
                )
                // Pipelined publishes are batched into one trip to the publisher; anything
                // else waits until that batch is answered, so responses stay in order.
                let isPublish = head.method == .post && request.pathIs("/api/publish")
                if !publishBatch.isEmpty && !isPublish {
                    dispatchPublishBatch(c)
                    return position
                }
                stats.httpRequests.bump()
                if head.keepAlive { c.pointee.flags.remove(.httpClose) } else { c.pointee.flags.insert(.httpClose) }
                position += total
                route(c, request)
                if !publishBatch.isEmpty && (c.pointee.flags.contains(.httpClose) || publishBatch.count >= 1024) {
                    dispatchPublishBatch(c)
                    return position
                }
                if c.pointee.phase == .http {
                    touchDeadline(&handshakeList, c.pointee.slot)
                }
            }
        }
        if !publishBatch.isEmpty { dispatchPublishBatch(c) }
        return position
    }

    // MARK: - Routing

    private func route(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest) {
        let head = request.head
        if head.method == .options {
            preflight(c, request)
            return
        }
        if request.pathIs("/ws") {
            if head.method != .get { return methodNotAllowed(c, request, allow: "GET, OPTIONS") }
            upgrade(c, request, to: .stream)
        } else if request.pathIs("/echo") && config.echo {
            if head.method != .get { return methodNotAllowed(c, request, allow: "GET, OPTIONS") }
            upgrade(c, request, to: .echo)
        } else if request.pathIs("/api/publish") {
            if head.method != .post { return methodNotAllowed(c, request, allow: "POST, OPTIONS") }
            publish(c, request)
        } else if request.pathIs("/api/snapshot") {
            if head.method != .get && head.method != .head { return methodNotAllowed(c, request, allow: "GET, HEAD, OPTIONS") }
            let publisher = context.publisher
            replyLater(c, request) {
                (.ok, await publisher.snapshotJSON(), [("Cache-Control", "no-store")])
            }
        } else if request.pathIs("/metrics") {
            if head.method != .get && head.method != .head { return methodNotAllowed(c, request, allow: "GET, HEAD") }
            let metrics = context.metrics
            replyLater(c, request, contentType: "text/plain; version=0.0.4; charset=utf-8") {
                (.ok, await metrics.render(), [("Cache-Control", "no-store")])
            }
        } else if request.pathIs("/health") {
            if head.method != .get && head.method != .head { return methodNotAllowed(c, request, allow: "GET, HEAD, OPTIONS") }
            respond(c, .ok, body: healthBody(), request: request)
        } else if let asset = StaticAssets.all[request.pathString] {
            if head.method != .get && head.method != .head { return methodNotAllowed(c, request, allow: "GET, HEAD") }
            let headers = [("ETag", asset.etag), ("Cache-Control", "no-cache")]
            if request.string(request.head.ifNoneMatch) == asset.etag {
                return respond(c, .notModified, body: [], request: request, headers: headers)
            }
            respond(c, .ok, contentType: asset.contentType, body: asset.bytes, request: request, headers: headers)
        } else {
            respondError(c, .notFound, "no route for \(request.methodString) \(request.pathString)", request: request)
        }
    }

    private func methodNotAllowed(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest, allow: String) {
        respondError(c, .methodNotAllowed, "\(request.methodString) is not allowed on \(request.pathString); use \(allow)",
                     request: request, headers: [("Allow", allow)])
    }

    /// CORS preflight (Fetch standard §3.2.2): allow the methods and headers the API uses.
    private func preflight(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest) {
        respond(c, .noContent, body: [], request: request, headers: [
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "authorization, content-type"),
            ("Access-Control-Max-Age", "86400"),
        ])
    }

    private func healthBody() -> [UInt8] {
        var webSockets = 0
        for worker in context.workers { webSockets += worker.stats.webSocketsOpen.load(ordering: .relaxed) }
        let uptime = Double(nowMonotonic - context.startedAtMonotonic) / 1000
        let status = shuttingDown ? "draining" : "ok"
        return Array("{\"status\":\"\(status)\",\"uptime_s\":\(uptime),\"workers\":\(context.workers.count),\"connections\":\(webSockets),\"version\":\"\(TickwireVersion.string)\"}".utf8)
    }

    // MARK: - Ingestion

    /// `POST /api/publish` (PROTOCOL.md): authorised here on the reactor, validated and
    /// sequenced by the publisher actor, answered when it is done.
    private func publish(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest) {
        let publisher = context.publisher
        if let token = config.publishToken {
            let given = request.string(request.head.authorization) ?? ""
            if !constantTimeEquals(given, "Bearer " + token) {
                Task(executorPreference: DedicatedExecutor.edge) { await publisher.recordRejection(reason: "unauthorized") }
                return respondError(c, .unauthorized, "publishing needs 'Authorization: Bearer <token>' with the server's --publish-token",
                                    request: request, headers: [("WWW-Authenticate", "Bearer realm=\"tickwire\"")])
            }
        } else if !c.pointee.peer.isLoopback {
            Task(executorPreference: DedicatedExecutor.edge) { await publisher.recordRejection(reason: "forbidden") }
            return respondError(c, .forbidden, "without --publish-token only loopback peers may publish; start the server with --publish-token",
                                request: request)
        }
        if let type = request.string(request.head.contentType)?.lowercased(),
           !type.hasPrefix("application/json"), !type.hasPrefix("text/json") {
            Task(executorPreference: DedicatedExecutor.edge) { await publisher.recordRejection(reason: "unsupported_media_type") }
            return respondError(c, .unsupportedMediaType, "Content-Type must be application/json (got \(type))", request: request)
        }
        publishBatch.append((Array(request.body), corsOrigin(request)))
    }

    /// Sends the publishes collected from one read to the publisher in one call; their
    /// frames reach the reactors together (one wake-up, one writev per subscriber).
    func dispatchPublishBatch(_ c: UnsafeMutablePointer<Connection>) {
        let batch = publishBatch
        publishBatch.removeAll(keepingCapacity: true)
        let publisher = context.publisher
        let keepAlive = !c.pointee.flags.contains(.httpClose) && !shuttingDown
        let slot = c.pointee.slot
        let generation = c.pointee.generation
        c.pointee.phase = .awaitingReply
        handshakeList.remove(slot) { timeoutLinks($0) }
        pauseReading(c)
        let worker = self
        Task(executorPreference: DedicatedExecutor.edge) {
            let outcomes = await publisher.publish(bodies: batch.map(\.body))
            let date = Timestamp.httpDate(secondsSinceEpoch: wallClockNanoseconds() / 1_000_000_000)
            var response: [UInt8] = []
            for (i, outcome) in outcomes.enumerated() {
                let last = i == outcomes.count - 1
                let (status, body): (HTTPStatus, [UInt8])
                switch outcome {
                case .accepted(let seqs):
                    var json = "{\"accepted\":\(seqs.count),\"seqs\":["
                    json += seqs.map(String.init).joined(separator: ",")
                    json += "]}"
                    (status, body) = (.accepted, Array(json.utf8))
                case let .rejected(code, _, message):
                    let s = HTTPStatus.of(code)
                    (status, body) = (s, ResponseWriter.errorBody(s, message))
                }
                response += ResponseWriter.build(status, body: body, keepAlive: last ? keepAlive : true, headOnly: false, cors: batch[i].cors, date: date)
            }
            worker.post(.httpReply(slot: slot, generation: generation, response: response, keepAlive: keepAlive))
        }
    }

    /// Hands a request to an actor; the connection reads nothing more until the reply
    /// comes back through the reactor's queue (`WorkerCommand.httpReply`).
    func replyLater(
        _ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest, contentType: String = "application/json",
        _ work: @escaping @Sendable () async -> (HTTPStatus, [UInt8], [(String, String)])
    ) {
        let slot = c.pointee.slot
        let generation = c.pointee.generation
        let keepAlive = request.head.keepAlive && !shuttingDown
        let headOnly = request.head.method == .head
        let cors = corsOrigin(request)
        c.pointee.phase = .awaitingReply
        handshakeList.remove(slot) { timeoutLinks($0) }
        pauseReading(c)
        let worker = self
        Task(executorPreference: DedicatedExecutor.edge) {
            let (status, body, headers) = await work()
            let response = ResponseWriter.build(
                status, contentType: contentType, body: body, headers: headers, keepAlive: keepAlive, headOnly: headOnly, cors: cors,
                date: Timestamp.httpDate(secondsSinceEpoch: wallClockNanoseconds() / 1_000_000_000)
            )
            worker.post(.httpReply(slot: slot, generation: generation, response: response, keepAlive: keepAlive))
        }
    }

    // MARK: - Responses

    /// The `Access-Control-Allow-Origin` value for this request, if any.
    func corsOrigin(_ request: HTTPRequest?) -> String? {
        let allowed = config.corsOrigins
        if allowed.contains("*") { return "*" }
        guard let request, let origin = request.string(request.head.origin) else { return nil }
        return allowed.contains(origin) ? origin : nil
    }

    func respond(
        _ c: UnsafeMutablePointer<Connection>, _ status: HTTPStatus, contentType: String = "application/json",
        body: [UInt8], request: HTTPRequest?, headers: [(String, String)] = [], close: Bool = false
    ) {
        let keepAlive = !close && !c.pointee.flags.contains(.httpClose) && !shuttingDown
        ResponseWriter(pool: pool).write(
            status, contentType: contentType, body: body, headers: headers, keepAlive: keepAlive,
            headOnly: request?.head.method == .head, cors: corsOrigin(request), date: httpDate,
            into: &c.pointee.output
        )
        if !keepAlive { c.pointee.flags.insert(.closeAfterFlush) }
        afterEnqueue(c)
    }

    func respondError(
        _ c: UnsafeMutablePointer<Connection>, _ status: HTTPStatus, _ message: String,
        request: HTTPRequest?, headers: [(String, String)] = [], close: Bool = false
    ) {
        if status.code >= 400 && status.code != 404 && status.code != 405 {
            logger.debug("HTTP \(status.code): \(message)", metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)"])
        }
        respond(c, status, body: ResponseWriter.errorBody(status, message), request: request, headers: headers, close: close)
    }

    /// A reply computed off the reactor arrives (`WorkerCommand.httpReply`).
    func deliverReply(slot: UInt32, generation: UInt32, response: [UInt8], keepAlive: Bool) {
        let c = table.pointer(slot)
        // The connection may have gone, and its slot been reused, while the reply was made.
        guard c.pointee.generation == generation, c.pointee.phase == .awaitingReply else { return }
        c.pointee.output.append(response, pool: pool)
        c.pointee.phase = .http
        if !keepAlive || c.pointee.flags.contains(.httpClose) || shuttingDown {
            c.pointee.flags.insert(.closeAfterFlush)
        } else {
            appendDeadline(&handshakeList, slot)
        }
        markDirty(c)
        resumeReading(c)
    }

    // MARK: - Upgrade

    private func upgrade(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest, to endpoint: Endpoint) {
        let head = request.head
        if !head.upgradeWebSocket {
            return respondError(c, .upgradeRequired, "\(request.pathString) is a WebSocket endpoint; send an upgrade request",
                                request: request, headers: [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        }
        if let failure = Handshake.validate(head, in: request.buffer) {
            stats.upgradesRejected.bump()
            var headers: [(String, String)] = []
            if failure == .unsupportedVersion { headers.append(("Sec-WebSocket-Version", "13")) }
            return respondError(c, failure.status, failure.message, request: request, headers: headers, close: true)
        }
        if shuttingDown {
            stats.upgradesRejected.bump()
            return respondError(c, .serviceUnavailable, "server is shutting down; reconnect to another node",
                                request: request, headers: [("Retry-After", "1")], close: true)
        }
        if context.admitted.add(1, ordering: .relaxed).newValue > config.maxConnections {
            context.admitted.subtract(1, ordering: .relaxed)
            stats.upgradesRejected.bump()
            logger.warning("connection limit reached; refusing upgrade", metadata: ["peer": "\(c.pointee.peer.description)", "limit": "\(config.maxConnections)"])
            return respondError(c, .serviceUnavailable, "connection limit of \(config.maxConnections) reached; retry later",
                                request: request, headers: [("Retry-After", "5")], close: true)
        }
        c.pointee.flags.insert(.admitted)

        // 101 Switching Protocols (§4.2.2), written straight into the output queue.
        let key = request.buffer.slice(head.webSocketKey!)
        let prefix: StaticString = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        let p = c.pointee.output.reserve(prefix.utf8CodeUnitCount + 28 + 4, pool: pool)
        p.copyMemory(from: prefix.utf8Start, byteCount: prefix.utf8CodeUnitCount)
        var n = prefix.utf8CodeUnitCount
        n += Handshake.writeAcceptValue(key: key, into: p + n)
        (p + n).storeBytes(of: UInt32(0x0A0D_0A0D), as: UInt32.self)   // "\r\n\r\n"
        c.pointee.output.commit(n + 4)

        c.pointee.phase = .webSocket
        c.pointee.endpoint = endpoint
        c.pointee.session = WebSocketSession(role: .server, maxMessageSize: UInt64(config.maxMessageSize))
        handshakeList.remove(c.pointee.slot) { timeoutLinks($0) }
        appendDeadline(&idleList, c.pointee.slot)
        appendDeadline(&pingList, c.pointee.slot)
        stats.webSocketsOpen.bump(1)
        stats.webSocketsTotal.bump()
        logger.info("WebSocket client connected from \(c.pointee.peer.host)",
                    metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "path": "\(request.pathString)"])
        webSocketOpened(c, request)
        markDirty(c)
    }
}

extension UnsafeRawBufferPointer {
    init(staticString: StaticString) {
        self.init(start: staticString.utf8Start, count: staticString.utf8CodeUnitCount)
    }
}
