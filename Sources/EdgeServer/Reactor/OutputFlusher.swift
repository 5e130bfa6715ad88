import CLibEV
import Glibc
import Reactor
import WireProtocol

/// A connection's way out: bytes queued for it alone (responses, Close, pongs, echoes,
/// per-connection stream messages), the reactor's dirty list, flushed once per loop pass
/// ("beforesleep"), and the connection's read/write interest in libev. Stream
/// subscribers are written by `StreamFlusher`, which interleaves these bytes with the
/// shared broadcast frames.
///
/// The socket write is `send`, a function value, so tests can drive the partial-write
/// bookkeeping with a send that accepts exactly the bytes they choose.
final class OutputFlusher {
    /// Writes the iovecs to the socket; returns the bytes written, or -1 with errno set.
    /// A C function pointer: a plain value, so calling it costs no reference counting.
    typealias Send = @convention(c) (_ fd: Int32, _ iovecs: UnsafeMutablePointer<iovec>?, _ count: Int) -> Int
    static let socketSend: Send = { fd, iovecs, count in Socket.send(fd, iovecs!, count: count) }

    private unowned(unsafe) let worker: Worker
    private let table: ConnectionTable
    private let pool: BufferPool
    private let stats: WorkerStats
    private let maxOutputBytes: Int
    /// Strong: a stream subscriber's flush goes through it on every pass it is dirty.
    private let streamFlusher: StreamFlusher
    /// The socket write, for both this flusher and the stream flusher (tests replace it).
    var send: Send = OutputFlusher.socketSend {
        didSet { streamFlusher.send = send }
    }

    /// Connections with output to flush at the end of this pass.
    private var dirty: [UInt32] = []
    private let single = UnsafeMutablePointer<iovec>.allocate(capacity: 1)

    init(worker: Worker, streamFlusher: StreamFlusher) {
        self.worker = worker
        self.streamFlusher = streamFlusher
        table = worker.table
        pool = worker.pool
        stats = worker.stats
        maxOutputBytes = worker.config.maxOutputBytes
        dirty.reserveCapacity(4096)
    }

    deinit { single.deallocate() }

    // MARK: - Queueing

    @inline(__always)
    func markDirty(_ c: UnsafeMutablePointer<Connection>) {
        if !c.pointee.flags.contains(.dirty) {
            c.pointee.flags.insert(.dirty)
            dirty.append(c.pointee.slot)
        }
    }

    /// Queues bytes for this connection alone and schedules a flush.
    func enqueue(_ c: UnsafeMutablePointer<Connection>, _ bytes: UnsafeRawBufferPointer) {
        c.pointee.output.append(bytes, pool: pool)
        afterEnqueue(c)
    }

    @inline(__always)
    func afterEnqueue(_ c: UnsafeMutablePointer<Connection>) {
        markDirty(c)
        // A peer that sends faster than it reads is not read until it catches up.
        if c.pointee.output.count > maxOutputBytes && !c.pointee.flags.contains(.readPaused) {
            c.pointee.flags.insert(.readPaused)
            updateInterest(c)
        }
    }

    /// Writes one frame with `payload` into the connection's output. On `/ws` the frame
    /// takes its place in the stream first (after the broadcast frames pending now).
    func enqueueFrame(_ c: UnsafeMutablePointer<Connection>, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer, placeInStream: Bool = true) {
        if placeInStream && c.pointee.endpoint == .stream { _ = worker.broadcast.placeControl(c) }
        var payload = payload
        var compressed = false
        if c.pointee.flags.contains(.deflate) && (opcode == .text || opcode == .binary),
           let deflated = worker.compression.compress(payload, window: c.pointee.deflateWindow) {
            payload = deflated
            compressed = true
        }
        let header = FrameEncoder.headerSize(payloadLength: payload.count, masked: false)
        let p = c.pointee.output.reserve(header + payload.count, pool: pool)
        FrameEncoder.writeHeader(into: p, opcode: opcode, payloadLength: payload.count, compressed: compressed)
        if payload.count > 0 {
            (p + header).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
        }
        c.pointee.output.commit(header + payload.count)
        afterEnqueue(c)
    }

    /// Our Close: its code and a reason (§5.5.1), truncated to fit a control frame. When
    /// nothing is queued ahead of it, it is written at once from the stack: a mass
    /// disconnect (a deploy's 1001 to everyone, thousands of browsers leaving) then costs
    /// no buffer per connection. Only what the socket does not take is queued.
    func enqueueClose(_ c: UnsafeMutablePointer<Connection>, _ code: CloseCode, reason: String) {
        withUnsafeTemporaryAllocation(byteCount: FrameEncoder.maxCloseFrameSize, alignment: 8) { frame in
            let length = FrameEncoder.writeCloseFrame(into: frame.baseAddress!, code: code, reason: reason)
            var written = 0
            if c.pointee.output.isEmpty && !hasPendingOutput(c) && !c.pointee.flags.contains(.writeBlocked) {
                single.pointee = iovec(iov_base: frame.baseAddress, iov_len: length)
                written = max(0, write(c, single, 1))
                stats.bytesSent.bump(UInt64(written))
            }
            if written < length {
                if c.pointee.endpoint == .stream { _ = worker.broadcast.placeControl(c) }
                c.pointee.output.append(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(frame)[written..<length]), pool: pool)
            }
            // The end-of-pass flush reports the drained output to the lifecycle.
            afterEnqueue(c)
        }
    }

    /// Output for the peer, queued or pending from the broadcast path.
    @inline(__always)
    func hasPendingOutput(_ c: UnsafeMutablePointer<Connection>) -> Bool {
        !c.pointee.output.isEmpty || c.pointee.flags.contains(.broadcastPending) || BroadcastPath.slowQueue(c) != nil
            || (c.pointee.tls != nil && worker.tls.holdsOutput(c))
    }

    /// The socket write, through the TLS session when there is one.
    @inline(__always)
    func write(_ c: UnsafeMutablePointer<Connection>, _ iovecs: UnsafeMutablePointer<iovec>, _ count: Int) -> Int {
        if let session = c.pointee.tls { return worker.tls.write(c, session, iovecs, count) }
        return send(c.pointee.fd, iovecs, count)
    }

    // MARK: - Flushing

    /// The end of a pass: every dirty connection is written once.
    func flushDirty() {
        var i = 0
        // Flushing cannot add to `dirty`, but closing can: iterate by index.
        while i < dirty.count {
            let c = table.pointer(dirty[i])
            c.pointee.flags.remove(.dirty)
            if c.pointee.isLive { flush(c) }
            i += 1
        }
        dirty.removeAll(keepingCapacity: true)
    }

    func flush(_ c: UnsafeMutablePointer<Connection>) {
        if c.pointee.endpoint == .stream {
            guard streamFlusher.flush(c) else { return }
            if !hasPendingOutput(c) { outputDrained(c) }
            return
        }
        while !c.pointee.output.isEmpty {
            let pending = c.pointee.output.readable
            single.pointee = iovec(iov_base: pending.baseAddress, iov_len: pending.count)
            let n = write(c, single, 1)
            if n < 0 {
                let err = errno
                if err == EINTR { continue }
                if err == EAGAIN { break }
                worker.lifecycle.writeFailed(c, errno: err)
                return
            }
            stats.bytesSent.bump(UInt64(n))
            c.pointee.output.consume(n, pool: pool)
        }
        if !c.pointee.output.isEmpty || (c.pointee.tls != nil && !worker.tls.flushHeld(c)) {
            if c.pointee.isLive { setWriteWatch(c, true) }
            return
        }
        setWriteWatch(c, false)
        outputDrained(c)
    }

    /// Everything queued is out: reading resumes if it was paused for backpressure, and
    /// the lifecycle hears of it (a closing connection shuts its side down now).
    @inline(__always)
    private func outputDrained(_ c: UnsafeMutablePointer<Connection>) {
        if c.pointee.flags.contains(.readPaused) {
            c.pointee.flags.remove(.readPaused)
            updateInterest(c)
            // Requests that arrived while paused may already be complete.
            worker.io.processLeftover(c)
        }
        if c.pointee.lifecycle.state == .flushing {
            worker.lifecycle.apply(c, c.pointee.lifecycle.outputDrained())
        }
    }

    // MARK: - Interest

    func setWriteWatch(_ c: UnsafeMutablePointer<Connection>, _ on: Bool) {
        guard c.pointee.flags.contains(.writeBlocked) != on else { return }
        if on {
            c.pointee.flags.insert(.writeBlocked)
            worker.broadcast.addBlocked(c)
        } else {
            c.pointee.flags.remove(.writeBlocked)
            worker.broadcast.removeBlocked(c)
        }
        updateInterest(c)
    }

    /// Stops or resumes reading for the lifecycle (a handed-off request, the peer's EOF).
    func setInputStopped(_ c: UnsafeMutablePointer<Connection>, _ stopped: Bool) {
        guard c.pointee.flags.contains(.inputStopped) != stopped else { return }
        if stopped { c.pointee.flags.insert(.inputStopped) } else { c.pointee.flags.remove(.inputStopped) }
        updateInterest(c)
    }

    /// Reads whatever comes again (draining after our side is shut down).
    func readEverything(_ c: UnsafeMutablePointer<Connection>) {
        c.pointee.flags.remove([.inputStopped, .readPaused])
        updateInterest(c)
    }

    /// Makes the io watcher's events match the flags (libev needs it stopped to change).
    func updateInterest(_ c: UnsafeMutablePointer<Connection>) {
        // Closed earlier in this pass (a timer or retry may still name it): no watcher to set.
        guard c.pointee.isLive else { return }
        var events: Int32 = 0
        if !c.pointee.flags.contains(.readPaused) && !c.pointee.flags.contains(.inputStopped) { events |= TW_EV_READ }
        if c.pointee.flags.contains(.writeBlocked) { events |= TW_EV_WRITE }
        if tw_ev_io_events(&c.pointee.io) == events && tw_ev_is_active(&c.pointee.io) != 0 { return }
        let loop = worker.loop.raw
        ev_io_stop(loop, &c.pointee.io)
        tw_ev_io_set_events(&c.pointee.io, events)
        if events != 0 { ev_io_start(loop, &c.pointee.io) }
        // Reading resumes: plaintext held in the TLS session would not wake the watcher.
        if events & TW_EV_READ != 0 && c.pointee.tls != nil { worker.tls.readAgainIfBuffered(c) }
    }
}
