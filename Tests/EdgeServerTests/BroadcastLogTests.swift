import Testing
import TradingStream
@testable import EdgeServer

/// The reactor's log of broadcast frames, without sockets: indices, prefix sums, trimming,
/// growth and the seq search a resume uses.
@Suite struct BroadcastLogTests {
    /// Appends a new frame (the log takes over the +1 reference) and returns a weak handle.
    @discardableResult
    func append(_ log: BroadcastLog, seq: UInt64, size: Int = 10) -> WeakBox<BroadcastFrame> {
        let frame = makeFrame(seq: seq, size: size)
        log.append(.passRetained(frame))
        return WeakBox(frame)
    }

    @Test func appendAssignsGrowingIndicesAndCopiesTheHotFields() {
        let log = BroadcastLog(initialCapacity: 8)
        #expect(log.count == 0 && log.start == 0 && log.end == 0 && log.headSeq == 0)
        let frame = makeFrame(seq: 7, channel: .marketData, symbol: "BTCUSDT", key: 42, size: 100)
        let first = log.append(.passRetained(frame))
        let second = log.append(.passRetained(makeFrame(seq: 9, size: 3)))
        #expect(first == 0 && second == 1)
        #expect(log.count == 2 && log.end == 2 && log.headSeq == 9)
        let e = log.entry(0).pointee
        #expect(e.bytes == frame.bytes)
        #expect(Int(e.count) == frame.count && frame.count == 102)
        #expect(e.channel == Channel.marketData.rawValue)
        #expect(e.seq == 7 && e.symbolHash == SymbolHash.hash("BTCUSDT") && e.conflationKey == 42 && e.acceptedAt == 7)
        #expect(e.cumulative == 0)
        #expect(e.frame.takeUnretainedValue() === frame)
        #expect(log.entry(1).pointee.cumulative == 102)
        #expect(log.entry(1).pointee.seq == 9)
    }

    @Test func aNewEpochHidesTheOldHistoryFromResumesButKeepsItForSenders() {
        let log = BroadcastLog(initialCapacity: 4)
        for seq in 1...5 { append(log, seq: UInt64(seq)) }
        log.beginEpoch()
        #expect(log.headSeq == 0 && log.epochCount == 0 && log.count == 5)
        for seq in 1...3 { append(log, seq: UInt64(seq)) }
        #expect(log.headSeq == 3 && log.epochCount == 3 && log.count == 8)
        // Seqs restart: the search looks only at this epoch (the old 1...5 would match first).
        #expect(log.firstIndex(afterSeq: 0) == 5)
        #expect(log.firstIndex(afterSeq: 2) == 7)
        #expect(log.firstIndex(afterSeq: 3) == 8)
        // The old entries stay until trimmed (closing subscribers may still be sending them).
        #expect(log.entry(0).pointee.seq == 1 && log.start == 0)
        log.trim(below: 6)
        #expect(log.epochCount == 2 && log.firstIndex(afterSeq: 0) == 6)
    }

    @Test func bytesFromIsTheSumOfTheRest() {
        let log = BroadcastLog(initialCapacity: 4)
        let sizes = [10, 200, 1, 126, 70_000]   // 2-, 4- and 10-byte frame headers
        for (i, size) in sizes.enumerated() { append(log, seq: UInt64(i + 1), size: size) }
        let counts = (0..<sizes.count).map { Int(log.entry(UInt64($0)).pointee.count) }
        #expect(counts == [12, 204, 3, 130, 70_010])
        for i in 0...sizes.count {
            #expect(log.bytes(from: UInt64(i)) == UInt64(counts[i...].reduce(0, +)), "from \(i)")
        }
        #expect(log.bytes(from: 100) == 0)
        // Trimming keeps the sums of what is left right (the prefix sums are absolute).
        log.trim(below: 2)
        #expect(log.bytes(from: 2) == UInt64(counts[2...].reduce(0, +)))
        #expect(log.bytes(from: 4) == UInt64(counts[4]))
    }

    @Test func trimReleasesTheFramesBelowTheIndex() {
        let log = BroadcastLog(initialCapacity: 8)
        let frames = (1...5).map { append(log, seq: UInt64($0)) }
        #expect(frames.allSatisfy { !$0.isFreed }, "the log holds every frame it was given")
        log.trim(below: 3)
        #expect(log.start == 3 && log.end == 5 && log.count == 2)
        #expect(frames.map(\.isFreed) == [true, true, true, false, false])
        #expect(log.headSeq == 5, "trimming does not move the head")
        log.trim(below: 2)   // below the start: nothing
        #expect(log.start == 3)
        log.trim(below: 99)  // past the end: everything, and no further
        #expect(log.start == 5 && log.count == 0)
        #expect(frames.allSatisfy { $0.isFreed })
        // The log goes on from where it was.
        #expect(log.append(.passRetained(makeFrame(seq: 6))) == 5)
    }

    @Test func deinitReleasesEverythingStillHeld() {
        var frames: [WeakBox<BroadcastFrame>] = []
        do {
            let log = BroadcastLog(initialCapacity: 4)
            for seq in 1...10 { frames.append(append(log, seq: UInt64(seq))) }
            log.trim(below: 4)
            #expect(frames.filter(\.isFreed).count == 4)
        }
        #expect(frames.allSatisfy { $0.isFreed })
    }

    @Test func growsPastItsCapacityWhileWrappedKeepingOrderAndContents() {
        let log = BroadcastLog(initialCapacity: 4)
        var frames: [UInt64: WeakBox<BroadcastFrame>] = [:]
        var bytesOf: [UInt64: UnsafeMutableRawPointer] = [:]
        func add(_ seq: UInt64) {
            let frame = makeFrame(seq: seq, size: Int(seq))
            bytesOf[seq] = frame.bytes
            let index = log.append(.passRetained(frame))
            #expect(index == seq - 1)
            frames[seq] = WeakBox(frame)
        }
        // Fill, trim the front, refill: the live entries now wrap around the ring's end.
        for seq in 1...4 { add(UInt64(seq)) }
        log.trim(below: 2)
        for seq in 5...6 { add(UInt64(seq)) }
        #expect(log.count == 4)
        // Past the capacity twice over: two growths, each copying a wrapped ring.
        for seq in 7...40 { add(UInt64(seq)) }
        #expect(log.start == 2 && log.end == 40 && log.count == 38)
        for index in log.start..<log.end {
            let e = log.entry(index).pointee
            let seq = index + 1
            #expect(e.seq == seq, "entry \(index)")
            #expect(e.bytes == bytesOf[seq], "entry \(index) points at its own frame")
            #expect(Int(e.count) == Int(seq) + 2)
            #expect(e.frame.takeUnretainedValue().seq == seq)
        }
        #expect(log.bytes(from: log.start) == UInt64((3...40).reduce(0) { $0 + $1 + 2 }))
        #expect(frames[1]!.isFreed && frames[2]!.isFreed && !frames[3]!.isFreed && !frames[40]!.isFreed)
        // Growing moved the entries: each frame is still referenced once, released once.
        log.trim(below: 40)
        #expect((1...40).allSatisfy { frames[UInt64($0)]!.isFreed })
    }

    @Test func firstIndexAfterSeqAtTheEdges() {
        let empty = BroadcastLog(initialCapacity: 4)
        #expect(empty.firstIndex(afterSeq: 0) == 0)
        #expect(empty.firstIndex(afterSeq: 100) == 0)

        // Seqs with gaps (another reactor's subscribers, a filtered stream): 10, 12, 15, 20.
        let log = BroadcastLog(initialCapacity: 4)
        for seq: UInt64 in [10, 12, 15, 20] { append(log, seq: seq) }
        #expect(log.firstIndex(afterSeq: 0) == 0, "before the first")
        #expect(log.firstIndex(afterSeq: 9) == 0)
        #expect(log.firstIndex(afterSeq: 10) == 1)
        #expect(log.firstIndex(afterSeq: 11) == 1, "in a gap: the next one")
        #expect(log.firstIndex(afterSeq: 12) == 2)
        #expect(log.firstIndex(afterSeq: 14) == 2)
        #expect(log.firstIndex(afterSeq: 19) == 3)
        #expect(log.firstIndex(afterSeq: 20) == 4, "after the last: the end")
        #expect(log.firstIndex(afterSeq: .max) == 4)

        // After trimming, the search starts at the oldest retained entry.
        log.trim(below: 2)
        #expect(log.firstIndex(afterSeq: 0) == 2)
        #expect(log.firstIndex(afterSeq: 15) == 3)
        log.trim(below: 4)
        #expect(log.firstIndex(afterSeq: 0) == 4)
    }

    /// Random appends and trims against a plain array; every entry, sum and search checked
    /// after each step, and every trimmed frame really freed.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func randomizedAgainstAModel(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let log = BroadcastLog(initialCapacity: 2)
        var model: [(index: UInt64, seq: UInt64, count: Int, frame: WeakBox<BroadcastFrame>)] = []
        var trimmed: [WeakBox<BroadcastFrame>] = []
        var nextSeq: UInt64 = 1
        var nextIndex: UInt64 = 0
        for step in 0..<2000 {
            if Int.random(in: 0..<10, using: &rng) < 6 {
                nextSeq += UInt64.random(in: 1...3, using: &rng)
                let size = Int.random(in: 0...300, using: &rng)
                let frame = makeFrame(seq: nextSeq, size: size)
                let index = log.append(.passRetained(frame))
                #expect(index == nextIndex)
                model.append((index, nextSeq, frame.count, WeakBox(frame)))
                nextIndex += 1
            } else {
                let below = log.start + UInt64.random(in: 0...UInt64(model.count + 1), using: &rng)
                log.trim(below: below)
                while let first = model.first, first.index < below {
                    trimmed.append(first.frame)
                    model.removeFirst()
                }
            }
            #expect(log.start == model.first?.index ?? nextIndex, "step \(step)")
            #expect(log.end == nextIndex && log.count == model.count)
            var rest = 0
            for m in model.reversed() {
                rest += m.count
                let e = log.entry(m.index).pointee
                if e.seq != m.seq || Int(e.count) != m.count || log.bytes(from: m.index) != UInt64(rest) {
                    Issue.record("step \(step): entry \(m.index) is seq \(e.seq)/\(e.count) bytes, sum \(log.bytes(from: m.index)); expected \(m.seq)/\(m.count), \(rest)")
                }
            }
            let probe = UInt64.random(in: 0...(nextSeq + 2), using: &rng)
            let expected = model.first { $0.seq > probe }?.index ?? nextIndex
            #expect(log.firstIndex(afterSeq: probe) == expected, "step \(step): after seq \(probe)")
        }
        #expect(!trimmed.isEmpty && trimmed.allSatisfy { $0.isFreed })
        #expect(model.allSatisfy { !$0.frame.isFreed })
    }
}
