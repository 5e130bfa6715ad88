import CLibEV
import Reactor

extension EdgeLoop {
    /// The loop the cluster's Redis links run on: its own thread, so Redis I/O never
    /// waits behind the ingestion actors, nor they behind it.
    public static let redis = EdgeLoop(name: "tickwire-redis")
}

/// Publishes from any thread through one `ClusterStream`, batching: what arrives while
/// earlier batches are in flight goes out as the next script call (at most `maxBatch`
/// messages, at most `maxInFlight` calls pipelined). At a low rate each message goes alone
/// at once (no added latency); at a high rate the script's fixed cost is shared.
///
/// Messages from one thread take seqs in the order that thread published them: batches
/// leave in order on one connection and Redis runs them in order.
/// A publisher lives as long as the process (its wake-up watcher stays started).
public final class ClusterPublisher: @unchecked Sendable {
    // @unchecked: `incoming` is lock-free; everything else is touched on the loop thread.
    public typealias Completion = @Sendable (Result<StreamPosition, RedisFailure>) -> Void

    struct Message {
        let payload: [UInt8]
        let then: Completion
    }

    public let stream: ClusterStream
    /// Bounds one script call: Redis runs a script alone, so a huge batch would stall
    /// every other client of that Redis for its duration (~1 us per message).
    public let maxBatch: Int
    /// Calls in flight: enough to cover the round trip at full rate, few enough that a
    /// stalled Redis holds little.
    public let maxInFlight: Int
    private let incoming = MPSCQueue<Message>()
    private var waiting: [Message] = []
    private var waitingHead = 0
    private var inFlight = 0
    private let wake = UnsafeMutablePointer<ev_async>.allocate(capacity: 1)

    public init(stream: ClusterStream, maxBatch: Int = 256, maxInFlight: Int = 8) {
        precondition(maxBatch > 0 && maxInFlight > 0)
        self.stream = stream
        self.maxBatch = maxBatch
        self.maxInFlight = maxInFlight
        tw_ev_async_init(wake, { _, w, _ in
            Unmanaged<ClusterPublisher>.fromOpaque(w!.pointee.data).takeUnretainedValue().drain()
        })
        // Retained for good: the watcher stays started for the process' life.
        wake.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let box = UncheckedPublisher(self)
        stream.link.edge.onLoop {
            let me = box.publisher
            ev_async_start(me.stream.link.edge.rawLoop, me.wake)
            me.drain()  // what was pushed before the watcher started
        }
    }

    /// Any thread: publishes `payload`; `then` runs on the Redis loop's thread.
    public func publish(_ payload: [UInt8], then: @escaping Completion) {
        if incoming.push(Message(payload: payload, then: then)) {
            ev_async_send(stream.link.edge.rawLoop, wake)
        }
    }

    /// Messages waiting for a free call slot (for metrics).
    public var backlog: Int { waiting.count - waitingHead }

    private func drain() {
        incoming.takeAll { waiting.append($0) }
        flush()
    }

    private func flush() {
        while inFlight < maxInFlight && waitingHead < waiting.count {
            let end = min(waiting.count, waitingHead + maxBatch)
            let batch = Array(waiting[waitingHead..<end])
            waitingHead = end
            if waitingHead == waiting.count {
                waiting.removeAll(keepingCapacity: true)
                waitingHead = 0
            }
            inFlight += 1
            stream.publish(batch: batch.map(\.payload)) { [self] result in
                inFlight -= 1
                switch result {
                case .success(let last):
                    let first = last.seq - UInt64(batch.count) + 1
                    for (i, m) in batch.enumerated() {
                        m.then(.success(StreamPosition(epoch: last.epoch, seq: first + UInt64(i))))
                    }
                case .failure(let f):
                    for m in batch { m.then(.failure(f)) }
                }
                flush()
            }
        }
    }
}

struct UncheckedPublisher: @unchecked Sendable {
    let publisher: ClusterPublisher
    init(_ publisher: ClusterPublisher) { self.publisher = publisher }
}
