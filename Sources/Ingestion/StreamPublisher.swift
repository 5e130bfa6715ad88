import Reactor
import TradingStream
import WireProtocol

/// Counters the publisher keeps for metrics (read by the metrics edge on scrape).
public struct PublisherStats: Sendable {
    public var published: [UInt64] = Array(repeating: 0, count: Channel.allCases.count)
    public var publishRequests: UInt64 = 0
    /// Rejected publish requests by reason (`invalid_json`, `invalid_message`, `too_large`, ...).
    public var rejected: [String: UInt64] = [:]
    /// Message sizes: upper bounds in bytes, and counts per bucket (cumulative at export).
    public static let sizeBuckets: [Double] = [64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536, 262_144, 1_048_576]
    public var sizeCounts: [UInt64] = Array(repeating: 0, count: PublisherStats.sizeBuckets.count + 1)
    public var sizeSum: Double = 0
    public var sizeCount: UInt64 = 0

    mutating func recordSize(_ n: Int) {
        var i = 0
        while i < Self.sizeBuckets.count && Double(n) > Self.sizeBuckets[i] { i += 1 }
        sizeCounts[i] += 1
        sizeSum += Double(n)
        sizeCount += 1
    }
}

/// The ingestion edge (FR-WEBSOCKET-005's "data processors" side): every message, from
/// the simulator or `POST /api/publish`, passes through this actor, which validates it,
/// assigns the next `seq`, encodes the envelope and frames it once, records it for the
/// snapshot, and hands the frames to the per-core queues. Being one actor makes `seq`
/// order and delivery order the same thing, on every core.
public actor StreamPublisher {
    /// Runs on the edge actors' own thread, never on the cooperative pool.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        EdgeLoop.edge.asUnownedSerialExecutor()
    }

    /// Identifies this server's history: resume only works within one epoch.
    public nonisolated let epoch: String
    private let sink: BroadcastSink
    private var seq: UInt64 = 0
    private var snapshot = SnapshotState()
    private var writer = EnvelopeWriter(capacity: 1024)
    public private(set) var stats = PublisherStats()
    /// Most messages one publish request may carry.
    public nonisolated let maxBatch: Int

    /// Whether `account` makes a message private. Off for a server without authentication,
    /// where there is one tenant and every client sees every account's messages.
    public nonisolated let accountRouting: Bool
    /// Longest account name accepted.
    public static let maxAccountLength = 128

    public init(epoch: String, sink: BroadcastSink, maxBatch: Int = 10_000, accountRouting: Bool = true) {
        self.epoch = epoch
        self.sink = sink
        self.maxBatch = maxBatch
        self.accountRouting = accountRouting
    }

    /// The seq of the newest message.
    public var headSeq: UInt64 { seq }

    /// What a producer's message says about itself, for filters, conflation and the snapshot.
    public struct Keys: Sendable {
        public var symbol: String?
        public var timeframe: String?
        public var side: String?
        public var closed = false
        /// The account a private message is for; nil: public.
        public var account: String?

        public init(symbol: String? = nil, timeframe: String? = nil, side: String? = nil, closed: Bool = false, account: String? = nil) {
            self.symbol = symbol
            self.timeframe = timeframe
            self.side = side
            self.closed = closed
            self.account = account
        }
    }

    /// Publishes one message whose `data` is known-good JSON (the simulator's).
    @discardableResult
    public func publish(_ channel: Channel, data: [UInt8], keys: Keys, message: String? = nil) -> UInt64 {
        let frame = data.withUnsafeBytes { encode(channel, data: $0, keys: keys, message: message, acceptedAt: monotonicNanoseconds()) }
        sink.deliver([frame])
        return frame.seq
    }

    public enum PublishOutcome: Sendable, Equatable {
        case accepted(seqs: [UInt64])
        /// `status` is the HTTP status; `reason` the metrics label.
        case rejected(status: Int, reason: String, message: String)
    }

    /// Several pipelined `POST /api/publish` bodies, each validated on its own, all
    /// delivered to the reactors together.
    public func publish(bodies: [[UInt8]]) -> [PublishOutcome] {
        var frames: [BroadcastFrame] = []
        let outcomes = bodies.map { publish(body: $0, into: &frames) }
        if !frames.isEmpty { sink.deliver(frames) }
        return outcomes
    }

    /// `POST /api/publish`: one message or an array. Validated completely before anything
    /// is published, so a bad batch publishes nothing.
    public func publish(body: [UInt8]) -> PublishOutcome {
        var frames: [BroadcastFrame] = []
        let outcome = publish(body: body, into: &frames)
        if !frames.isEmpty { sink.deliver(frames) }
        return outcome
    }

    private func publish(body: [UInt8], into out: inout [BroadcastFrame]) -> PublishOutcome {
        stats.publishRequests += 1
        let acceptedAt = monotonicNanoseconds()
        let outcome: PublishOutcome = body.withUnsafeBytes { raw in
            let root: JSONValue
            do {
                root = try JSONScanner.parse(raw)
            } catch {
                return .rejected(status: 400, reason: "invalid_json", message: "body is not valid JSON: \(error)")
            }
            var items: [JSONValue]
            switch root.kind {
            case .object: items = [root]
            case .array: items = JSONScanner.elements(of: root, in: raw)
            default: return .rejected(status: 400, reason: "invalid_message", message: "body must be a message object or an array of them")
            }
            if items.isEmpty { return .rejected(status: 400, reason: "invalid_message", message: "empty array: nothing to publish") }
            if items.count > maxBatch {
                return .rejected(status: 413, reason: "too_large", message: "\(items.count) messages in one request; at most \(maxBatch)")
            }
            var parsed: [(Channel, JSONValue, Keys, String?)] = []
            parsed.reserveCapacity(items.count)
            for (index, item) in items.enumerated() {
                let at = items.count > 1 ? "message \(index): " : ""
                guard item.kind == .object else {
                    return .rejected(status: 400, reason: "invalid_message", message: "\(at)each message must be an object")
                }
                guard let typeValue = JSONScanner.member("type", of: item, in: raw),
                      let type = JSONScanner.string(typeValue, in: raw)
                else {
                    return .rejected(status: 400, reason: "invalid_message", message: "\(at)missing string field 'type'")
                }
                guard let channel = Channel.allCases.first(where: { $0.typeName == type }) else {
                    let known = Channel.allCases.map(\.typeName).joined(separator: ", ")
                    return .rejected(status: 400, reason: "unknown_type", message: "\(at)'\(type)' is not a publishable type; use one of \(known)")
                }
                guard let data = JSONScanner.member("data", of: item, in: raw), data.kind == .object else {
                    return .rejected(status: 400, reason: "invalid_message", message: "\(at)'data' must be an object")
                }
                var message: String?
                if let m = JSONScanner.member("message", of: item, in: raw) {
                    guard let text = JSONScanner.string(m, in: raw) else {
                        return .rejected(status: 400, reason: "invalid_message", message: "\(at)'message' must be a string")
                    }
                    message = text
                }
                var keys = Self.keys(of: data, channel: channel, in: raw)
                if let a = JSONScanner.member("account", of: item, in: raw) {
                    guard let name = JSONScanner.string(a, in: raw), !name.isEmpty, name.utf8.count <= Self.maxAccountLength else {
                        return .rejected(status: 400, reason: "invalid_message",
                                         message: "\(at)'account' must be a non-empty string of at most \(Self.maxAccountLength) bytes")
                    }
                    keys.account = name
                }
                parsed.append((channel, data, keys, message))
            }
            var frames: [BroadcastFrame] = []
            frames.reserveCapacity(parsed.count)
            for (channel, data, keys, message) in parsed {
                frames.append(encode(channel, data: UnsafeRawBufferPointer(rebasing: raw[data.range]), keys: keys, message: message, acceptedAt: acceptedAt))
            }
            out += frames
            return .accepted(seqs: frames.map(\.seq))
        }
        if case let .rejected(_, reason, _) = outcome { stats.rejected[reason, default: 0] += 1 }
        return outcome
    }

    /// Counts a request refused before it reached the publisher (auth, size).
    public func recordRejection(reason: String) {
        stats.publishRequests += 1
        stats.rejected[reason, default: 0] += 1
    }

    /// `GET /api/snapshot`: the public state plus the private state of `accounts` (nil: of
    /// every account, for a server without authentication).
    public func snapshotJSON(accounts: [String]? = nil) -> [UInt8] {
        snapshot.json(epoch: epoch, seq: seq, timestamp: Timestamp.string(millisecondsSinceEpoch: wallClockNanoseconds() / 1_000_000),
                      accounts: accounts)
    }

    // MARK: -

    private func encode(_ channel: Channel, data: UnsafeRawBufferPointer, keys: Keys, message: String?, acceptedAt: UInt64) -> BroadcastFrame {
        seq += 1
        writer.begin(type: channel.typeName, seq: seq)
        if let account = keys.account { writer.account(account) }
        writer.data(data)
        if let message { writer.message(message) }
        writer.end(timestampMilliseconds: wallClockNanoseconds() / 1_000_000)
        let symbolHash = keys.symbol.map(SymbolHash.hash) ?? 0
        var conflationKey: UInt64 = 0
        if channel.isConflatable {
            conflationKey = SymbolHash.hash("\(channel.rawValue)|\(keys.symbol ?? "")|\(keys.timeframe ?? "")|\(keys.account ?? "")")
        }
        let frame = writer.bytes.withUnsafeBytes {
            BroadcastFrame(json: $0, seq: seq, channel: channel, symbolHash: symbolHash, conflationKey: conflationKey, acceptedAt: acceptedAt,
                           account: accountRouting ? keys.account : nil)
        }
        stats.published[Int(channel.rawValue)] += 1
        stats.recordSize(writer.bytes.count)
        snapshot.record(channel, message: writer.bytes, seq: seq, symbol: keys.symbol, timeframe: keys.timeframe, side: keys.side,
                        closed: keys.closed, account: accountRouting ? keys.account : nil)
        return frame
    }

    /// The keys of a published `data` object: `symbol`, `timeframe`, `side`, and whether a
    /// position update closes the position (`status` "CLOSED" or `quantity` 0).
    static func keys(of data: JSONValue, channel: Channel, in raw: UnsafeRawBufferPointer) -> Keys {
        var keys = Keys()
        for (key, value) in JSONScanner.members(of: data, in: raw) {
            if JSONScanner.stringEquals(key, "symbol", in: raw) { keys.symbol = JSONScanner.string(value, in: raw) }
            else if JSONScanner.stringEquals(key, "timeframe", in: raw) { keys.timeframe = JSONScanner.string(value, in: raw) }
            else if JSONScanner.stringEquals(key, "side", in: raw) { keys.side = JSONScanner.string(value, in: raw) }
            else if channel == .positionUpdate && JSONScanner.stringEquals(key, "status", in: raw) {
                if let s = JSONScanner.string(value, in: raw), s.uppercased() == "CLOSED" { keys.closed = true }
            } else if channel == .positionUpdate && JSONScanner.stringEquals(key, "quantity", in: raw) {
                if JSONScanner.double(value, in: raw) == 0 { keys.closed = true }
            }
        }
        return keys
    }
}
