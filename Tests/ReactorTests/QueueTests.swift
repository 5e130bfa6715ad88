import Glibc
import Synchronization
import Testing
@testable import Reactor

@Suite struct SPSCQueueTests {
    @Test func fifoAcrossSegmentsAndRecycling() {
        let q = SPSCQueue<Int>(segmentCapacity: 4)
        #expect(q.pop() == nil)
        // 3 segments' worth, drained in two halves so segments are recycled mid-way.
        for i in 0..<6 { q.push(i) }
        #expect((0..<6).map { _ in q.pop() } == Array(0..<6))
        #expect(q.pop() == nil)
        for i in 6..<13 { q.push(i) }
        #expect(q.approximateCount == 7)
        #expect((6..<13).map { _ in q.pop() } == Array(6..<13))
        #expect(q.pop() == nil && q.approximateCount == 0)
    }

    @Test func neverFullAndNeverBlocksTheProducer() {
        // A stalled consumer: the producer keeps going, nothing is refused or reordered.
        let q = SPSCQueue<Int>(segmentCapacity: 8)
        for i in 0..<10_000 { q.push(i) }
        var next = 0
        while let v = q.pop() {
            #expect(v == next)
            next += 1
        }
        #expect(next == 10_000)
    }

    @Test func producerAndConsumerThreads() {
        // Two million values cross from one thread to another, in order, none lost, with
        // a segment size that forces constant linking and recycling.
        let q = SPSCQueue<Int>(segmentCapacity: 64)
        let total = 2_000_000
        let producer = Thread { for i in 0..<total { q.push(i) } }
        var expected = 0
        var outOfOrder = 0
        while expected < total {
            if let v = q.pop() {
                if v != expected { outOfOrder += 1 }
                expected += 1
            } else {
                sched_yield()
            }
        }
        producer.join()
        #expect(outOfOrder == 0)
        #expect(q.pop() == nil)
    }

    @Test func releasesWhatItStillHolds() {
        weak var probe: AnyObject?
        do {
            let q = SPSCQueue<Unmanaged<AnyObject>>(segmentCapacity: 2)
            let object = NSObjectLike()
            probe = object
            for _ in 0..<5 { q.push(Unmanaged.passRetained(object as AnyObject)) }
            _ = q.pop()?.release()
            // The queue holds 4 retained references; they are the caller's to release.
            while let u = q.pop() { u.release() }
        }
        #expect(probe == nil)
    }
}

final class NSObjectLike {}

@Suite struct MPSCQueueTests {
    @Test func takeAllIsOldestFirstAndReportsEmptyTransitions() {
        let q = MPSCQueue<Int>()
        #expect(q.push(1))        // was empty: wake the consumer
        #expect(!q.push(2))
        #expect(!q.push(3))
        var got: [Int] = []
        #expect(q.takeAll { got.append($0) } == 3)
        #expect(got == [1, 2, 3])
        #expect(q.isEmpty)
        #expect(q.push(4))        // empty again
        #expect(q.takeAll { _ in } == 1)
        #expect(q.takeAll { _ in } == 0)
    }

    @Test func manyProducersLoseNothingAndKeepEachProducersOrder() {
        let q = MPSCQueue<(producer: Int, n: Int)>()
        let producers = 4
        let each = 50_000
        let threads = (0..<producers).map { p in Thread { for n in 0..<each { q.push((p, n)) } } }
        var last = Array(repeating: -1, count: producers)
        var count = 0
        var disorder = 0
        while count < producers * each {
            let n = q.takeAll { item in
                if item.n != last[item.producer] + 1 { disorder += 1 }
                last[item.producer] = item.n
            }
            count += n
            if n == 0 { sched_yield() }
        }
        for t in threads { t.join() }
        #expect(disorder == 0)
        #expect(last == Array(repeating: each - 1, count: producers))
    }
}

actor EdgeCounter {
    nonisolated var unownedExecutor: UnownedSerialExecutor { EdgeLoop.edge.asUnownedSerialExecutor() }
    var value = 0
    func bump() -> Int { value += 1; return value }
}

@Suite struct EdgeLoopTests {
    @Test func actorsRunOnTheEdgeThread() async {
        let counter = EdgeCounter()
        var last = 0
        for _ in 0..<1000 { last = await counter.bump() }
        #expect(last == 1000)
    }

    @Test func inboxHandlersRunOnTheLoopAndMayAssumeIsolation() {
        let counter = EdgeCounter()
        let done = Atomic<Int>(0)
        let onLoop = Atomic<Int>(0)
        let inbox = EdgeInbox<Int>(on: .edge) { n in
            if EdgeLoop.edge.isOnLoopThread { onLoop.add(1, ordering: .relaxed) }
            _ = counter.assumeIsolated { $0.bump() }
            done.add(n, ordering: .releasing)
        }
        // From several threads at once, as reactors send.
        let threads = (0..<3).map { _ in Thread { for _ in 0..<1000 { inbox.send(1) } } }
        for t in threads { t.join() }
        let deadline = monotonicMilliseconds() + 5000
        while done.load(ordering: .acquiring) < 3000 && monotonicMilliseconds() < deadline { sched_yield() }
        #expect(done.load(ordering: .acquiring) == 3000)
        #expect(onLoop.load(ordering: .relaxed) == 3000)
        #expect(!EdgeLoop.edge.isOnLoopThread)
    }
}

@Suite struct BufferPoolSizeTests {
    @Test func smallQueuesTakeSmallBlocksAndGrowThroughEverySizeKeepingTheirBytes() {
        let pool = BufferPool(blockSize: 4096, maxFree: 4)
        var q = ByteQueue()
        q.append(Array(repeating: 7, count: 300), pool: pool)
        #expect(pool.bytesOutstanding == BufferPool.smallBlockSize, "a greeting-sized queue holds a small block")
        q.consume(100, pool: pool)
        // Small -> standard -> exact size, with the unread bytes carried along in order.
        var expected = [UInt8](repeating: 7, count: 200)
        for (size, byte) in [(400, UInt8(8)), (3000, 9), (20_000, 10)] {
            q.append([UInt8](repeating: byte, count: size), pool: pool)
            expected += [UInt8](repeating: byte, count: size)
            #expect(Array(q.readable) == expected)
        }
        #expect(pool.bytesOutstanding > 20_000)
        q.release(pool: pool)
        #expect(pool.bytesOutstanding == 0)
        // Both pooled sizes came back to their own lists; the exact-size block was freed.
        #expect(pool.cachedBlocks == 2 && pool.cachedBytes == 4096 + BufferPool.smallBlockSize)
        var r = ByteQueue()
        r.append([1], pool: pool)
        var s = ByteQueue()
        s.append([UInt8](repeating: 2, count: 1000), pool: pool)
        #expect(pool.cachedBlocks == 0, "each size is reused from its own list")
        r.release(pool: pool)
        s.release(pool: pool)
        pool.trim(keep: 0)
        #expect(pool.cachedBlocks == 0 && pool.cachedBytes == 0)
    }
}
