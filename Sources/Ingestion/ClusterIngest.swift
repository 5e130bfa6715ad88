import CLibEV
import Cluster
import Reactor
import Synchronization

/// What Redis answered to one group of messages published together.
public enum ClusterPublishResult: Sendable {
    case accepted(seqs: [UInt64])
    /// Never sent: refuse (503), nothing was published.
    case linkDown(String)
    /// Sent and not answered (timeout, connection lost): the outcome is unknown.
    case unknown(String)
}

/// The cluster's ingestion edge (`--redis`). It lives on `EdgeLoop.redis`, not on the
/// publisher's edge loop: Redis I/O and the ordering of what arrives from Pub/Sub never
/// wait behind validation, snapshots or metrics, nor they behind a slow Redis. Its only
/// output is an ordered hand-off (`EdgeInbox`, FIFO) to `StreamPublisher.apply`, which
/// frames on the edge loop exactly as a single node does.
///
/// Ordering: messages are applied strictly in seq order. A Pub/Sub frame that does not
/// follow the last applied seq is buffered and the gap is read from the stream first;
/// after a (re)subscribe, everything after the last applied seq is read from the stream
/// before Pub/Sub is trusted again. Loop thread only, except the atomics and `publish`.
public final class ClusterIngest: @unchecked Sendable {
    // @unchecked: mutable state is touched on `EdgeLoop.redis` only; the rest is atomic.
    public let command: RedisLink
    public let stream: ClusterStream
    public let publisher: ClusterPublisher
    private var subscriber: RedisSubscriber!
    private let target: StreamPublisher
    private let deliveries: EdgeInbox<Delivery>
    private let log: @Sendable (_ warning: Bool, _ line: String) -> Void

    /// Whether both links are up and the history is loaded (health, metrics).
    public let linkUp = Atomic<Bool>(false)
    /// The last seq applied (health).
    public let head = Atomic<UInt64>(0)
    public let gapFills = Atomic<UInt64>(0)
    /// Messages a gap fill could not find (trimmed from the stream meanwhile).
    public let lost = Atomic<UInt64>(0)
    public let epochChanges = Atomic<UInt64>(0)
    /// Publish script calls acknowledged, and their summed round trip (ns), with a
    /// histogram over `publishRoundTripBounds` (written on the Redis loop only).
    public let publishCalls = Atomic<UInt64>(0)
    public let publishRoundTripNanoseconds = Atomic<UInt64>(0)
    /// Upper bounds (ns): a loopback round trip is ~0.1 ms, a batch of 256 ~1 ms; past
    /// 100 ms Redis is in trouble, and the command timeout ends the rest.
    public static let publishRoundTripBounds: [UInt64] = [
        50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 100_000_000, 1_000_000_000,
    ]
    /// Per bucket (the last: above every bound), not cumulative.
    public let publishRoundTripBuckets: InlineArray<12, Atomic<UInt64>> = InlineArray { _ in Atomic<UInt64>(0) }
    /// Publish groups (one per request body) refused with 503: never sent (link down),
    /// and sent without a reply (outcome unknown).
    public let refusedLinkDown = Atomic<UInt64>(0)
    public let refusedUnknown = Atomic<UInt64>(0)
    /// Entries in the Redis stream (XLEN), sampled every `sampleInterval`, not per message.
    public let streamLength = Atomic<Int64>(-1)
    /// Link changes (up or down, either link) since start, and each link's state.
    public let linkChanges = Atomic<UInt64>(0)
    public let commandLinkUp = Atomic<Bool>(false)
    public let pubsubLinkUp = Atomic<Bool>(false)
    /// Seconds between samples of the stream (XLEN, and the head: the epoch check that
    /// notices a Redis that lost the stream while nothing is published, and a tail lost
    /// from Pub/Sub with nothing newer behind it). One script call per node per second.
    public static let sampleInterval = 1.0
    private let sampleTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    /// The head read by the previous sample.
    private var headAtLastSample: UInt64 = 0
    private let epochCell = Mutex<String>("")
    public var epoch: String { epochCell.withLock { $0 } }

    private var currentEpoch: String?
    private var applied: UInt64 = 0
    private var loaded = false
    private var catchingUp = false
    private var needsCatchUp = false
    private var buffered: [ClusterFrame] = []
    private var onLoaded: (@Sendable () -> Void)?

    struct Delivery: @unchecked Sendable {
        // @unchecked: plain values, handed over once through the FIFO inbox.
        let epoch: String
        let entries: [(seq: UInt64, message: ClusterMessage)]
        let done: (@Sendable () -> Void)?
    }

    public init(
        endpoint: RedisEndpoint, settings: RedisLinkSettings, history: Int, keys: StreamKeys = StreamKeys(),
        target: StreamPublisher, log: @escaping @Sendable (_ warning: Bool, _ line: String) -> Void
    ) {
        command = RedisLink(endpoint: endpoint, settings: settings, on: .redis)
        stream = ClusterStream(link: command, keys: keys, history: history)
        publisher = ClusterPublisher(stream: stream)
        self.target = target
        self.log = log
        deliveries = EdgeInbox<Delivery>(on: .edge) { [target] d in
            target.assumeIsolated { $0.apply(epoch: d.epoch, entries: d.entries) }
            d.done?()
        }
        let box = UncheckedIngest(self)
        subscriber = RedisSubscriber(endpoint: endpoint, settings: settings, on: .redis, channels: [keys.channel]) { _, payload in
            box.ingest.received(payload)
        }
        let calls = UncheckedCounters(self)
        stream.onPublishAcknowledged = { ns, _ in
            let me = calls.ingest
            me.publishCalls.add(1, ordering: .relaxed)
            me.publishRoundTripNanoseconds.add(ns, ordering: .relaxed)
            var i = 0
            while i < Self.publishRoundTripBounds.count && ns > Self.publishRoundTripBounds[i] { i += 1 }
            me.publishRoundTripBuckets[i].add(1, ordering: .relaxed)
        }
        tw_ev_timer_init(sampleTimer, { _, w, _ in
            Unmanaged<ClusterIngest>.fromOpaque(w!.pointee.data).takeUnretainedValue().sample()
        }, Self.sampleInterval, Self.sampleInterval)
        // Unretained: an ingest lives as long as the process (its links keep running).
        sampleTimer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    /// Any thread: connects; `loaded` runs (on the edge loop) once the head and the last
    /// `history` entries have been handed to the publisher.
    public func start(loaded: @escaping @Sendable () -> Void) {
        let box = UncheckedIngest(self)
        EdgeLoop.redis.onLoop {
            let me = box.ingest
            me.onLoaded = loaded
            me.command.onStateChange = { state in me.linkChanged("command", state) }
            me.subscriber.onStateChange = { state in me.linkChanged("pubsub", state) }
            me.command.start()
            me.subscriber.start()
            ev_timer_start(EdgeLoop.redis.rawLoop, me.sampleTimer)
        }
    }

    /// Any thread: publishes a group of payloads (consecutive seqs in order per thread).
    public func publish(_ payloads: [[UInt8]], then: @escaping @Sendable (ClusterPublishResult) -> Void) {
        let counters = UncheckedCounters(self)
        let group = PublishGroup(count: payloads.count) { result in
            switch result {
            case .accepted: break
            case .linkDown: counters.ingest.refusedLinkDown.add(1, ordering: .relaxed)
            case .unknown: counters.ingest.refusedUnknown.add(1, ordering: .relaxed)
            }
            then(result)
        }
        for (i, p) in payloads.enumerated() {
            publisher.publish(p) { result in group.settle(i, result) }
        }
    }

    // MARK: - Loop thread

    private func linkChanged(_ name: String, _ state: RedisLink.State) {
        linkChanges.add(1, ordering: .relaxed)
        commandLinkUp.store(command.isUp, ordering: .relaxed)
        pubsubLinkUp.store(subscriber.link.isUp, ordering: .relaxed)
        switch state {
        case .up: log(false, "cluster link \(name) up: \(command.endpoint)")
        case .down(let why): log(true, "cluster link \(name) down: \(why)")
        case .closed: log(false, "cluster link \(name) closed")
        }
        if case .up = subscriber.state, case .up = state {
            // Pub/Sub dropped whatever was published while either link was down.
            needsCatchUp = true
        }
        updateLinkState()
        if !loaded, command.isUp { load() } else { catchUp() }
    }

    /// Every `sampleInterval`: the stream's length for metrics, and the head, to catch an
    /// epoch Redis replaced (FLUSHALL, a restart without persistence) while nothing is
    /// published, and a tail Pub/Sub lost with nothing published after it.
    private func sample() {
        guard loaded, command.isUp else { return }
        command.send(RedisCommand("XLEN", stream.keys.stream)) { [self] result in
            if case .success(let reply) = result, let n = reply.int { streamLength.store(n, ordering: .relaxed) }
        }
        stream.head { [self] result in
            guard case .success(let head) = result, !catchingUp else { return }
            // What Redis had a whole sample ago and this node still lacks: Pub/Sub lost it
            // (a message merely in flight would have arrived by now).
            let stuck = head.epoch == currentEpoch && headAtLastSample > applied
            headAtLastSample = head.epoch == currentEpoch ? head.seq : 0
            if head.epoch != currentEpoch || stuck {
                if stuck { gapFills.add(1, ordering: .relaxed) }
                needsCatchUp = true
                catchUp()
            }
        }
    }

    private func updateLinkState() {
        linkUp.store(loaded && command.isUp && subscriber.link.isUp, ordering: .relaxed)
    }

    /// The start: the head, then the last `history` entries, before anything from Pub/Sub.
    private func load() {
        guard !catchingUp else { return }
        catchingUp = true
        stream.head { [self] result in
            switch result {
            case .failure(let f):
                catchingUp = false
                log(true, "cluster: reading the head failed: \(f)")
            case .success(let head):
                adopt(head.epoch)
                applied = head.seq > UInt64(stream.history) ? head.seq - UInt64(stream.history) : 0
                catchingUp = false
                needsCatchUp = true
                loaded = true
                let done = onLoaded
                onLoaded = nil
                hand(epoch: head.epoch, entries: [], done: nil)
                catchUp(then: done)
            }
        }
    }

    /// A Pub/Sub frame: applied if it follows the last applied seq, else the gap is read first.
    private func received(_ bytes: [UInt8]) {
        guard let frame = ClusterFrame(bytes) else {
            log(true, "cluster: a malformed frame on the feed channel was ignored")
            return
        }
        if !loaded || catchingUp || needsCatchUp {
            buffered.append(frame)
            catchUp()
            return
        }
        if frame.epoch != currentEpoch {
            adopt(frame.epoch)
            applied = 0
        }
        if frame.lastSeq <= applied { return }
        if frame.firstSeq > applied + 1 {
            gapFills.add(1, ordering: .relaxed)
            buffered.append(frame)
            needsCatchUp = true
            catchUp()
            return
        }
        apply(frame)
    }

    private func apply(_ frame: ClusterFrame) {
        var entries: [(seq: UInt64, message: ClusterMessage)] = []
        for (i, p) in frame.payloads.enumerated() {
            let s = frame.firstSeq + UInt64(i)
            guard s > applied else { continue }
            if let m = ClusterMessage(p) { entries.append((s, m)) } else { log(true, "cluster: message \(s) is not a Tickwire message; skipped") }
            applied = s
        }
        hand(epoch: frame.epoch, entries: entries, done: nil)
    }

    /// Reads from the stream everything after the last applied seq, up to its head, then
    /// replays what Pub/Sub buffered meanwhile (dropping what the stream already gave).
    private func catchUp(then done: (@Sendable () -> Void)? = nil) {
        guard loaded, needsCatchUp || !buffered.isEmpty, !catchingUp, command.isUp else {
            if let done { hand(epoch: currentEpoch ?? "", entries: [], done: done) }
            return
        }
        catchingUp = true
        let from = applied + 1
        stream.range(from: from, count: 1000) { [self] result in
            catchingUp = false
            switch result {
            case .failure(let f):
                log(true, "cluster: gap fill from \(from) failed: \(f)")
                if let done { hand(epoch: currentEpoch ?? "", entries: [], done: done) }
            case .success(let range):
                if range.head.epoch != currentEpoch {
                    adopt(range.head.epoch)
                    applied = 0
                    buffered.removeAll { $0.epoch != range.head.epoch }
                    catchUp(then: done)
                    return
                }
                if !range.starts(at: from), let first = range.entries.first, first.seq > from {
                    lost.add(first.seq - from, ordering: .relaxed)
                    log(true, "cluster: seqs \(from)...\(first.seq - 1) were trimmed from the stream before this node read them")
                }
                var entries: [(seq: UInt64, message: ClusterMessage)] = []
                for e in range.entries where e.seq > applied {
                    if let m = ClusterMessage(e.payload[...]) { entries.append((e.seq, m)) }
                    applied = e.seq
                }
                if range.entries.isEmpty && range.head.seq > applied { applied = range.head.seq }
                let reachedHead = applied >= range.head.seq
                hand(epoch: range.head.epoch, entries: entries, done: reachedHead ? done : nil)
                if reachedHead {
                    needsCatchUp = false
                    let waiting = buffered
                    buffered.removeAll()
                    for f in waiting where f.epoch == currentEpoch {
                        if f.lastSeq <= applied { continue }
                        if f.firstSeq > applied + 1 { buffered.append(f); needsCatchUp = true; continue }
                        apply(f)
                    }
                    updateLinkState()
                    if needsCatchUp { catchUp() }
                } else {
                    catchUp(then: done)
                }
            }
        }
    }

    private func adopt(_ epoch: String) {
        if let currentEpoch, currentEpoch != epoch {
            epochChanges.add(1, ordering: .relaxed)
            log(true, "cluster: epoch \(currentEpoch) replaced by \(epoch) (Redis lost the stream)")
        }
        currentEpoch = epoch
        epochCell.withLock { $0 = epoch }
    }

    private func hand(epoch: String, entries: [(seq: UInt64, message: ClusterMessage)], done: (@Sendable () -> Void)?) {
        head.store(applied, ordering: .relaxed)
        deliveries.send(Delivery(epoch: epoch, entries: entries, done: done))
    }
}

/// The replies to one group of messages published together (Redis loop thread only).
final class PublishGroup: @unchecked Sendable {
    private var seqs: [UInt64]
    private var failure: ClusterPublishResult?
    private var waiting: Int
    private let then: @Sendable (ClusterPublishResult) -> Void

    init(count: Int, then: @escaping @Sendable (ClusterPublishResult) -> Void) {
        seqs = Array(repeating: 0, count: count)
        waiting = count
        self.then = then
    }

    func settle(_ i: Int, _ result: Result<StreamPosition, RedisFailure>) {
        switch result {
        case .success(let p): seqs[i] = p.seq
        case .failure(.linkDown(let why)): if failure == nil { failure = .linkDown(why) }
        case .failure(let f): failure = .unknown("\(f)")
        }
        waiting -= 1
        if waiting == 0 { then(failure ?? .accepted(seqs: seqs)) }
    }
}

/// Unowned: the hook lives in the ingest's own stream (no cycle).
struct UncheckedCounters: @unchecked Sendable {
    unowned let ingest: ClusterIngest
    init(_ ingest: ClusterIngest) { self.ingest = ingest }
}

struct UncheckedIngest: @unchecked Sendable {
    let ingest: ClusterIngest
    init(_ ingest: ClusterIngest) { self.ingest = ingest }
}
