import CSystemShims
import Glibc
import Reactor
import Synchronization

/// Where log lines go: a file descriptor (stderr: a pipe to journald, a terminal), written
/// by one dedicated thread so that no caller ever blocks on it.
///
/// A caller (any thread, a reactor included) hands a finished line to a bounded lock-free
/// queue and returns. The writer thread drains it in batches with writev(2); it alone
/// blocks when the output is slow. When the queue is full the line is dropped and counted,
/// and once the writer has caught up it writes one line saying how many were lost.
///
/// Waking the writer costs a syscall only when it is idle: it announces that it is about to
/// sleep, re-checks the queue, and sleeps in poll(2) on a pipe; a producer writes a byte to
/// that pipe only if it sees the announcement. Both sides use sequentially consistent
/// operations, so either the writer sees the new line or the producer sees the writer
/// asleep (Dekker's pattern). While the writer is busy, a line costs no syscall at all.
public final class LogOutput: @unchecked Sendable {
    // @unchecked: shared state is atomics and the lock-free queue; `thread` is written once
    // in init, before any other thread can see the object.

    /// 4096 lines absorb a burst such as a reconnect storm's connect and disconnect lines
    /// while journald or a terminal catches up; 1 MiB caps the memory whatever the lines'
    /// lengths (server lines are short: a client's text is cut to 200 bytes). Past either,
    /// lines are dropped rather than waited for: a reactor must never wait on its log.
    public static let defaultMaxLines = 4096
    public static let defaultMaxBytes = 1 << 20
    /// Lines per writev(2) (IOV_MAX is 1024): big enough to catch up fast, small enough
    /// that the budget is freed often.
    static let batchLines = 64

    /// Lines dropped by every output in this process (the tickwire_log_lines_dropped_total metric).
    static let droppedTotal = Atomic<UInt64>(0)

    public let fd: Int32
    /// The format of the lines this output writes itself (the drop notice).
    public let format: LogFormat
    let queue: LogLineQueue
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let sleeping = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let dropped = Atomic<UInt64>(0)
    /// Drops the writer has written a notice about.
    private let reported = Atomic<UInt64>(0)
    /// Lines the writer has finished with (written, or lost to a write error).
    private let completed = Atomic<UInt64>(0)
    private var thread = pthread_t()
    private let threadRunning = Atomic<Bool>(false)

    public init(fd: Int32 = 2, format: LogFormat = .text, maxLines: Int = defaultMaxLines, maxBytes: Int = defaultMaxBytes) {
        self.fd = fd
        self.format = format
        queue = LogLineQueue(capacity: maxLines, maxBytes: maxBytes)
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for f in fds {
                _ = fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK)
                _ = fcntl(f, F_SETFD, FD_CLOEXEC)
            }
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        guard wakeRead >= 0 else { return }   // no pipe, no writer: lines are written directly
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let me = Unmanaged<LogOutput>.fromOpaque(raw!).takeRetainedValue()
            me.runWriter()
            return nil
        }, context)
        if rc == 0 {
            threadRunning.store(true, ordering: .releasing)
        } else {
            Unmanaged<LogOutput>.fromOpaque(context).release()
        }
    }

    deinit {
        if wakeRead >= 0 {
            close(wakeRead)
            close(wakeWrite)
        }
    }

    /// Lines this output dropped because its queue was full (or its fd failed).
    public var droppedLines: UInt64 { dropped.load(ordering: .relaxed) }

    /// Any thread, never blocks: queues `line` (a whole line, newline included) or drops it.
    public func write(_ line: String) {
        var line = line
        line.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    public func write(_ line: UnsafeRawBufferPointer) {
        guard threadRunning.load(ordering: .acquiring) else {
            // No writer thread could be started: the old way, one blocking write per line.
            writeDirectly(line)
            return
        }
        if !queue.push(line) {
            // Sequentially consistent like the push: ordered before the check below.
            dropped.wrappingAdd(1, ordering: .sequentiallyConsistent)
            Self.droppedTotal.wrappingAdd(1, ordering: .relaxed)
        }
        // After a drop too: a line over the byte bound is dropped with the writer idle, and
        // the notice about it should not wait for the next line.
        if sleeping.load(ordering: .sequentiallyConsistent) && sleeping.exchange(false, ordering: .sequentiallyConsistent) {
            var byte: UInt8 = 1
            _ = Glibc.write(wakeWrite, &byte, 1)   // non-blocking: a full pipe is a pending wake-up
        }
    }

    /// Waits until every line queued before the call, and the notice about any drop, has
    /// been written, or until the timeout. For the end of the process (never a reactor):
    /// polls every millisecond. Returns false on timeout (the output is stuck).
    @discardableResult
    public func flush(timeoutMilliseconds: Int = 2000) -> Bool {
        guard threadRunning.load(ordering: .acquiring) else { return true }
        let target = queue.pushedCount
        let deadline = monotonicMilliseconds() + UInt64(max(0, timeoutMilliseconds))
        while true {
            let notified = reported.load(ordering: .acquiring) >= dropped.load(ordering: .acquiring)
            if completed.load(ordering: .acquiring) >= target && notified { return true }
            if monotonicMilliseconds() >= deadline { return false }
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
    }

    /// Flushes, then ends the writer thread. False (and the thread left running) if the
    /// flush timed out: a writer blocked on a full pipe cannot be joined.
    @discardableResult
    public func stop(timeoutMilliseconds: Int = 2000) -> Bool {
        guard threadRunning.load(ordering: .acquiring) else { return true }
        guard flush(timeoutMilliseconds: timeoutMilliseconds) else { return false }
        stopping.store(true, ordering: .sequentiallyConsistent)
        var byte: UInt8 = 1
        _ = Glibc.write(wakeWrite, &byte, 1)
        pthread_join(thread, nil)
        threadRunning.store(false, ordering: .releasing)
        return true
    }

    // MARK: - The writer thread

    private func runWriter() {
        _ = tw_set_thread_name("tickwire-log")
        // Signals belong to the main thread. SIGPIPE is blocked so that a reader going
        // away fails the write with EPIPE here instead of killing the process.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGHUP)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)

        var batch: [(bytes: UnsafeMutableRawPointer, count: Int)] = []
        batch.reserveCapacity(Self.batchLines)
        while true {
            while batch.count < Self.batchLines, let line = queue.pop() { batch.append(line) }
            if !batch.isEmpty {
                let lost = writeBatch(batch)
                if lost > 0 { countDrops(lost) }
                for line in batch {
                    free(line.bytes)
                    queue.release(bytes: line.count)
                }
                completed.wrappingAdd(UInt64(batch.count), ordering: .releasing)
                batch.removeAll(keepingCapacity: true)
                continue
            }
            // Caught up: say what was lost, once.
            let drops = dropped.load(ordering: .acquiring)
            let told = reported.load(ordering: .relaxed)
            if drops > told {
                writeNotice(drops - told)
                reported.store(drops, ordering: .releasing)
                continue
            }
            if stopping.load(ordering: .acquiring) { return }
            sleeping.store(true, ordering: .sequentiallyConsistent)
            if queue.hasReadyLine || dropped.load(ordering: .sequentiallyConsistent) > told
                || stopping.load(ordering: .sequentiallyConsistent) {
                sleeping.store(false, ordering: .relaxed)
                continue
            }
            var wake = pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)
            _ = poll(&wake, 1, -1)
            var sink = [UInt8](repeating: 0, count: 64)
            while read(wakeRead, &sink, sink.count) > 0 {}
            sleeping.store(false, ordering: .relaxed)
        }
    }

    private func countDrops(_ n: Int) {
        dropped.wrappingAdd(UInt64(n), ordering: .relaxed)
        Self.droppedTotal.wrappingAdd(UInt64(n), ordering: .relaxed)
    }

    /// Writes the lines in order; returns how many were lost to a write error.
    private func writeBatch(_ batch: [(bytes: UnsafeMutableRawPointer, count: Int)]) -> Int {
        var vectors = batch.map { iovec(iov_base: $0.bytes, iov_len: $0.count) }
        var first = 0
        while first < vectors.count {
            let n = vectors.withUnsafeMutableBufferPointer { v in
                writev(fd, v.baseAddress! + first, Int32(v.count - first))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN && waitWritable() { continue }
                return vectors.count - first
            }
            // Skip what was written whole; advance into a line written in part.
            var left = n
            while first < vectors.count && left >= vectors[first].iov_len {
                left -= vectors[first].iov_len
                first += 1
            }
            if left > 0 {
                vectors[first].iov_base = vectors[first].iov_base! + left
                vectors[first].iov_len -= left
            }
        }
        return 0
    }

    /// A non-blocking fd (someone set O_NONBLOCK on a shared stderr): wait until it drains.
    private func waitWritable() -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        while true {
            let rc = poll(&p, 1, -1)
            if rc > 0 { return p.revents & Int16(POLLOUT) != 0 }
            if rc < 0 && errno == EINTR { continue }
            return false
        }
    }

    private func writeNotice(_ count: UInt64) {
        var line = LogLineHandler.line(
            level: .warning, message: "\(count) log lines dropped: log output too slow",
            label: "tickwire.log", metadata: [:], format: format)
        line.withUTF8 { buffer in
            let bytes = UnsafeMutableRawPointer(mutating: buffer.baseAddress!)
            _ = writeBatch([(bytes, buffer.count)])
        }
    }

    private func writeDirectly(_ line: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < line.count {
            let n = Glibc.write(fd, line.baseAddress! + offset, line.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}
