import CLibEV
import CSystemShims
import Glibc

/// A libev loop on a POSIX thread of its own, for the actors at the edges (ingestion,
/// simulator, metrics, and later Redis and upstream feeds, whose C clients want a libev
/// loop). It is their serial executor and a task executor, so they never wait for, or
/// compete with, the cooperative pool.
///
/// Everything enters it without a lock: jobs and `EdgeInbox` messages are pushed onto
/// lock-free queues and the loop is woken with `ev_async`, the same way reactors are. A
/// reactor handing a request to the edge therefore never blocks, locks or spawns a task.
public final class EdgeLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    // @unchecked: `loop` and the watchers are touched only by the loop's thread after
    // start-up, except `ev_async_send`, which libev makes safe from any thread; `thread`
    // is written once, before anything can be enqueued from it.
    public let name: String
    let loop: EventLoop
    private let jobs = MPSCQueue<UnownedJob>()
    private let jobWatcher = UnsafeMutablePointer<ev_async>.allocate(capacity: 1)
    private var thread = pthread_t()
    private let started = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)

    /// The executor of Tickwire's edge actors.
    public static let edge = EdgeLoop(name: "tickwire-edge")

    public init(name: String) {
        self.name = name
        loop = try! EventLoop()
        sem_init(started, 0, 0)
        tw_ev_async_init(jobWatcher, { loop, _, _ in
            EventLoop.owner(of: loop, as: EdgeLoop.self).runJobs()
        })
        loop.setOwner(self)
        ev_async_start(loop.raw, jobWatcher)
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<EdgeLoop>.fromOpaque(raw!).takeRetainedValue()
            _ = tw_set_thread_name(me.name)
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGINT)
            sigaddset(&set, SIGTERM)
            sigaddset(&set, SIGHUP)
            pthread_sigmask(SIG_BLOCK, &set, nil)
            sem_post(me.started)
            me.loop.run()
            return nil
        }, context)
        // Until the thread runs, `isOnLoopThread` could not answer.
        while sem_wait(started) != 0 && errno == EINTR {}
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        if jobs.push(UnownedJob(job)) { ev_async_send(loop.raw, jobWatcher) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets `assumeIsolated` succeed in code the loop runs outside any task (an
    /// `EdgeInbox` handler, a libev callback): the loop's thread is the edge actors' executor.
    public func checkIsolated() {
        precondition(isOnLoopThread, "not on the \(name) thread")
    }

    public func isIsolatingCurrentContext() -> Bool? { isOnLoopThread }

    public var isOnLoopThread: Bool { pthread_equal(pthread_self(), thread) != 0 }

    private func runJobs() {
        jobs.takeAll { job in
            job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        }
    }

    /// The libev loop, for C clients with a libev adapter (hiredis) that attach their own
    /// watchers. Touch it only on the loop's thread.
    public var rawLoop: OpaquePointer { loop.raw }

    /// Runs `body` on the loop's thread: at once when already there, otherwise as a job.
    /// (Starts watchers, hands work to C clients that live on this loop.)
    public func onLoop(_ body: @escaping @Sendable () -> Void) {
        if isOnLoopThread { body(); return }
        Task(executorPreference: self) { body() }
    }
}

/// A mailbox into an `EdgeLoop`: any thread sends a message without a lock (a CAS and,
/// when the inbox was empty, an `ev_async_send`); the handler runs on the loop's thread.
/// Reactors use it to hand requests to the edge actors, which `assumeIsolated` there.
/// An inbox lives as long as the process (keep it in a `static let`): its watcher stays
/// started on the loop.
public final class EdgeInbox<Message>: EdgeWatcher, @unchecked Sendable {
    // @unchecked: `messages` is lock-free; `handler` and the watcher are used only on the
    // loop's thread once started.
    private let edge: EdgeLoop
    private let messages = MPSCQueue<Message>()
    private let watcher = UnsafeMutablePointer<ev_async>.allocate(capacity: 1)
    private let handler: (Message) -> Void

    public init(on edge: EdgeLoop, handler: @escaping (Message) -> Void) {
        self.edge = edge
        self.handler = handler
        super.init()
        watcher.pointee.data = Unmanaged.passUnretained(self as EdgeWatcher).toOpaque()
        tw_ev_async_init(watcher, { _, w, _ in
            Unmanaged<EdgeWatcher>.fromOpaque(w!.pointee.data).takeUnretainedValue().fire()
        })
        let box = UncheckedBox(self)
        edge.onLoop {
            let me = box.value
            ev_async_start(me.edge.loop.raw, me.watcher)
            // A send before the watcher started would have been lost by libev.
            me.drain()
        }
    }

    /// Any thread: queues `message` for the handler.
    public func send(_ message: Message) {
        if messages.push(message) { ev_async_send(edge.loop.raw, watcher) }
    }

    override func fire() { drain() }

    private func drain() {
        messages.takeAll(handler)
    }
}

/// What a libev callback on an edge loop finds through its watcher's `data` (C callbacks
/// cannot name a generic type).
public class EdgeWatcher: @unchecked Sendable {
    init() {}
    func fire() {}
}

/// Carries a non-Sendable reference into a closure that runs on the thread that owns it.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
