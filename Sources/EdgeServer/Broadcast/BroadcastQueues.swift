import Reactor
import Synchronization
import TradingStream

/// The per-core broadcast queues (ARCHITECTURE.md): the ingestion actor, their single
/// producer, pushes each frame (one retained reference per reactor) into every reactor's
/// unbounded SPSC queue and wakes it with ev_async. A stalled reactor costs a segment per
/// thousand frames and never makes the producer wait, poll or reorder.
final class BroadcastQueues: BroadcastSink, @unchecked Sendable {
    // @unchecked: `inboxes` is set once, before any frame is delivered; `deliver` runs on
    // the single producer (the publisher actor), which the queues require.
    private var inboxes: [BroadcastInbox] = []
    /// The newest seq handed to the reactors: the head of this epoch. A resume point
    /// beyond it was never issued.
    let headSeq = Atomic<UInt64>(0)

    func attach(_ inboxes: [BroadcastInbox]) {
        self.inboxes = inboxes
    }

    func deliver(_ frames: [BroadcastFrame]) {
        guard let last = frames.last else { return }
        headSeq.store(last.seq, ordering: .releasing)
        for inbox in inboxes {
            for frame in frames { inbox.queue.push(Unmanaged.passRetained(frame)) }
            inbox.wake()
        }
    }

    /// A new epoch: a marker frame (seq 0, which no message has; the epoch as its bytes) goes through each reactor's queue, so the reactor resets its history at
    /// exactly this point of the stream; the command mailbox could not keep that order.
    func beginEpoch(_ epoch: String) {
        headSeq.store(0, ordering: .releasing)
        let marker = Array(epoch.utf8).withUnsafeBytes {
            BroadcastFrame(json: $0, seq: 0, channel: Channel.allCases[0], symbolHash: 0, conflationKey: 0, acceptedAt: 0)
        }
        for inbox in inboxes {
            inbox.queue.push(Unmanaged.passRetained(marker))
            inbox.wake()
        }
    }

    /// Frames queued but not yet taken by their reactors (metrics; approximate).
    var pendingCount: Int { inboxes.reduce(0) { $0 + $1.queue.approximateCount } }
}

/// One reactor's end of the broadcast queues: the queue and how to wake its loop.
struct BroadcastInbox: @unchecked Sendable {
    // @unchecked: the queue is SPSC by construction; `wake` is ev_async_send, safe anywhere.
    let queue: SPSCQueue<Unmanaged<BroadcastFrame>>
    let wake: () -> Void
}
