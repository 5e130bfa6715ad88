import CLibEV
import CTLSShims
import Glibc
import Reactor
import WireProtocol

/// The read side of every connection: libev's io callback, one recv into the reactor's
/// shared read buffer (or into the connection's own buffer for a large request body),
/// and the bytes routed by lifecycle state to HTTP or WebSocket processing. Whatever a
/// read leaves unconsumed (a partial head or frame header) is kept per connection.
final class ConnectionIO {
    private unowned(unsafe) let worker: Worker
    private let output: OutputFlusher
    private let table: ConnectionTable
    private let pool: BufferPool
    /// One read buffer for every connection of the reactor.
    private let readBuffer: UnsafeMutableRawPointer
    private let readBufferSize: Int

    init(worker: Worker, output: OutputFlusher) {
        self.worker = worker
        self.output = output
        table = worker.table
        pool = worker.pool
        readBufferSize = worker.config.readBufferBytes
        readBuffer = .allocate(byteCount: readBufferSize, alignment: 64)
    }

    deinit { readBuffer.deallocate() }

    static let callback: tw_io_cb = { loop, watcher, revents in
        let worker = EventLoop.owner(of: loop, as: Worker.self)
        // `io` is the first field of `Connection`: the watcher's address is the connection's.
        let c = UnsafeMutableRawPointer(watcher!).assumingMemoryBound(to: Connection.self)
        worker.io.onEvent(c, revents)
    }

    private func onEvent(_ c: UnsafeMutablePointer<Connection>, _ revents: Int32) {
        // A stale event for a connection closed earlier in this pass.
        guard c.pointee.isLive else { return }
        if revents & TW_EV_WRITE != 0 {
            output.markDirty(c)
            // A TLS handshake that could not write its next flight goes on now.
            if c.pointee.flags.contains(.tlsReadWantsWrite) {
                c.pointee.flags.remove(.tlsReadWantsWrite)
                onReadable(c)
                return
            }
        }
        if revents & TW_EV_READ != 0 {
            onReadable(c)
        }
    }

    private func onReadable(_ c: UnsafeMutablePointer<Connection>) {
        if c.pointee.lifecycle.state == .draining {
            drainUntilEOF(c)
            return
        }
        if c.pointee.flags.contains(.tlsSniffing) && !worker.tls.sniff(c) { return }
        // Big leftovers (a request body on its way) are read into in place; small ones
        // (a partial header) are moved in front of the shared read buffer.
        let leftover = c.pointee.input.count
        var buffer: UnsafeMutableRawBufferPointer
        var inPlace = false
        var n: Int
        if leftover > 4096 {
            let want = max(16 << 10, min(c.pointee.bodyRemaining, 1 << 20))
            let p = c.pointee.input.reserve(want, pool: pool)
            n = receive(c, p, want)
            if n > 0 { c.pointee.input.commit(n) }
            buffer = c.pointee.input.readable
            inPlace = true
        } else {
            if leftover > 0 {
                readBuffer.copyMemory(from: c.pointee.input.readable.baseAddress!, byteCount: leftover)
                c.pointee.input.release(pool: pool)
            }
            n = receive(c, readBuffer + leftover, readBufferSize - leftover)
            buffer = UnsafeMutableRawBufferPointer(start: readBuffer, count: leftover + max(n, 0))
        }
        if n <= 0 {
            let err = errno
            // Keep the leftover (a partial request can still be answered if the peer
            // only shut down its side).
            if !inPlace && leftover > 0 {
                c.pointee.input.append(UnsafeRawBufferPointer(buffer), pool: pool)
            }
            if n == 0 {
                let t = c.pointee.lifecycle.peerClosedInput(outputPending: output.hasPendingOutput(c))
                worker.lifecycle.apply(c, t)
            } else if err != EAGAIN && err != EINTR {
                worker.lifecycle.readFailed(c, errno: err)
            }
            return
        }
        if c.pointee.lifecycle.decodesFrames {
            worker.timers.touchIdle(c)
        }
        let consumed = process(c, buffer)
        if !c.pointee.isLive { return }
        if inPlace {
            c.pointee.input.consume(consumed, pool: pool)
        } else if consumed < buffer.count {
            c.pointee.input.append(UnsafeRawBufferPointer(rebasing: buffer[consumed...]), pool: pool)
        }
        // Plaintext the buffer had no room for waits inside the TLS session, where the
        // socket's readiness cannot announce it.
        if c.pointee.tls != nil { worker.tls.readAgainIfBuffered(c) }
    }

    /// recv, through the TLS session when there is one.
    @inline(__always)
    private func receive(_ c: UnsafeMutablePointer<Connection>, _ p: UnsafeMutableRawPointer, _ size: Int) -> Int {
        guard let session = c.pointee.tls else { return recv(c.pointee.fd, p, size, 0) }
        return worker.tls.read(c, session, p, size)
    }

    /// Routes bytes by lifecycle state; returns how many were consumed.
    private func process(_ c: UnsafeMutablePointer<Connection>, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
        var position = 0
        while position < buffer.count {
            switch c.pointee.lifecycle.state {
            case .http:
                position = worker.http.process(c, buffer, from: position)
                switch c.pointee.lifecycle.state {
                case .open: continue   // an upgrade mid-buffer: the rest are frames
                case .http, .awaitingReply: return position
                default: return buffer.count   // answered with Connection: close: the rest is dropped
                }
            case .open, .closeSent:
                return worker.webSocket.process(c, buffer, from: position)
            case .awaitingReply:
                // Held until the reply is written (pipelined requests stay in order).
                return position
            case .flushing, .draining, .closed:
                // After our last response or Close, what the peer sends is dropped.
                return buffer.count
            }
        }
        return position
    }

    /// Input that waited while reading was stopped or paused (pipelined requests, or
    /// frames after a reply): processed now that the connection may take it.
    func processLeftover(_ c: UnsafeMutablePointer<Connection>) {
        guard !c.pointee.input.isEmpty, c.pointee.isLive else { return }
        let state = c.pointee.lifecycle.state
        guard state == .http || state == .open else { return }
        let leftover = c.pointee.input.readable
        let consumed = process(c, leftover)
        if c.pointee.isLive { c.pointee.input.consume(consumed, pool: pool) }
    }

    /// After our side is shut down: read and drop until the peer's EOF.
    private func drainUntilEOF(_ c: UnsafeMutablePointer<Connection>) {
        while true {
            let n = recv(c.pointee.fd, readBuffer, readBufferSize, 0)
            if n > 0 { continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
            if n < 0 {
                worker.lifecycle.readFailed(c, errno: errno)
            } else {
                worker.lifecycle.apply(c, c.pointee.lifecycle.peerClosedInput(outputPending: false))
            }
            return
        }
    }
}
