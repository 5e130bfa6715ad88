import AccessToken
import Glibc
import Ingestion
import Logging
import Reactor
import TradingStream
import Upstream
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

/// HTTP/1.1 on a reactor: parses request heads (pipelined ones too), routes them, answers
/// on the reactor or hands the request to the edge actors, and performs the WebSocket
/// upgrade. Every answer tells the connection's lifecycle, which decides whether another
/// request may follow (keep-alive) or the connection closes after this one.
final class HTTPEndpoint {
    private unowned(unsafe) let worker: Worker
    private let output: OutputFlusher
    private let pool: BufferPool
    private let stats: WorkerStats
    private let config: ServerConfiguration
    /// Publish requests parsed from the current read, not yet handed to the publisher.
    private var publishBatch: [(body: [UInt8], cors: String?)] = []
    /// Most pipelined publishes handed to the publisher in one trip.
    static let maxPublishBatch = 1024

    init(worker: Worker, output: OutputFlusher) {
        self.worker = worker
        self.output = output
        pool = worker.pool
        stats = worker.stats
        config = worker.config
    }

    /// Parses and answers requests from `buffer[from...]` while the lifecycle accepts them:
    /// until one is incomplete, the connection upgrades, a reply must come from the edge,
    /// or a response said `Connection: close`. Returns the position reached.
    func process(_ c: UnsafeMutablePointer<Connection>, _ buffer: UnsafeMutableRawBufferPointer, from start: Int) -> Int {
        if c.pointee.flags.contains(.plainOnTLSPort) {
            stats.httpRequests.bump()
            respondError(c, .badRequest, "this port speaks TLS only: use https:// or wss://", request: nil, close: true)
            return buffer.count
        }
        var position = start
        while position < buffer.count && c.pointee.lifecycle.acceptsRequests {
            let rest = UnsafeRawBufferPointer(rebasing: buffer[position...])
            // A previous read may have searched part of this head already.
            let searchFrom = position == 0 ? max(0, Int(c.pointee.headScanned) - 3) : 0
            switch HTTPHeadParser.parse(rest, limits: config.httpLimits, searchFrom: searchFrom) {
            case .incomplete:
                c.pointee.headScanned = UInt32(rest.count)
                break
            case .failure(let error):
                // Publishes parsed before it are answered first; this is parsed again after.
                if !publishBatch.isEmpty { dispatchPublishBatch(c); return position }
                stats.httpRequests.bump()
                respondError(c, error.status, error.message, request: nil, close: true)
                return buffer.count
            case .complete(let head):
                c.pointee.headScanned = 0
                if head.chunked || (head.contentLength ?? 0) > config.maxRequestBodyBytes {
                    if !publishBatch.isEmpty { dispatchPublishBatch(c); return position }
                    stats.httpRequests.bump()
                    if head.chunked {
                        respondError(c, .lengthRequired, "chunked request bodies are not supported; send Content-Length", request: nil, close: true)
                    } else {
                        respondError(c, .contentTooLarge, "request body of \(head.contentLength!) bytes is over the \(config.maxRequestBodyBytes)-byte limit",
                                     request: nil, close: true)
                    }
                    return buffer.count
                }
                let bodyLength = head.contentLength ?? 0
                let total = head.headLength + bodyLength
                if rest.count < total {
                    // Wait for the body; size the next read for it.
                    c.pointee.bodyRemaining = total - rest.count
                    if head.expectContinue && head.keepAlive && rest.count == head.headLength && !c.pointee.flags.contains(.continueSent) {
                        c.pointee.flags.insert(.continueSent)
                        output.enqueue(c, UnsafeRawBufferPointer(staticString: "HTTP/1.1 100 Continue\r\n\r\n"))
                    }
                    break
                }
                c.pointee.bodyRemaining = 0
                c.pointee.flags.remove(.continueSent)
                let request = HTTPRequest(head: head, buffer: rest, body: UnsafeRawBufferPointer(rebasing: rest[head.headLength..<total]))
                // Pipelined publishes go to the publisher in one trip; any other request
                // waits until that batch is answered, so responses stay in order.
                let isPublish = head.method == .post && request.pathIs("/api/publish")
                if !publishBatch.isEmpty && (!isPublish || publishRefusal(c, request) != nil) {
                    dispatchPublishBatch(c)
                    return position
                }
                stats.httpRequests.bump()
                position += total
                route(c, request)
                if !publishBatch.isEmpty && (!head.keepAlive || publishBatch.count >= Self.maxPublishBatch) {
                    dispatchPublishBatch(c, keepAlive: head.keepAlive)
                    return position
                }
                continue
            }
            break
        }
        dispatchPublishBatch(c)
        return position
    }

    // MARK: - Routing

    private func route(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest) {
        let head = request.head
        if head.method == .options {
            return preflight(c, request)
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
            snapshot(c, request)
        } else if request.pathIs("/metrics") {
            if head.method != .get && head.method != .head { return methodNotAllowed(c, request, allow: "GET, HEAD") }
            handOff(c, request, .metrics)
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
        for worker in worker.context.workers { webSockets += worker.stats.webSocketsOpen.load(ordering: .relaxed) }
        let uptime = Double(worker.clock.monotonic - worker.context.startedAtMonotonic) / 1000
        var status = worker.shuttingDown ? "draining" : "ok"
        var cluster = ""
        if let ingest = worker.context.cluster {
            // Still 200 while the link is down: the node keeps serving its clients (and
            // resumes from its own history); only publishing is refused.
            let up = ingest.linkUp.load(ordering: .relaxed)
            if !up && status == "ok" { status = "degraded" }
            cluster = ",\"cluster\":{\"link\":\"\(up ? "up" : "down")\",\"epoch\":\"\(ingest.epoch)\",\"head\":\(ingest.head.load(ordering: .relaxed))}"
        }
        if let upstream = worker.context.upstream {
            // Stale symbols or no upstream connection: still 200, the node serves what it has.
            if upstream.isDegraded && status == "ok" { status = "degraded" }
            cluster += ",\"upstream\":\(upstream.healthFragment)"
        }
        return Array("{\"status\":\"\(status)\",\"uptime_s\":\(uptime),\"workers\":\(worker.context.workers.count),\"connections\":\(webSockets),\"version\":\"\(TickwireVersion.string)\"\(cluster)}".utf8)
    }

    // MARK: - Ingestion and the edge

    /// `POST /api/publish` (PROTOCOL.md): authorised here on the reactor, validated and
    /// sequenced by the publisher actor, answered when it is done.
    private func publish(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest) {
        if let refusal = publishRefusal(c, request) {
            stats.countPublishRejection(refusal.reason)
            return respondError(c, refusal.status, refusal.message, request: request, headers: refusal.headers)
        }
        publishBatch.append((Array(request.body), corsOrigin(request)))
    }

    /// Why the reactor refuses a publish before the publisher sees it, if it does.
    private func publishRefusal(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest)
        -> (status: HTTPStatus, message: String, headers: [(String, String)], reason: PublishRejection)? {
        if let token = config.publishToken {
            let given = request.string(request.head.authorization) ?? ""
            if !constantTimeEquals(given, "Bearer " + token) {
                return (.unauthorized, "publishing needs 'Authorization: Bearer <token>' with the server's --publish-token",
                        [("WWW-Authenticate", "Bearer realm=\"tickwire\"")], .unauthorized)
            }
        } else if !c.pointee.peer.isLoopback {
            return (.forbidden, "without --publish-token only loopback peers may publish; start the server with --publish-token",
                    [], .forbidden)
        }
        if let type = request.string(request.head.contentType)?.lowercased(),
           !type.hasPrefix("application/json"), !type.hasPrefix("text/json") {
            return (.unsupportedMediaType, "Content-Type must be application/json (got \(type))", [], .unsupportedMediaType)
        }
        return nil
    }

    /// Hands the publishes collected from one read to the publisher in one trip; their
    /// frames reach the reactors together (one wake-up, one write per subscriber).
    private func dispatchPublishBatch(_ c: UnsafeMutablePointer<Connection>, keepAlive: Bool = true) {
        guard !publishBatch.isEmpty else { return }
        let batch = publishBatch
        publishBatch.removeAll(keepingCapacity: true)
        let reply = ReplyAddress(worker: worker, slot: c.pointee.slot, generation: c.pointee.generation,
                                 keepAlive: keepAlive && !worker.shuttingDown)
        worker.lifecycle.apply(c, c.pointee.lifecycle.handedOff())
        EdgeRequests.send(.publish(worker.context, bodies: batch.map(\.body), cors: batch.map(\.cors), reply: reply))
    }

    /// `GET /api/snapshot`: with auth on, the token (`Authorization: Bearer` or `?token=`)
    /// decides whose private state is included; an invalid one, or none with `--auth
    /// required`, gets 401.
    private func snapshot(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest) {
        if config.auth == .off { return handOff(c, request, .snapshot(accounts: nil)) }
        let query = QueryParameters(request.string(request.head.query) ?? "")
        switch worker.authenticator.check(authorization: request.string(request.head.authorization), subprotocols: nil, queryToken: query["token"]) {
        case .anonymous:
            stats.authResults[AuthResult.anonymous.rawValue].bump()
            handOff(c, request, .snapshot(accounts: []))
        case .granted(let grant, _):
            stats.authResults[AuthResult.accepted.rawValue].bump()
            handOff(c, request, .snapshot(accounts: grant.accounts))
        case .refused(let failure):
            stats.authResults[AuthResult(failure).rawValue].bump()
            refuseToken(c, request, failure, close: false)
        }
    }

    /// Hands a request to the edge actors; the connection reads nothing more until the
    /// reply comes back through the reactor's mailbox (`WorkerCommand.httpReply`).
    private func handOff(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest, _ kind: EdgeRequest.Query) {
        let reply = ReplyAddress(worker: worker, slot: c.pointee.slot, generation: c.pointee.generation,
                                 keepAlive: request.head.keepAlive && !worker.shuttingDown)
        let format = ResponseFormat(headOnly: request.head.method == .head, cors: corsOrigin(request))
        worker.lifecycle.apply(c, c.pointee.lifecycle.handedOff())
        EdgeRequests.send(.query(worker.context, kind, format, reply: reply))
    }

    /// A reply made at the edge arrives (`WorkerCommand.httpReply`).
    func deliverReply(slot: UInt32, generation: UInt32, response: [UInt8], keepAlive: Bool) {
        let c = worker.table.pointer(slot)
        // The connection may have gone, and its slot been reused, while the reply was made.
        guard c.pointee.generation == generation, c.pointee.lifecycle.state == .awaitingReply else { return }
        c.pointee.output.append(response, pool: pool)
        worker.lifecycle.apply(c, c.pointee.lifecycle.replyArrived(keepAlive: keepAlive && !worker.shuttingDown))
    }

    // MARK: - Responses

    /// The `Access-Control-Allow-Origin` value for this request, if any.
    func corsOrigin(_ request: HTTPRequest?) -> String? {
        let allowed = config.corsOrigins
        if allowed.contains("*") { return "*" }
        guard let request, let origin = request.string(request.head.origin) else { return nil }
        return allowed.contains(origin) ? origin : nil
    }

    /// Answers on the reactor. `close`: this response ends the connection whatever the
    /// request asked (errors that leave the input unparseable).
    func respond(
        _ c: UnsafeMutablePointer<Connection>, _ status: HTTPStatus, contentType: String = "application/json",
        body: [UInt8], request: HTTPRequest?, headers: [(String, String)] = [], close: Bool = false
    ) {
        let keepAlive = !close && (request?.head.keepAlive ?? false) && !worker.shuttingDown
        ResponseWriter(pool: pool).write(
            status, contentType: contentType, body: body, headers: headers, keepAlive: keepAlive,
            headOnly: request?.head.method == .head, cors: corsOrigin(request), date: worker.clock.httpDate,
            into: &c.pointee.output
        )
        output.afterEnqueue(c)
        worker.lifecycle.apply(c, c.pointee.lifecycle.requestAnswered(keepAlive: keepAlive))
    }

    func respondError(
        _ c: UnsafeMutablePointer<Connection>, _ status: HTTPStatus, _ message: String,
        request: HTTPRequest?, headers: [(String, String)] = [], close: Bool = false
    ) {
        if status.code >= 400 && status.code != 404 && status.code != 405 && worker.logger.logLevel <= .debug {
            worker.logger.debug("HTTP \(status.code): \(message)", metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)"])
        }
        respond(c, status, body: ResponseWriter.errorBody(status, message), request: request, headers: headers, close: close)
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
        if worker.shuttingDown {
            stats.upgradesRejected.bump()
            return respondError(c, .serviceUnavailable, "server is shutting down; reconnect to another node",
                                request: request, headers: [("Retry-After", "1")], close: true)
        }
        if endpoint == .stream, let refusal = worker.admission.checkOrigin(request.string(head.origin)) {
            return refuse(c, request, refusal)
        }
        // Tokens before the connection counts against any limit (PROTOCOL.md "Authentication").
        let query = QueryParameters(request.string(head.query) ?? "")
        var grant: AccessGrant?
        var subprotocol: String?
        if endpoint == .stream {
            switch worker.authenticator.check(authorization: request.string(head.authorization),
                                              subprotocols: request.string(head.webSocketProtocol), queryToken: query["token"]) {
            case .anonymous(let answer):
                subprotocol = answer
                if config.auth != .off { stats.authResults[AuthResult.anonymous.rawValue].bump() }
            case let .granted(g, answer):
                grant = g
                subprotocol = answer
                stats.authResults[AuthResult.accepted.rawValue].bump()
            case .refused(let failure):
                stats.authResults[AuthResult(failure).rawValue].bump()
                stats.upgradesRejected.bump()
                return refuseToken(c, request, failure)
            }
        }
        if endpoint == .stream {
            // Counted from here; a refusal below gives the counts back when the socket closes.
            if config.maxConnectionsPerAddress > 0 || config.maxNewConnectionsPerAddressPerSecond > 0 {
                let key = Admission.clientKey(peer: c.pointee.peer, forwardedFor: request.string(head.forwardedFor))
                c.pointee.addressCells = worker.admission.addresses.cells(of: key)
                if let refusal = worker.admission.admitAddress(c.pointee.addressCells, second: UInt32(truncatingIfNeeded: worker.clock.monotonic / 1000)) {
                    return refuse(c, request, refusal)
                }
                if config.maxConnectionsPerAddress > 0 { c.pointee.flags.insert(.addressCounted) }
            }
            if let account = grant?.accounts.first, config.maxConnectionsPerAccount > 0 {
                c.pointee.accountCells = worker.admission.accounts.cells(of: (AccountHash.hash(account), 0x5EED))
                if let refusal = worker.admission.admitAccount(c.pointee.accountCells, account: account) {
                    return refuse(c, request, refusal)
                }
                c.pointee.flags.insert(.accountCounted)
            }
        }
        let context = worker.context
        if context.admitted.add(1, ordering: .relaxed).newValue > config.maxConnections {
            context.admitted.subtract(1, ordering: .relaxed)
            stats.upgradesRejected.bump()
            if worker.logger.logLevel <= .warning {
                worker.logger.warning("connection limit reached; refusing upgrade",
                                      metadata: ["peer": "\(c.pointee.peer.description)", "limit": "\(config.maxConnections)"])
            }
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
        // permessage-deflate (RFC 7692) when the client offers it and the server allows it.
        var deflate: DeflateParameters?
        if config.compression, let offer = head.webSocketExtensions {
            deflate = DeflateNegotiation.negotiate(request.buffer.slice(offer))
        }
        if subprotocol == nil && deflate == nil {
            c.pointee.output.commit(n + 4)
        } else {
            c.pointee.output.commit(n + 2)
            var extra = ""
            // A browser that offered subprotocols needs one back (RFC 6455 §4.1).
            if let subprotocol { extra += "Sec-WebSocket-Protocol: \(subprotocol)\r\n" }
            if let deflate { extra += "Sec-WebSocket-Extensions: \(deflate.responseHeaderValue)\r\n" }
            extra += "\r\n"
            c.pointee.output.append(Array(extra.utf8), pool: pool)
        }

        c.pointee.endpoint = endpoint
        c.pointee.session = WebSocketSession(role: .server, maxMessageSize: UInt64(config.maxMessageSize), permessageDeflate: deflate != nil)
        if let deflate {
            c.pointee.flags.insert(.deflate)
            c.pointee.deflateWindow = UInt8(deflate.serverWindowBits)
            if deflate.serverWindowBits == 15 { c.pointee.flags.insert(.deflateBroadcasts) }
            stats.deflateSessions.bump()
        }
        worker.lifecycle.apply(c, c.pointee.lifecycle.upgraded())
        stats.webSocketsOpen.bump(1)
        stats.webSocketsTotal.bump()
        if worker.logger.logLevel <= .info {
            worker.logger.info("WebSocket client connected from \(c.pointee.peer.host)",
                               metadata: ["conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "path": "\(request.pathString)"])
        }
        if endpoint == .stream { worker.stream.opened(c, request, query: query, grant: grant) }
        output.markDirty(c)
    }
}

extension HTTPEndpoint {
    /// An abuse limit refused the upgrade: the status it chose, with JSON saying which limit.
    func refuse(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest, _ refusal: Admission.Refusal) {
        stats.limitRefusals[refusal.kind.rawValue].bump()
        stats.upgradesRejected.bump()
        if worker.logger.logLevel <= .info {
            worker.logger.info("upgrade refused: \(refusal.kind.label)", metadata: ["peer": "\(c.pointee.peer.description)"])
        }
        let body = Array("{\"status\":\(refusal.status.code),\"error\":\(JSONText.quoted(refusal.status.reason)),\"limit\":\"\(refusal.kind.label)\",\"message\":\(JSONText.quoted(refusal.message))}".utf8)
        let headers = refusal.retryAfter.map { [("Retry-After", "\($0)")] } ?? []
        respond(c, refusal.status, body: body, request: request, headers: headers, close: true)
    }

    /// 401 with the failed check named (`code`), before any upgrade (RFC 6750 §3).
    func refuseToken(_ c: UnsafeMutablePointer<Connection>, _ request: HTTPRequest, _ failure: TokenFailure, close: Bool = true) {
        if worker.logger.logLevel <= .info {
            worker.logger.info("token refused: \(failure.code)", metadata: ["peer": "\(c.pointee.peer.description)", "path": "\(request.pathString)"])
        }
        let status = HTTPStatus.unauthorized
        let body = Array("{\"status\":401,\"error\":\"Unauthorized\",\"code\":\"\(failure.code)\",\"message\":\(JSONText.quoted(failure.message))}".utf8)
        let challenge = failure == .missing
            ? "Bearer realm=\"tickwire\""
            : "Bearer realm=\"tickwire\", error=\"invalid_token\", error_description=\"\(failure.code)\""
        respond(c, status, body: body, request: request, headers: [("WWW-Authenticate", challenge)], close: close)
    }
}

extension UnsafeRawBufferPointer {
    init(staticString: StaticString) {
        self.init(start: staticString.utf8Start, count: staticString.utf8CodeUnitCount)
    }
}
