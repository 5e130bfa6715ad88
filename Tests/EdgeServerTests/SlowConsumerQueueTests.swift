import Testing
import TradingStream
@testable import EdgeServer

/// A slow consumer's private queue, without sockets: conflation, partial writes, exact
/// accounting and the release of every frame it lets go.
@Suite struct SlowConsumerQueueTests {
    /// Appends a fresh frame of `size` JSON bytes (frame = size + 2) under `key`; the queue
    /// holds the only strong reference afterwards.
    @discardableResult
    func append(_ q: SlowConsumerQueue, seq: UInt64, key: UInt64, size: Int = 10) -> WeakBox<BroadcastFrame> {
        let frame = makeFrame(seq: seq, channel: key == 0 ? .tradeExecuted : .marketData, key: key, size: size)
        q.append(.passUnretained(frame), bytes: frame.bytes, count: UInt32(frame.count), key: key)
        return WeakBox(frame)
    }

    /// Seqs of the live items, front to back.
    func liveSeqs(_ q: SlowConsumerQueue) -> [UInt64] {
        (q.base..<q.end).compactMap { i in
            let item = q.item(i)
            return item.alive ? item.frame.takeUnretainedValue().seq : nil
        }
    }

    @Test func newestWinsPerKeyAndTheSupersededFrameIsReleased() {
        let q = SlowConsumerQueue()
        let a = append(q, seq: 1, key: 7)
        let b = append(q, seq: 2, key: 8)
        #expect(q.pendingBytes == 24 && q.liveCount == 2 && q.conflated == 0)
        let c = append(q, seq: 3, key: 7)
        #expect(a.isFreed, "the superseded frame is released")
        #expect(!b.isFreed && !c.isFreed)
        #expect(q.conflated == 1)
        #expect(q.liveCount == 2 && q.pendingBytes == 24)
        #expect(liveSeqs(q) == [2, 3])
        #expect(q.end == 3, "a conflated frame keeps its index; it is skipped, not removed")
        let d = append(q, seq: 4, key: 7)
        #expect(c.isFreed && !d.isFreed && q.conflated == 2)
        #expect(liveSeqs(q) == [2, 4])
    }

    @Test func keyZeroIsNeverConflated() {
        let q = SlowConsumerQueue()
        let frames = (1...5).map { append(q, seq: UInt64($0), key: 0) }
        #expect(q.conflated == 0 && q.liveCount == 5 && q.pendingBytes == 60)
        #expect(frames.allSatisfy { !$0.isFreed })
        #expect(liveSeqs(q) == [1, 2, 3, 4, 5])
    }

    @Test func aPartlyWrittenFrontFrameIsNeverConflatedAway() {
        let q = SlowConsumerQueue()
        let a = append(q, seq: 1, key: 7, size: 98)   // 100 bytes
        q.consume(30)
        #expect(q.frontOffset == 30 && q.pendingBytes == 70)
        let b = append(q, seq: 2, key: 7)
        #expect(!a.isFreed, "its first 30 bytes are on the wire: the rest must follow")
        #expect(q.conflated == 0 && q.liveCount == 2 && q.pendingBytes == 82)
        #expect(liveSeqs(q) == [1, 2])
        // Once it is written out, the key conflates again (against the newer frame).
        q.consume(70)
        #expect(a.isFreed && q.frontOffset == 0 && q.pendingBytes == 12 && q.liveCount == 1)
        let c = append(q, seq: 3, key: 7)
        #expect(b.isFreed && !c.isFreed && q.conflated == 1)
        #expect(liveSeqs(q) == [3])
    }

    @Test func aFullyWrittenFrameIsNotConflatedAgainst() {
        let q = SlowConsumerQueue()
        append(q, seq: 1, key: 7)
        q.consume(12)
        #expect(q.isEmpty)
        let b = append(q, seq: 2, key: 7)
        #expect(q.conflated == 0 && !b.isFreed && q.liveCount == 1 && q.pendingBytes == 12)
    }

    @Test func consumeAcrossItemBoundaries() {
        let q = SlowConsumerQueue()
        let frames = [8, 18, 28].enumerated().map { append(q, seq: UInt64($0.offset + 1), key: 0, size: $0.element) } // 10, 20, 30
        #expect(q.pendingBytes == 60 && q.base == 0 && q.end == 3)
        q.consume(15)   // all of the first, 5 of the second
        #expect(frames[0].isFreed && !frames[1].isFreed)
        #expect(q.base == 1 && q.frontOffset == 5 && q.pendingBytes == 45 && q.liveCount == 2)
        q.consume(14)   // one byte short of the second's end
        #expect(q.base == 1 && q.frontOffset == 19 && q.pendingBytes == 31 && q.liveCount == 2)
        q.consume(1 + 29)   // the second's last byte and all but one of the third
        #expect(frames[1].isFreed && !frames[2].isFreed)
        #expect(q.base == 2 && q.frontOffset == 29 && q.pendingBytes == 1 && q.liveCount == 1)
        q.consume(1)
        #expect(frames[2].isFreed)
        #expect(q.base == 3 && q.end == 3 && q.frontOffset == 0 && q.pendingBytes == 0 && q.liveCount == 0)
        #expect(q.isEmpty)
    }

    @Test func consumeSkipsConflatedItems() {
        let q = SlowConsumerQueue()
        append(q, seq: 1, key: 7)            // conflated by seq 3
        append(q, seq: 2, key: 0)
        append(q, seq: 3, key: 7)
        #expect(liveSeqs(q) == [2, 3] && q.pendingBytes == 24)
        // The 12 bytes written are seq 2's: the dead item in front of it has no bytes.
        q.consume(12)
        #expect(liveSeqs(q) == [3] && q.pendingBytes == 12 && q.liveCount == 1 && q.frontOffset == 0)
        #expect(q.item(q.base).frame.takeUnretainedValue().seq == 3)
    }

    @Test func dropAllButPartialFrontKeepsOnlyTheRestOfTheFrameOnTheWire() {
        let q = SlowConsumerQueue()
        let frames = (1...4).map { append(q, seq: UInt64($0), key: $0 == 2 ? 9 : 0, size: 18) }   // 20 bytes each
        q.consume(25)
        q.dropAllButPartialFront()
        #expect(frames.map(\.isFreed) == [true, false, true, true])
        #expect(q.liveCount == 1 && q.pendingBytes == 15 && q.frontOffset == 5)
        #expect(liveSeqs(q) == [2])
        q.consume(15)
        #expect(q.isEmpty && q.liveCount == 0 && frames[1].isFreed)
    }

    @Test func dropAllButPartialFrontWithNothingPartialDropsEverything() {
        let q = SlowConsumerQueue()
        let frames = (1...3).map { append(q, seq: UInt64($0), key: 0) }
        q.dropAllButPartialFront()
        #expect(frames.allSatisfy { $0.isFreed })
        #expect(q.liveCount == 0 && q.pendingBytes == 0 && liveSeqs(q).isEmpty)
        q.skipDead()
        #expect(q.isEmpty && q.base == 3 && q.end == 3)
    }

    @Test func allowanceIsTheCallersAndNotTouchedByTheQueue() {
        let q = SlowConsumerQueue()
        #expect(q.allowance == 0)
        q.allowance = 5000
        append(q, seq: 1, key: 0)
        append(q, seq: 2, key: 3)
        append(q, seq: 3, key: 3)
        q.consume(12)
        q.dropAllButPartialFront()
        #expect(q.allowance == 5000)
        #expect(q.pendingBytes == 0, "the allowance is not counted in the pending bytes")
    }

    @Test func deinitReleasesOnlyWhatItStillHolds() {
        var frames: [WeakBox<BroadcastFrame>] = []
        do {
            let q = SlowConsumerQueue()
            for seq in 1...6 { frames.append(append(q, seq: UInt64(seq), key: UInt64(seq % 2 + 1))) }
            q.consume(5)
            #expect(frames.filter(\.isFreed).count == 4, "seqs 1-4 were conflated")
        }
        // A double release would have crashed here; a missed one leaves a frame alive.
        #expect(frames.allSatisfy { $0.isFreed })
    }

    @Test func compactsAfterManyPopsAndKeepsAbsoluteIndices() {
        let q = SlowConsumerQueue()
        var frames: [WeakBox<BroadcastFrame>] = []
        for seq in 1...200 { frames.append(append(q, seq: UInt64(seq), key: 0)) }
        #expect(q.items.count == 200)
        for popped in 1...130 {
            q.consume(12)
            #expect(q.base == UInt64(popped) && q.end == 200 && q.liveCount == 200 - popped && q.pendingBytes == 12 * (200 - popped))
        }
        #expect(q.items.count <= 99, "the popped front was compacted away (\(q.items.count) items kept)")
        #expect(frames[..<130].allSatisfy { $0.isFreed } && frames[130...].allSatisfy { !$0.isFreed })
        #expect(liveSeqs(q) == Array(131...200))
        for index in q.base..<q.end { #expect(q.item(index).frame.takeUnretainedValue().seq == index + 1) }
        // Appending after compaction continues the absolute numbering.
        append(q, seq: 201, key: 0)
        #expect(q.end == 201 && q.item(200).frame.takeUnretainedValue().seq == 201)
    }

    /// Random appends (conflatable or not), writes of random sizes and the occasional drop,
    /// against a model; the counters are checked exactly after every step.
    @Test(arguments: [11, 12, 13] as [UInt64])
    func randomizedAgainstAModel(seed: UInt64) {
        struct Entry {
            var seq: UInt64
            var key: UInt64
            var count: Int
            var alive: Bool
            var frame: WeakBox<BroadcastFrame>
        }
        var rng = SeededGenerator(seed: seed)
        let q = SlowConsumerQueue()
        var model: [Entry] = []   // every append, by absolute index
        var front = 0             // first index not fully written
        var offset = 0            // bytes of model[front] written
        var conflated: UInt64 = 0
        var released: [WeakBox<BroadcastFrame>] = []
        for step in 0..<3000 {
            let op = Int.random(in: 0..<100, using: &rng)
            if op < 55 {
                let key = Int.random(in: 0..<3, using: &rng) == 0 ? 0 : UInt64.random(in: 1...4, using: &rng)
                let size = Int.random(in: 0...200, using: &rng)
                let seq = UInt64(model.count + 1)
                // The model's rule: the newest entry with this key is superseded if it is
                // unsent, alive and not partly written.
                if key != 0, let last = model.lastIndex(where: { $0.key == key }), last >= front, model[last].alive,
                   !(last == front && offset > 0) {
                    model[last].alive = false
                    released.append(model[last].frame)
                    conflated += 1
                }
                let w = append(q, seq: seq, key: key, size: size)
                let header = size < 126 ? 2 : 4
                model.append(Entry(seq: seq, key: key, count: size + header, alive: true, frame: w))
            } else if op < 97 {
                let pending = model[front...].filter(\.alive).reduce(0) { $0 + $1.count } - offset
                guard pending > 0 else { continue }
                var n = Int.random(in: 1...min(pending, 600), using: &rng)
                q.consume(n)
                while n > 0 {
                    if !model[front].alive { front += 1; offset = 0; continue }
                    let remaining = model[front].count - offset
                    if n >= remaining {
                        n -= remaining
                        model[front].alive = false
                        released.append(model[front].frame)
                        front += 1
                        offset = 0
                    } else {
                        offset += n
                        n = 0
                    }
                }
                while front < model.count && !model[front].alive { front += 1; offset = 0 }
            } else {
                q.dropAllButPartialFront()
                while front < model.count && !model[front].alive { front += 1; offset = 0 }
                let keep = offset > 0 ? front + 1 : front
                for i in keep..<model.count where model[i].alive {
                    model[i].alive = false
                    released.append(model[i].frame)
                }
            }
            let live = model[front...].filter(\.alive)
            let pending = live.reduce(0) { $0 + $1.count } - offset
            if q.pendingBytes != pending || q.liveCount != live.count || q.conflated != conflated
                || Int(q.frontOffset) != offset || q.end != UInt64(model.count) {
                Issue.record("step \(step): pending \(q.pendingBytes)/\(pending), live \(q.liveCount)/\(live.count), conflated \(q.conflated)/\(conflated), offset \(q.frontOffset)/\(offset), end \(q.end)/\(model.count)")
                return
            }
            if liveSeqs(q) != live.map(\.seq) {
                Issue.record("step \(step): live seqs \(liveSeqs(q)), expected \(live.map(\.seq))")
                return
            }
        }
        #expect(conflated > 0, "the run exercised conflation")
        #expect(released.count > 100 && released.allSatisfy { $0.isFreed }, "every frame the queue let go is freed")
        #expect(model[front...].filter(\.alive).allSatisfy { !$0.frame.isFreed })
    }
}
