import Synchronization

/// One reactor's counters. Only the owning reactor writes them, with a plain load and
/// store (relaxed atomics compile to ordinary moves, no locked read-modify-write), and
/// readers on other threads (health, metrics) load them: nothing shared is contended.
final class WorkerStats: Sendable {
    /// Open WebSocket sessions.
    let webSocketsOpen = Atomic<Int>(0)
    /// Sockets of any kind held by the reactor.
    let socketsOpen = Atomic<Int>(0)
    /// WebSocket sessions ever opened.
    let webSocketsTotal = Atomic<UInt64>(0)
    let httpRequests = Atomic<UInt64>(0)
    let messagesReceived = Atomic<UInt64>(0)
    let messagesSent = Atomic<UInt64>(0)
    let bytesSent = Atomic<UInt64>(0)
    /// Connections that ended in a protocol failure, a socket error or a timeout.
    let connectionErrors = Atomic<UInt64>(0)
    /// Client messages that could not be parsed (bad JSON, wrong shape).
    let parseErrors = Atomic<UInt64>(0)
    let upgradesRejected = Atomic<UInt64>(0)
    let handshakeTimeouts = Atomic<UInt64>(0)
    let idleTimeouts = Atomic<UInt64>(0)
}

extension Atomic where Value == UInt64 {
    /// Single-writer increment: no read-modify-write instruction.
    @inline(__always)
    func bump(_ n: UInt64 = 1) {
        store(load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}

extension Atomic where Value == Int {
    @inline(__always)
    func bump(_ n: Int) {
        store(load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}
