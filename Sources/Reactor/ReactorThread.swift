import CSystemShims
import Glibc

/// A plain POSIX thread for one reactor. Reactors live outside Swift concurrency: they
/// block in epoll_wait and must never be scheduled onto the cooperative pool.
public final class ReactorThread: @unchecked Sendable {
    // @unchecked: `body` is handed to the new thread once, before it starts, and never
    // touched again by the creating thread.
    private var thread = pthread_t()
    private let body: () -> Void
    public let name: String

    public init(name: String, body: @escaping () -> Void) {
        self.name = name
        self.body = body
    }

    /// Starts the thread, optionally pinned to one CPU.
    public func start(cpu: Int? = nil) throws(SystemError) {
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let me = Unmanaged<ReactorThread>.fromOpaque(raw!).takeRetainedValue()
            _ = tw_set_thread_name(me.name)
            // Signals belong to the main thread; a reactor is never interrupted by one.
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGINT)
            sigaddset(&set, SIGTERM)
            sigaddset(&set, SIGHUP)
            pthread_sigmask(SIG_BLOCK, &set, nil)
            me.body()
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<ReactorThread>.fromOpaque(context).release()
            throw SystemError("pthread_create", errno: rc)
        }
        if let cpu {
            _ = tw_pin_thread(thread, Int32(cpu))
        }
    }

    public func join() {
        pthread_join(thread, nil)
    }

    /// Online CPUs: the default number of reactors.
    public static var onlineCPUs: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}
