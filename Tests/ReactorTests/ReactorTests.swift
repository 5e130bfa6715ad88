import Glibc
import Testing
@testable import Reactor

@Suite struct DeadlineListTests {
    /// Slots with their links in a plain array, as a reactor keeps them in its table.
    final class Slots {
        var links: UnsafeMutablePointer<DeadlineLinks>
        init(_ n: Int) {
            links = .allocate(capacity: n)
            links.initialize(repeating: DeadlineLinks(), count: n)
        }
        deinit { links.deallocate() }
        func at(_ slot: UInt32) -> UnsafeMutablePointer<DeadlineLinks> { links + Int(slot) }
    }

    @Test func expiresInDeadlineOrderAndTouchMovesToTail() {
        let slots = Slots(4)
        var list = DeadlineList(id: 1, timeoutMilliseconds: 100)
        list.append(0, now: 1000) { slots.at($0) }
        list.append(1, now: 1010) { slots.at($0) }
        list.append(2, now: 1020) { slots.at($0) }
        list.touch(0, now: 1050) { slots.at($0) }         // 0 is now due at 1150
        #expect(list.popExpired(now: 1109, { slots.at($0) }) == nil)
        #expect(list.popExpired(now: 1115, { slots.at($0) }) == 1)
        #expect(list.popExpired(now: 1115, { slots.at($0) }) == nil)
        #expect(list.popExpired(now: 1200, { slots.at($0) }) == 2)
        #expect(list.popExpired(now: 1200, { slots.at($0) }) == 0)
        #expect(list.count == 0 && list.head == DeadlineList.none && list.tail == DeadlineList.none)
    }

    @Test func removeFromMiddleAndFromOtherListIsIgnored() {
        let slots = Slots(3)
        var a = DeadlineList(id: 1, timeoutMilliseconds: 10)
        var b = DeadlineList(id: 2, timeoutMilliseconds: 10)
        a.append(0, now: 0) { slots.at($0) }
        a.append(1, now: 0) { slots.at($0) }
        b.append(2, now: 0) { slots.at($0) }
        b.remove(1) { slots.at($0) }                      // not in b: nothing happens
        #expect(a.count == 2 && b.count == 1)
        a.remove(0) { slots.at($0) }
        #expect(a.head == 1 && a.tail == 1)
        #expect(slots.at(0).pointee.list == 0)
    }

    @Test func wrappingMilliseconds() {
        // Deadlines straddling the 2^32 wrap still compare correctly.
        let slots = Slots(1)
        var list = DeadlineList(id: 1, timeoutMilliseconds: 100)
        list.append(0, now: UInt32.max - 50) { slots.at($0) }
        #expect(list.popExpired(now: UInt32.max, { slots.at($0) }) == nil)
        #expect(list.popExpired(now: 49, { slots.at($0) }) == 0)
        #expect(DeadlineList.millisecondsUntil(10, now: UInt32.max) == 11)
    }
}

/// A minimal joinable thread for tests.
final class Thread: @unchecked Sendable {
    var handle = pthread_t()
    let body: () -> Void
    init(_ body: @escaping () -> Void) {
        self.body = body
        let ctx = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&handle, nil, { raw in
            let me = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, ctx)
    }
    func join() { pthread_join(handle, nil) }
}

@Suite struct ByteQueueTests {
    @Test func appendConsumeGrowAndRecycle() {
        let pool = BufferPool(blockSize: 4096, maxFree: 4)
        var q = ByteQueue()
        #expect(q.isEmpty && q.count == 0 && q.block == nil)
        q.append(Array(repeating: 1, count: 1000), pool: pool)
        q.consume(400, pool: pool)
        #expect(q.count == 600)
        // Growing past the standard block compacts and moves to a larger one.
        q.append(Array(repeating: 2, count: 10_000), pool: pool)
        #expect(q.count == 10_600)
        let readable = Array(q.readable)
        #expect(readable.prefix(600).allSatisfy { $0 == 1 } && readable.suffix(10_000).allSatisfy { $0 == 2 })
        q.consume(10_600, pool: pool)
        #expect(q.block == nil)
        #expect(pool.bytesOutstanding == 0)
        // Standard blocks are reused.
        q.append([1, 2, 3], pool: pool)
        let first = q.block
        q.release(pool: pool)
        q.append([4], pool: pool)
        #expect(q.block == first)
        q.release(pool: pool)
    }
}

@Suite struct PeerAddressTests {
    func v4(_ text: String) -> PeerAddress {
        var storage = sockaddr_storage()
        withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = UInt16(4242).bigEndian
                inet_pton(AF_INET, text, &sin.pointee.sin_addr)
            }
        }
        return withUnsafePointer(to: &storage) { PeerAddress(storage: $0) }
    }

    func v6(_ text: String) -> PeerAddress {
        var storage = sockaddr_storage()
        withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = UInt16(4242).bigEndian
                inet_pton(AF_INET6, text, &sin6.pointee.sin6_addr)
            }
        }
        return withUnsafePointer(to: &storage) { PeerAddress(storage: $0) }
    }

    /// Who may publish without a token: loopback peers only.
    @Test func loopbackDetection() {
        #expect(v4("127.0.0.1").isLoopback)
        #expect(v4("127.255.3.4").isLoopback)
        #expect(!v4("10.0.0.1").isLoopback)
        #expect(!v4("128.0.0.1").isLoopback)
        #expect(v6("::1").isLoopback)
        #expect(!v6("2001:db8::1").isLoopback)
        #expect(v6("::ffff:127.0.0.1").isLoopback)
        #expect(!v6("::ffff:192.168.1.1").isLoopback)
        #expect(v4("192.168.1.20").description == "192.168.1.20:4242")
        #expect(v6("2001:db8::1").description == "[2001:db8::1]:4242")
        #expect(v6("::ffff:10.1.2.3").description == "10.1.2.3:4242")
    }
}
