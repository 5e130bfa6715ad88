import Ingestion
import Reactor
import WireProtocol

/// Where the reply to a handed-off request goes: a reactor, a slot, and the slot's
/// generation when the request was made (a reply for a connection that has gone is dropped).
struct ReplyAddress: @unchecked Sendable {
    // @unchecked: `worker` is only used for `post`, which is safe from any thread.
    let worker: Worker
    let slot: UInt32
    let generation: UInt32
    let keepAlive: Bool

    func send(_ response: [UInt8]) {
        worker.post(.httpReply(slot: slot, generation: generation, response: response, keepAlive: keepAlive))
    }
}

/// How the response to a query is written.
struct ResponseFormat: Sendable {
    let headOnly: Bool
    let cors: String?
}

/// A request a reactor cannot answer itself, because the state it needs belongs to an
/// edge actor (the publisher's sequence and snapshot, the metrics).
enum EdgeRequest: @unchecked Sendable {
    // @unchecked: the payloads are values, plus references used only on the edge thread.
    enum Query: Sendable {
        /// The public state plus these accounts' (nil: every account, with auth off).
        case snapshot(accounts: [String]?)
        case metrics
    }

    /// Pipelined `POST /api/publish` bodies from one read, answered in one response write.
    case publish(ServerContext, bodies: [[UInt8]], cors: [String?], reply: ReplyAddress)
    case query(ServerContext, Query, ResponseFormat, reply: ReplyAddress)
}

/// The way from the reactors to the edge actors: a lock-free inbox on the edge loop.
/// A reactor pushes the request (one CAS) and goes on; the edge thread runs it against
/// the actors synchronously (`assumeIsolated`: it is their executor) and posts the reply
/// to the reactor's mailbox. No task is spawned and no lock is taken on a reactor.
enum EdgeRequests {
    static let inbox = EdgeInbox<EdgeRequest>(on: .edge) { handle($0) }

    /// Creates the inbox before any reactor can race to do it.
    static func prepare() { _ = inbox }

    static func send(_ request: EdgeRequest) { inbox.send(request) }

    private static func handle(_ request: EdgeRequest) {
        let date = Timestamp.httpDate(secondsSinceEpoch: wallClockNanoseconds() / 1_000_000_000)
        switch request {
        case let .publish(context, bodies, cors, reply):
            // Single node: answered at once. Cluster: once Redis gave every message its
            // seq (the completion runs on the Redis loop; building bytes is all it does).
            context.publisher.assumeIsolated {
                $0.publish(bodies: bodies) { outcomes in reply.send(publishResponse(outcomes, cors: cors, reply: reply, date: date)) }
            }
        case let .query(context, query, format, reply):
            let body: [UInt8]
            let contentType: String
            switch query {
            case .snapshot(let accounts):
                body = context.publisher.assumeIsolated { $0.snapshotJSON(accounts: accounts) }
                contentType = "application/json"
            case .metrics:
                body = context.metrics.assumeIsolated { $0.render() }
                contentType = "text/plain; version=0.0.4; charset=utf-8"
            }
            reply.send(ResponseWriter.build(
                .ok, contentType: contentType, body: body, headers: [("Cache-Control", "no-store")],
                keepAlive: reply.keepAlive, headOnly: format.headOnly, cors: format.cors, date: date))
        }
    }

    private static func publishResponse(_ outcomes: [StreamPublisher.PublishOutcome], cors: [String?], reply: ReplyAddress, date: String) -> [UInt8] {
        var response: [UInt8] = []
        for (i, outcome) in outcomes.enumerated() {
            let last = i == outcomes.count - 1
            let (status, body): (HTTPStatus, [UInt8])
            var headers: [(String, String)] = []
            switch outcome {
            case .accepted(let seqs):
                var json = "{\"accepted\":\(seqs.count),\"seqs\":["
                json += seqs.map(String.init).joined(separator: ",")
                json += "]}"
                (status, body) = (.accepted, Array(json.utf8))
            case let .rejected(code, _, message):
                let s = HTTPStatus.of(code)
                (status, body) = (s, ResponseWriter.errorBody(s, message))
            case let .unavailable(reason, message, retryAfter):
                headers = [("Retry-After", String(retryAfter))]
                let json = "{\"status\":503,\"error\":\"Service Unavailable\",\"reason\":\"\(reason)\",\"cluster\":\"down\",\"message\":\(JSONText.quoted(message))}"
                (status, body) = (.serviceUnavailable, Array(json.utf8))
            }
            response += ResponseWriter.build(status, body: body, headers: headers, keepAlive: last ? reply.keepAlive : true,
                                             headOnly: false, cors: cors[i], date: date)
        }
        return response
    }
}
