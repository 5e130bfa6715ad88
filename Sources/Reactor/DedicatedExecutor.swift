import Glibc

/// A serial executor on its own POSIX thread, for the actors at the edges (ingestion,
/// simulator, metrics). They then never wait for, or compete with, the cooperative pool,
/// and nothing else running in the process (a test harness blocking pool threads, say)
/// can stall them. Also a task executor, so tasks started for them run on the same thread.
public final class DedicatedExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    // @unchecked: `queue` is guarded by `mutex`; the thread handle is written once.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [UnownedJob] = []
    private var thread = pthread_t()
    public let name: String

    /// The executor of Tickwire's edge actors.
    public static let edge = DedicatedExecutor(name: "tickwire-edge")

    public init(name: String) {
        self.name = name
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<DedicatedExecutor>.fromOpaque(raw!).takeRetainedValue()
            me.run()
            return nil
        }, context)
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        pthread_mutex_lock(mutex)
        queue.append(unowned)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    private func run() {
        var batch: [UnownedJob] = []
        while true {
            pthread_mutex_lock(mutex)
            while queue.isEmpty { pthread_cond_wait(condition, mutex) }
            swap(&batch, &queue)
            pthread_mutex_unlock(mutex)
            for job in batch {
                job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
