import Reactor

/// A position in the cluster's stream: `seq` within `epoch` (0: nothing published yet).
public struct StreamPosition: Sendable, Equatable, CustomStringConvertible {
    public let epoch: String
    public let seq: UInt64

    public init(epoch: String, seq: UInt64) {
        self.epoch = epoch
        self.seq = seq
    }

    public var description: String { "\(epoch)/\(seq)" }
}

public struct StreamEntry: Sendable, Equatable {
    public let seq: UInt64
    public let payload: [UInt8]

    public init(seq: UInt64, payload: [UInt8]) {
        self.seq = seq
        self.payload = payload
    }
}

/// Entries read from the stream, with the head at the same instant.
public struct StreamRange: Sendable, Equatable {
    public let head: StreamPosition
    /// Consecutive entries from the first one kept at or after the asked seq, oldest first.
    public let entries: [StreamEntry]

    /// Whether the range starts exactly at `seq`: if not, the stream was trimmed past it
    /// (or the epoch changed) and a resume from there is not lossless.
    public func starts(at seq: UInt64) -> Bool {
        entries.first?.seq == seq || (entries.isEmpty && seq > head.seq)
    }
}

/// The keys and channel of one cluster stream. The `{prefix}` hash tag keeps them on one
/// shard of a Redis Cluster, which a script touching both requires.
public struct StreamKeys: Sendable, Equatable {
    public let stream: String
    public let meta: String
    public let channel: String

    public init(prefix: String = "tickwire") {
        stream = "{\(prefix)}:stream"
        meta = "{\(prefix)}:meta"
        channel = "{\(prefix)}:feed"
    }
}

/// The cluster's one stream on a `RedisLink`: publish (next seq, append to the history,
/// PUBLISH to every node, atomically), read a range for gap fill and resume, read the
/// head. Loop thread only, like the link; results arrive on the loop thread.
///
/// Create it before `link.start()`: it loads its scripts on every (re)connect.
public final class ClusterStream: @unchecked Sendable {
    // @unchecked: the scripts' cached SHAs are touched on the link's loop thread only.
    public let link: RedisLink
    public let keys: StreamKeys
    /// Stream entries kept (`--history`), at least; see `StreamScripts` on `MAXLEN ~`.
    public let history: Int
    private let publishScript = RedisScript(StreamScripts.publish)
    private let readScript = RedisScript(StreamScripts.read)
    private var random = SystemRandomNumberGenerator()
    /// Each acknowledged publish call: its round trip (send to reply, nanoseconds) and how
    /// many messages it carried; for the publish round-trip metric.
    public var onPublishAcknowledged: ((_ nanoseconds: UInt64, _ messages: Int) -> Void)?

    public init(link: RedisLink, keys: StreamKeys = StreamKeys(), history: Int) {
        precondition(history > 0, "the stream keeps at least one entry")
        self.link = link
        self.keys = keys
        self.history = history
        let scripts = [publishScript, readScript]
        link.addPreparation { link, done in
            func load(_ i: Int) {
                guard i < scripts.count else { done(.success(())); return }
                scripts[i].load(on: link) { result in
                    if case .failure = result { done(result) } else { load(i + 1) }
                }
            }
            load(0)
        }
    }

    /// Publishes one message; `then` gets its position.
    public func publish(_ payload: [UInt8], then: @escaping (Result<StreamPosition, RedisFailure>) -> Void) {
        publish(batch: [payload], then: then)
    }

    /// Publishes messages that take consecutive seqs, in one script call (one PUBLISH);
    /// `then` gets the position of the last. Batching is how the cluster reaches its rate:
    /// the script's fixed cost is paid once per batch.
    public func publish(batch payloads: [[UInt8]], then: @escaping (Result<StreamPosition, RedisFailure>) -> Void) {
        precondition(!payloads.isEmpty, "an empty batch")
        let arguments = [Array(String(history).utf8), Array(newEpoch().utf8), Array(keys.channel.utf8)] + payloads
        let sent = monotonicNanoseconds()
        publishScript.run(on: link, keys: [keys.stream, keys.meta], arguments: arguments) { [self] result in
            let position = result.flatMap(Self.position)
            if case .success = position { onPublishAcknowledged?(monotonicNanoseconds() - sent, payloads.count) }
            then(position)
        }
    }

    /// Up to `count` entries from `seq` on (for a gap fill or a resume), and the head.
    public func range(from seq: UInt64, count: Int, then: @escaping (Result<StreamRange, RedisFailure>) -> Void) {
        precondition(count > 0, "count bounds the reply")
        read(from: max(seq, 1), count: count) { then($0) }
    }

    /// The current epoch and last seq (creating the epoch if Redis has none, so a node
    /// and its clients start with the epoch the next publish keeps).
    public func head(then: @escaping (Result<StreamPosition, RedisFailure>) -> Void) {
        read(from: 1, count: 0) { then($0.map(\.head)) }
    }

    private func read(from seq: UInt64, count: Int, then: @escaping (Result<StreamRange, RedisFailure>) -> Void) {
        let arguments = [Array(newEpoch().utf8), Array(String(seq).utf8), Array(String(count).utf8)]
        readScript.run(on: link, keys: [keys.stream, keys.meta], arguments: arguments) { result in
            then(result.flatMap(Self.range))
        }
    }

    /// 64 random bits as 16 hex digits: the epoch used only if Redis lost the current one.
    /// A fresh one per call, so two losses never bring back an old epoch.
    private func newEpoch() -> String {
        let v = UInt64.random(in: .min ... .max, using: &random)
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    private static func position(_ reply: RedisReply) -> Result<StreamPosition, RedisFailure> {
        guard let parts = reply.elements, parts.count >= 2, let epoch = parts[0].string, let seq = parts[1].int, seq >= 0
        else { return .failure(.unexpectedReply("publish: \(reply)")) }
        return .success(StreamPosition(epoch: epoch, seq: UInt64(seq)))
    }

    private static func range(_ reply: RedisReply) -> Result<StreamRange, RedisFailure> {
        guard let parts = reply.elements, parts.count == 3, case .success(let head) = position(reply),
              let rows = parts[2].elements
        else { return .failure(.unexpectedReply("read: \(reply)")) }
        var entries: [StreamEntry] = []
        entries.reserveCapacity(rows.count)
        for row in rows {
            // {id, {field, value, ...}}: the ID is "<seq>-0", the payload is field `d`.
            guard let cols = row.elements, cols.count == 2, case .bulk(let id) = cols[0],
                  let dash = id.firstIndex(of: UInt8(ascii: "-")), let seq = UInt64(String(decoding: id[..<dash], as: UTF8.self)),
                  let fields = cols[1].elements, fields.count >= 2, case .bulk(let payload) = fields[1]
            else { return .failure(.unexpectedReply("stream entry: \(row)")) }
            entries.append(StreamEntry(seq: seq, payload: payload))
        }
        return .success(StreamRange(head: head, entries: entries))
    }
}
