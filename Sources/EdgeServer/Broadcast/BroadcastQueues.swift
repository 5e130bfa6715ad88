import CLibEV
import Reactor
import Synchronization
import TradingStream

/// The per-core broadcast queues (ARCHITECTURE.md): the ingestion actor, their single
/// producer, pushes each frame (one retained reference per reactor) into every reactor's
/// SPSC ring and wakes it with ev_async. A ring that is full (a reactor stalled for tens
/// of thousands of messages) spills into a producer-side overflow list that is retried
/// first on the next delivery and by a short timer, so the producer never blocks and no
/// reactor ever sees frames out of order.
final class BroadcastQueues: BroadcastSink, @unchecked Sendable {
    // @unchecked: `workers` is set once before any frame is delivered; `overflow` is only
    // touched by `deliver`/`retry`, which run on the single producer (the publisher actor)
    // or under `retryLock` from the retry task.
    var workers: [Worker] = []
    private var overflow: [[Unmanaged<BroadcastFrame>]] = []
    private let retryLock = Mutex<Void>(())
    private let retryScheduled = Atomic<Bool>(false)

    func attach(_ workers: [Worker]) {
        self.workers = workers
        overflow = Array(repeating: [], count: workers.count)
    }

    func deliver(_ frames: [BroadcastFrame]) {
        retryLock.withLock { _ in
            for (i, worker) in workers.enumerated() {
                var pushed = flushOverflow(i, worker)
                for frame in frames {
                    let ref = Unmanaged.passRetained(frame)
                    if overflow[i].isEmpty && worker.inbox.push(ref) {
                        pushed = true
                    } else {
                        overflow[i].append(ref)
                    }
                }
                if pushed { worker.wakeSelf() }
            }
            if overflow.contains(where: { !$0.isEmpty }) { scheduleRetry() }
        }
    }

    /// Frames still waiting in overflow lists (metrics; approximate).
    var overflowCount: Int { retryLock.withLock { _ in overflow.reduce(0) { $0 + $1.count } } }

    private func flushOverflow(_ i: Int, _ worker: Worker) -> Bool {
        guard !overflow[i].isEmpty else { return false }
        var n = 0
        while n < overflow[i].count && worker.inbox.push(overflow[i][n]) { n += 1 }
        overflow[i].removeFirst(n)
        return n > 0
    }

    private func scheduleRetry() {
        guard !retryScheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Task.detached { [self] in
            try? await Task.sleep(for: .milliseconds(1))
            retryScheduled.store(false, ordering: .releasing)
            let more = retryLock.withLock { _ -> Bool in
                for (i, worker) in workers.enumerated() where flushOverflow(i, worker) { worker.wakeSelf() }
                return overflow.contains(where: { !$0.isEmpty })
            }
            if more { scheduleRetry() }
        }
    }
}
