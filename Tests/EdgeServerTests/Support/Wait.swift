import Glibc
import Testing

/// Waits for `condition`, polling every 5 ms (the poll interval is the only sleep), and
/// throws when it still does not hold after `timeout` seconds: every wait in these tests
/// is for a condition, with a deadline and a message saying what did not happen.
func waitUntil(
    _ what: @autoclosure () -> String, timeout: Double = 5,
    sourceLocation: SourceLocation = #_sourceLocation, _ condition: () throws -> Bool
) throws {
    if try !poll(timeout: timeout, condition) {
        throw TestError("\(sourceLocation.fileName):\(sourceLocation.line): timed out after \(timeout) s waiting for \(what())")
    }
}

/// Polls `condition` every 5 ms for up to `timeout` seconds; whether it came to hold.
func poll(timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicNow() + timeout
    while true {
        if try condition() { return true }
        if monotonicNow() >= deadline { return false }
        usleep(5_000)
    }
}

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A joinable POSIX thread, for tests that need real concurrency outside Swift's pool.
final class TestThread: @unchecked Sendable {
    private var handle = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&handle, nil, { raw in
            let me = Unmanaged<TestThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, context)
    }

    func join() { pthread_join(handle, nil) }
}
