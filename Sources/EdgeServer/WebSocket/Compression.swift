import Glibc
import Reactor
import TradingStream
import WireProtocol

/// permessage-deflate on a reactor (RFC 7692; PROTOCOL.md "Compression"). Every connection
/// negotiates no context takeover both ways, so one inflater and one deflater per window size
/// serve them all, and a broadcast frame is compressed once, by the first reactor that sends
/// it to a compressing subscriber, its bytes then shared like the plain ones.
final class Compression {
    private unowned(unsafe) let worker: Worker
    private let config: ServerConfiguration
    /// For every inbound compressed message on this reactor.
    let inflater = MessageInflater()
    /// Index: the negotiated server window bits (8: run-length only). Made on first use.
    private var deflaters = [MessageDeflater?](repeating: nil, count: 16)
    private var scratch: UnsafeMutableRawPointer
    private var scratchCapacity = 16 << 10

    init(worker: Worker) {
        self.worker = worker
        config = worker.config
        scratch = .allocate(byteCount: scratchCapacity, alignment: 16)
    }

    deinit { scratch.deallocate() }

    private func deflater(window: UInt8) -> MessageDeflater {
        if let d = deflaters[Int(window)] { return d }
        let d = MessageDeflater(windowBits: max(Int(window), 9), runLengthOnly: window < 9, level: Int32(config.compressionLevel))
        deflaters[Int(window)] = d
        return d
    }

    /// Compresses one message for a connection with server window `window` into this
    /// reactor's scratch; nil when it is under the minimum size or would not shrink (a minimum
    /// of 0 compresses everything, which conformance runs use).
    func compress(_ payload: UnsafeRawBufferPointer, window: UInt8) -> UnsafeRawBufferPointer? {
        guard payload.count >= config.compressionMinBytes else { return nil }
        let d = deflater(window: window)
        let need = d.maxCompressedSize(payload.count)
        if need > scratchCapacity {
            scratch.deallocate()
            scratchCapacity = need
            scratch = .allocate(byteCount: need, alignment: 16)
        }
        guard let n = d.compress(payload, into: scratch, capacity: scratchCapacity),
              n < payload.count || config.compressionMinBytes == 0 else { return nil }
        return UnsafeRawBufferPointer(start: scratch, count: n)
    }

    /// The bytes a compressing subscriber is sent for a log entry: the frame's deflated form
    /// when it has one (made here on first need), else the plain frame.
    @inline(__always)
    func wire(_ e: UnsafeMutablePointer<LogEntry>) -> (UnsafeMutableRawPointer, UInt32) {
        if e.pointee.zstate == 2 { return (e.pointee.zbytes!, e.pointee.zcount) }
        if e.pointee.zstate == 0 { resolve(e) }
        return e.pointee.zstate == 2 ? (e.pointee.zbytes!, e.pointee.zcount) : (e.pointee.bytes, e.pointee.count)
    }

    private func resolve(_ e: UnsafeMutablePointer<LogEntry>) {
        let frame = e.pointee.frame.takeUnretainedValue()
        let compressed = frame.compressedFrame { json in
            guard json.count >= config.compressionMinBytes else { return nil }
            let d = deflater(window: 15)
            let bound = d.maxCompressedSize(json.count)
            let block = malloc(8 + 10 + bound)!
            // The payload goes after room for the longest header, then moves up to its header.
            guard let n = d.compress(json, into: block + 18, capacity: bound), n + 4 < json.count else {
                free(block)
                return nil
            }
            let header = FrameEncoder.headerSize(payloadLength: n, masked: false)
            memmove(block + 8 + header, block + 18, n)   // overlapping: header <= 10
            FrameEncoder.writeHeader(into: block + 8, opcode: .text, payloadLength: n, compressed: true)
            block.storeBytes(of: header + n, as: Int.self)
            worker.stats.framesCompressed.bump()   // here, not per reactor that uses it
            return block
        }
        if let compressed {
            e.pointee.zbytes = UnsafeMutableRawPointer(mutating: compressed.baseAddress!)
            e.pointee.zcount = UInt32(compressed.count)
            e.pointee.zstate = 2
        } else {
            e.pointee.zstate = 1
        }
    }
}
