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

    /// Identifies this server's history: resume only works within one epoch. In a
    /// cluster it is the cluster's (from Redis), and changes when Redis lost the stream.
    public private(set) var epoch: String
    private let sink: BroadcastSink
    /// With `--redis`: where validated messages go to take their seq (nil: single node,
    /// this actor assigns seq itself).
    private var cluster: ClusterIngest?
    /// Called (on this actor) when the cluster's epoch replaces the current one.
    private var onEpochChange: (@Sendable (String) -> Void)?
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

    /// Cluster mode: from now on messages are sequenced by Redis through `cluster`, and
    /// framed here only when they come back from it (`apply`), in seq order.
    public func attach(cluster: ClusterIngest, onEpochChange: @escaping @Sendable (String) -> Void) {
        self.cluster = cluster
        self.onEpochChange = onEpochChange
    }

    public var isClustered: Bool { cluster != nil }

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
        if let cluster {
            // Sequenced by Redis and framed when it comes back; a refused one is counted there.
            let m = ClusterMessage(channel: channel, keys: keys, message: message, acceptedWallNanoseconds: wallClockNanoseconds(), data: data[...])
            cluster.publish([m.encoded()]) { _ in }
            return 0
        }
        seq += 1
        let frame = data.withUnsafeBytes {
            encode(channel, data: $0, keys: keys, message: message, seq: seq, timestampMilliseconds: wallClockNanoseconds() / 1_000_000,
                   acceptedAt: monotonicNanoseconds())
        }
        sink.deliver([frame])
        return frame.seq
    }

    /// One known-good message of a batch (`publish(batch:)`).
    public struct Publication: Sendable {
        public var channel: Channel
        public var data: [UInt8]
        public var keys: Keys

        public init(_ channel: Channel, data: [UInt8], keys: Keys) {
            self.channel = channel
            self.data = data
            self.keys = keys
        }
    }

    /// Publishes known-good messages (an upstream read pass) in order, as one delivery:
    /// one wake-up per core queue (or one Redis call in a cluster) for the whole batch
    /// instead of one per message.
    public func publish(batch: [Publication]) {
        guard !batch.isEmpty else { return }
        if let cluster {
            let now = wallClockNanoseconds()
            cluster.publish(batch.map {
                ClusterMessage(channel: $0.channel, keys: $0.keys, message: nil, acceptedWallNanoseconds: now, data: $0.data[...]).encoded()
            }) { _ in }
            return
        }
        var frames: [BroadcastFrame] = []
        frames.reserveCapacity(batch.count)
        let milliseconds = wallClockNanoseconds() / 1_000_000
        let acceptedAt = monotonicNanoseconds()
        for p in batch {
            seq += 1
            frames.append(p.data.withUnsafeBytes {
                encode(p.channel, data: $0, keys: p.keys, message: nil, seq: seq, timestampMilliseconds: milliseconds, acceptedAt: acceptedAt)
            })
        }
        sink.deliver(frames)
    }

    public enum PublishOutcome: Sendable, Equatable {
        case accepted(seqs: [UInt64])
        /// `status` is the HTTP status; `reason` the metrics label.
        case rejected(status: Int, reason: String, message: String)
        /// Cluster mode: Redis could not take it (503 with Retry-After). `reason` is the
        /// metrics label (`cluster_down`: never sent; `cluster_unknown`: sent, no reply).
        case unavailable(reason: String, message: String, retryAfterSeconds: Int)
    }

    /// `POST /api/publish` bodies, answered through `completion`: at once on a single
    /// node; in a cluster once Redis replied to each (on the Redis loop's thread).
    public func publish(bodies: [[UInt8]], completion: @escaping @Sendable ([PublishOutcome]) -> Void) {
        guard let cluster else {
            completion(publish(bodies: bodies))
            return
        }
        var outcomes: [PublishOutcome] = []
        var groups: [(index: Int, payloads: [[UInt8]])] = []
        for (i, body) in bodies.enumerated() {
            switch validate(body: body) {
            case .failure(let rejected):
                outcomes.append(rejected.outcome)
            case .success(let items):
                outcomes.append(.accepted(seqs: []))
                let wall = wallClockNanoseconds()
                groups.append((i, items.map { item in
                    ClusterMessage(channel: item.channel, keys: item.keys, message: item.message, acceptedWallNanoseconds: wall,
                                   data: body[item.data]).encoded()
                }))
            }
        }
        if groups.isEmpty { completion(outcomes); return }
        let results = ClusterReplies(outcomes: outcomes, waiting: groups.count, completion: completion)
        for group in groups {
            cluster.publish(group.payloads) { result in results.settle(group.index, result) }
        }
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
        switch validate(body: body) {
        case .failure(let rejected):
            return rejected.outcome
        case .success(let items):
            let acceptedAt = monotonicNanoseconds()
            let now = wallClockNanoseconds() / 1_000_000
            var seqs: [UInt64] = []
            seqs.reserveCapacity(items.count)
            body.withUnsafeBytes { raw in
                for item in items {
                    seq += 1
                    out.append(encode(item.channel, data: UnsafeRawBufferPointer(rebasing: raw[item.data]), keys: item.keys,
                                      message: item.message, seq: seq, timestampMilliseconds: now, acceptedAt: acceptedAt))
                    seqs.append(seq)
                }
            }
            return .accepted(seqs: seqs)
        }
    }

    /// One message of a request, validated: `data` is the range of its data object in the body.
    struct ValidItem {
        let channel: Channel
        let data: Range<Int>
        let keys: Keys
        let message: String?
    }

    struct Rejection: Error {
        let outcome: PublishOutcome
    }

    /// Validates a whole request (counting it, and a rejection by reason); nothing is
    /// sequenced here, so a bad batch publishes nothing.
    private func validate(body: [UInt8]) -> Result<[ValidItem], Rejection> {
        stats.publishRequests += 1
        let result: Result<[ValidItem], Rejection> = body.withUnsafeBytes { raw in
            func reject(_ status: Int, _ reason: String, _ message: String) -> Result<[ValidItem], Rejection> {
                .failure(Rejection(outcome: .rejected(status: status, reason: reason, message: message)))
            }
            let root: JSONValue
            do {
                root = try JSONScanner.parse(raw)
            } catch {
                return reject(400, "invalid_json", "body is not valid JSON: \(error)")
            }
            var items: [JSONValue]
            switch root.kind {
            case .object: items = [root]
            case .array: items = JSONScanner.elements(of: root, in: raw)
            default: return reject(400, "invalid_message", "body must be a message object or an array of them")
            }
            if items.isEmpty { return reject(400, "invalid_message", "empty array: nothing to publish") }
            if items.count > maxBatch {
                return reject(413, "too_large", "\(items.count) messages in one request; at most \(maxBatch)")
            }
            var parsed: [ValidItem] = []
            parsed.reserveCapacity(items.count)
            for (index, item) in items.enumerated() {
                let at = items.count > 1 ? "message \(index): " : ""
                guard item.kind == .object else {
                    return reject(400, "invalid_message", "\(at)each message must be an object")
                }
                guard let typeValue = JSONScanner.member("type", of: item, in: raw),
                      let type = JSONScanner.string(typeValue, in: raw)
                else {
                    return reject(400, "invalid_message", "\(at)missing string field 'type'")
                }
                guard let channel = Channel.allCases.first(where: { $0.typeName == type }) else {
                    let known = Channel.allCases.map(\.typeName).joined(separator: ", ")
                    return reject(400, "unknown_type", "\(at)'\(type)' is not a publishable type; use one of \(known)")
                }
                guard let data = JSONScanner.member("data", of: item, in: raw), data.kind == .object else {
                    return reject(400, "invalid_message", "\(at)'data' must be an object")
                }
                var message: String?
                if let m = JSONScanner.member("message", of: item, in: raw) {
                    guard let text = JSONScanner.string(m, in: raw) else {
                        return reject(400, "invalid_message", "\(at)'message' must be a string")
                    }
                    message = text
                }
                var keys = Self.keys(of: data, channel: channel, in: raw)
                if let a = JSONScanner.member("account", of: item, in: raw) {
                    guard let name = JSONScanner.string(a, in: raw), !name.isEmpty, name.utf8.count <= Self.maxAccountLength else {
                        return reject(400, "invalid_message",
                                      "\(at)'account' must be a non-empty string of at most \(Self.maxAccountLength) bytes")
                    }
                    keys.account = name
                }
                parsed.append(ValidItem(channel: channel, data: data.range, keys: keys, message: message))
            }
            return .success(parsed)
        }
        if case .failure(let r) = result, case let .rejected(_, reason, _) = r.outcome { stats.rejected[reason, default: 0] += 1 }
        return result
    }

    /// Cluster mode: messages that came back from Redis, in seq order (`ClusterIngest`
    /// guarantees it), framed exactly as a single node frames its own and delivered to
    /// the per-core queues. A new epoch replaces the history's identity and the snapshot
    /// (the stream it summarised is gone).
    func apply(epoch newEpoch: String, entries: [(seq: UInt64, message: ClusterMessage)]) {
        if newEpoch != epoch {
            epoch = newEpoch
            snapshot = SnapshotState()
            seq = 0
            onEpochChange?(newEpoch)
            // Ordered with the frames: each reactor resets its history exactly between
            // the old epoch's last frame and the new one's first.
            sink.beginEpoch(newEpoch)
        }
        guard !entries.isEmpty else { return }
        var frames: [BroadcastFrame] = []
        frames.reserveCapacity(entries.count)
        let wallNow = wallClockNanoseconds()
        let monoNow = monotonicNanoseconds()
        for (s, m) in entries {
            // The accept time on this node's monotonic clock, from the publisher's wall
            // clock: broadcast latency then includes the trip through Redis (clock skew
            // between hosts shows in it; clamped so it never reads as the future).
            let age = wallNow > m.acceptedWallNanoseconds ? min(wallNow - m.acceptedWallNanoseconds, monoNow) : 0
            let frame = m.data.withUnsafeBytes {
                encode(m.channel, data: $0, keys: m.keys, message: m.message, seq: s,
                       timestampMilliseconds: m.acceptedWallNanoseconds / 1_000_000, acceptedAt: monoNow - age)
            }
            frames.append(frame)
            seq = s
        }
        sink.deliver(frames)
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

    private func encode(
        _ channel: Channel, data: UnsafeRawBufferPointer, keys: Keys, message: String?, seq: UInt64, timestampMilliseconds: UInt64,
        acceptedAt: UInt64
    ) -> BroadcastFrame {
        writer.begin(type: channel.typeName, seq: seq)
        if let account = keys.account { writer.account(account) }
        writer.data(data)
        if let message { writer.message(message) }
        writer.end(timestampMilliseconds: timestampMilliseconds)
        let symbolHash = keys.symbol.map(SymbolHash.hash) ?? 0
        var conflationKey: UInt64 = 0
        if channel.isConflatable {
            conflationKey = Self.conflationKey(channel, keys)
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

    /// The hash of "channel|symbol|timeframe|account", computed piece by piece: the same
    /// value as hashing that string, without building it for every message.
    static func conflationKey(_ channel: Channel, _ keys: Keys) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        @inline(__always) func mixByte(_ b: UInt8) { h ^= UInt64(b); h = h &* 0x0000_0100_0000_01B3 }
        func mixString(_ s: String?) {
            guard var s else { return }
            s.withUTF8 { for b in $0 { mixByte(b) } }
        }
        var digits = UInt64(channel.rawValue)
        var divisor: UInt64 = 1
        while divisor * 10 <= digits { divisor *= 10 }
        while divisor > 0 { mixByte(UInt8(48 + digits / divisor)); digits %= divisor; divisor /= 10 }
        mixByte(UInt8(ascii: "|")); mixString(keys.symbol)
        mixByte(UInt8(ascii: "|")); mixString(keys.timeframe)
        mixByte(UInt8(ascii: "|")); mixString(keys.account)
        return h == 0 ? 1 : h
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

/// Collects the Redis replies to one HTTP read's publishes; answers once all are in.
/// Touched on the Redis loop's thread only (every `ClusterIngest.publish` reply runs there).
final class ClusterReplies: @unchecked Sendable {
    private var outcomes: [StreamPublisher.PublishOutcome]
    private var waiting: Int
    private let completion: @Sendable ([StreamPublisher.PublishOutcome]) -> Void

    init(outcomes: [StreamPublisher.PublishOutcome], waiting: Int, completion: @escaping @Sendable ([StreamPublisher.PublishOutcome]) -> Void) {
        self.outcomes = outcomes
        self.waiting = waiting
        self.completion = completion
    }

    func settle(_ index: Int, _ result: ClusterPublishResult) {
        switch result {
        case .accepted(let seqs): outcomes[index] = .accepted(seqs: seqs)
        case .linkDown(let why):
            outcomes[index] = .unavailable(reason: "cluster_down",
                                           message: "the cluster link to Redis is down (\(why)); nothing was published, retry shortly",
                                           retryAfterSeconds: 1)
        case .unknown(let why):
            outcomes[index] = .unavailable(reason: "cluster_unknown",
                                           message: "Redis did not answer (\(why)); the messages may or may not have been published",
                                           retryAfterSeconds: 1)
        }
        waiting -= 1
        if waiting == 0 { completion(outcomes) }
    }
}
