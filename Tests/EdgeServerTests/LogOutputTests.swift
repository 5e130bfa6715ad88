import Glibc
import Logging
import Synchronization
import Testing
@testable import EdgeServer

/// A real pipe for a log output to write to; the test reads its other end, or leaves it
/// unread until it is full.
final class TestPipe {
    let readEnd: Int32
    let writeEnd: Int32
    private(set) var received: [UInt8] = []
    private var writeEndOpen = true

    init() throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw TestError("pipe: errno \(errno)") }
        readEnd = fds[0]
        writeEnd = fds[1]
        _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        close(readEnd)
        closeWriteEnd()
    }

    func closeWriteEnd() {
        if writeEndOpen { close(writeEnd) }
        writeEndOpen = false
    }

    /// Fills the pipe with "f" lines until it takes no more, and leaves the write end
    /// blocking or not; returns how many lines that was.
    func fill(leaveNonBlocking: Bool) -> Int {
        let flags = fcntl(writeEnd, F_GETFL)
        _ = fcntl(writeEnd, F_SETFL, flags | O_NONBLOCK)
        var lines = 0
        // Writes of at most PIPE_BUF are all or nothing: the pipe holds whole lines only.
        for size in [4096, 2] {
            let block = [UInt8](repeating: 0, count: size).enumerated().map { $0.offset % 2 == 0 ? UInt8(ascii: "f") : 10 }
            while block.withUnsafeBytes({ write(writeEnd, $0.baseAddress, $0.count) }) == size { lines += size / 2 }
        }
        if !leaveNonBlocking { _ = fcntl(writeEnd, F_SETFL, flags) }
        return lines
    }

    var text: String { String(decoding: received, as: UTF8.self) }
    var lines: [Substring] { text.split(separator: "\n") }

    /// Takes whatever has arrived, without waiting; false at EOF.
    @discardableResult
    func drain() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(readEnd, $0.baseAddress, $0.count) }
            if n > 0 { received += chunk[0..<n]; continue }
            return n < 0   // EAGAIN: open and empty; 0: EOF
        }
    }

    /// Reads until `condition` holds for everything received, waiting in poll(2) for more
    /// bytes; fails after `timeout` seconds.
    func read(until what: String, timeout: Double = 5, _ condition: (String) -> Bool) throws {
        let deadline = monotonicNow() + timeout
        while true {
            let open = drain()
            if condition(text) { return }
            let left = deadline - monotonicNow()
            if !open || left <= 0 { throw TestError("timed out after \(timeout) s waiting for \(what) in the pipe; got \(received.count) bytes: \(text.suffix(300))") }
            var p = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            _ = Glibc.poll(&p, 1, Int32(left * 1000) + 1)
        }
    }

    /// Reads until EOF on another thread (for writers that must never find the pipe full).
    func readToEndInBackground() -> TestThread {
        _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) & ~O_NONBLOCK)
        return TestThread { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(self.readEnd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                self.received += chunk[0..<n]
            }
        }
    }
}

@Suite struct LogOutputTests {
    static let notice = "log lines dropped: log output too slow"

    func logger(_ output: LogOutput, label: String = "test") -> Logger {
        Logger(label: label) { LogLineHandler(label: $0, level: .info, output: output) }
    }

    /// Line `n`'s filler: its length and letter follow from `n`, so a torn or mixed-up
    /// line cannot pass for a whole one.
    static func filler(_ n: Int, length: Int) -> String {
        String(repeating: Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8(n % 26))), count: length)
    }

    /// Also with a non-blocking fd (a stderr shared with a program that set O_NONBLOCK):
    /// the writer waits in poll(2) instead of failing the write.
    @Test(arguments: [false, true])
    func aFullPipeBlocksNoCallerAndTheKeptLinesAreWholeAndInOrder(nonBlocking: Bool) throws {
        let pipe = try TestPipe()
        let filled = pipe.fill(leaveNonBlocking: nonBlocking)
        let output = LogOutput(fd: pipe.writeEnd, format: .text, maxLines: 64)
        let log = logger(output)
        // The pipe is full before the first line: at most the queue (64) and the writer's
        // batch (64) can be kept until someone reads.
        let total = 1000
        let finished = Atomic<Bool>(false)
        let slowest = Mutex<Double>(0)
        // On its own thread: if a call blocked on the full pipe, the test fails at the
        // deadline below instead of hanging.
        let caller = TestThread {
            for n in 0..<total {
                let start = monotonicNow()
                log.info("line \(n) \(Self.filler(n, length: 40 + n % 50))")
                let took = monotonicNow() - start
                slowest.withLock { $0 = max($0, took) }
            }
            finished.store(true, ordering: .releasing)
        }
        let returned = poll(timeout: 10) { finished.load(ordering: .acquiring) }
        guard returned else {
            // Read, so that the blocked caller can finish and be joined.
            let unblocked = poll(timeout: 30) { pipe.drain(); return finished.load(ordering: .acquiring) }
            if unblocked { caller.join() }
            Issue.record("logging blocked on a full pipe")
            return
        }
        caller.join()
        // A correctness bound (the call must not wait for the reader), not a speed target.
        #expect(slowest.withLock { $0 } < 0.1, "slowest call: \(slowest.withLock { $0 }) s")
        let dropped = output.droppedLines
        #expect(dropped > 0, "\(total) lines into a full pipe and a 64-line queue: some must be dropped")
        #expect(LogLineHandler.droppedLines >= dropped, "the process-wide counter includes this output's drops")
        #expect(!output.flush(timeoutMilliseconds: 50), "nothing can be flushed while nobody reads")

        // The reader comes back: the kept lines arrive, then the notice.
        try pipe.read(until: "the drop notice") { $0.contains(Self.notice + "\n") }
        #expect(output.flush(timeoutMilliseconds: 5000))
        pipe.drain()
        let all = pipe.lines
        #expect(all.prefix(filled).allSatisfy { $0 == "f" })
        let lines = all.dropFirst(filled)
        #expect(dropped >= UInt64(total - 128))
        // A notice each time the writer caught up after drops; the last line is one.
        #expect(lines.last.map { $0.contains(Self.notice) } == true, "a notice comes after the last lines kept")
        var previous = -1
        var kept = 0
        var reported = 0
        for line in lines {
            // "<24-character timestamp> INFO line <n> <filler>", or "... WARNING <n> log lines dropped: ..."
            let parts = line.split(separator: " ", maxSplits: 4)
            if parts.count == 5, parts[1] == "WARNING", let n = Int(parts[2]), line.hasSuffix(" \(n) \(Self.notice)") {
                reported += n
                continue
            }
            guard parts.count == 5, parts[0].count == 24, parts[0].hasSuffix("Z"), parts[1] == "INFO", parts[2] == "line",
                  let n = Int(parts[3]), parts[4] == Self.filler(n, length: 40 + n % 50) else {
                Issue.record("torn or foreign line: \(line.prefix(120))")
                continue
            }
            if n <= previous { Issue.record("line \(n) after line \(previous)") }
            previous = n
            kept += 1
        }
        #expect(kept > 0)
        #expect(kept + Int(dropped) == total, "every line is either written or counted as dropped")
        #expect(reported == Int(dropped), "the notices add up to the drops")
        #expect(output.stop())
    }

    @Test func linesFromManyThreadsAreNeverInterleaved() throws {
        let pipe = try TestPipe()
        let reader = pipe.readToEndInBackground()
        let output = LogOutput(fd: pipe.writeEnd, format: .text, maxLines: 256)
        let log = logger(output)
        let threads = 8
        let perThread = 400
        // Lengths up to 6000 bytes: past PIPE_BUF (4096), where even single write(2)s
        // from several threads could interleave.
        func length(_ t: Int, _ n: Int) -> Int { (t * 7919 + n * 104_729) % 6000 + 1 }
        let producers = (0..<threads).map { t in
            TestThread {
                for n in 0..<perThread { log.info("T\(t) N\(n) \(Self.filler(t + n, length: length(t, n)))") }
            }
        }
        for p in producers { p.join() }
        #expect(output.stop(timeoutMilliseconds: 10_000))
        pipe.closeWriteEnd()
        reader.join()
        var last = [Int](repeating: -1, count: threads)
        var kept = 0
        var reported = 0
        for line in pipe.lines {
            let parts = line.split(separator: " ", maxSplits: 4)
            if parts.count == 5, parts[1] == "WARNING", let n = Int(parts[2]), line.hasSuffix(" \(n) \(Self.notice)") {
                reported += n
                continue
            }
            guard parts.count == 5, parts[0].count == 24, parts[1] == "INFO",
                  parts[2].first == "T", let t = Int(parts[2].dropFirst()), t < threads,
                  parts[3].first == "N", let n = Int(parts[3].dropFirst()),
                  parts[4] == Self.filler(t + n, length: length(t, n)) else {
                Issue.record("torn line: \(line.prefix(80))…")
                continue
            }
            if n <= last[t] { Issue.record("thread \(t): line \(n) after \(last[t])") }
            last[t] = n
            kept += 1
        }
        #expect(kept > 0)
        #expect(kept + Int(output.droppedLines) == threads * perThread)
        #expect(reported == Int(output.droppedLines), "the notices add up to the drops")
    }

    @Test func anIdleWriterIsWokenForEveryLine() throws {
        // Each line finds the writer asleep: a lost wake-up leaves a line unwritten.
        let pipe = try TestPipe()
        let output = LogOutput(fd: pipe.writeEnd, format: .text)
        let log = logger(output)
        for n in 0..<200 {
            log.info("ping \(n)")
            try pipe.read(until: "ping \(n)") { $0.hasSuffix(" INFO ping \(n)\n") }
        }
        #expect(pipe.lines.count == 200)
        #expect(output.droppedLines == 0)
        #expect(output.stop())
    }

    @Test func aLineOverTheByteBoundIsDroppedAndReportedInJSON() throws {
        let pipe = try TestPipe()
        let output = LogOutput(fd: pipe.writeEnd, format: .json, maxBytes: 1000)
        let log = logger(output, label: "tickwire")
        log.info("short")
        log.info("long \(String(repeating: "x", count: 2000))")
        // No line follows: the notice must come without one.
        try pipe.read(until: "the drop notice") { $0.contains(Self.notice) }
        #expect(output.droppedLines == 1)
        let lines = pipe.lines
        #expect(lines.count == 2)
        #expect(lines.first?.contains(#""msg":"short""#) == true)
        let notice = String(lines.last ?? "")
        #expect(notice.hasPrefix(#"{"ts":""#))
        #expect(notice.hasSuffix(#"","level":"warning","logger":"tickwire.log","msg":"1 log lines dropped: log output too slow"}"#), "\(notice)")
        #expect(output.stop())
    }

    @Test func textAndJSONLinesAreExactlyAsBefore() throws {
        for format in LogFormat.allCases {
            let pipe = try TestPipe()
            let output = LogOutput(fd: pipe.writeEnd, format: format)
            var log = logger(output, label: "fmt")
            log[metadataKey: "a"] = "from the logger"
            log[metadataKey: "c"] = "kept"
            log.warning("hello \"q\"\tend", metadata: ["b": "2", "a": "x y"])
            try pipe.read(until: "the line") { $0.hasSuffix("\n") }
            #expect(output.stop())
            let line = pipe.text
            // The timestamp: 2026-01-02T03:04:05.678Z, now.
            let start = line.index(line.startIndex, offsetBy: format == .text ? 0 : 7)
            let ts = line[start...].prefix(24)
            #expect(ts.count == 24 && ts.hasSuffix("Z") && ts.dropFirst(10).first == "T" && ts.dropFirst(19).first == ".", "\(line)")
            let rest = line[start...].dropFirst(24)
            switch format {
            case .text:
                #expect(rest == " WARNING hello \"q\"\tend a=x y b=2 c=kept\n", "\(line)")
            case .json:
                #expect(line.hasPrefix(#"{"ts":""#))
                #expect(rest == #"","level":"warning","logger":"fmt","msg":"hello \"q\"\tend","a":"x y","b":"2","c":"kept"}"# + "\n", "\(line)")
            }
        }
    }
}
