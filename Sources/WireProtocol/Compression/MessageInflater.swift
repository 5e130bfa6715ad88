import CZlib

/// Inflates whole permessage-deflate messages (RFC 7692 §7.2.2) with no context takeover:
/// each message is its own raw deflate stream, and the stream is reset after it, so one
/// instance serves every connection of a reactor thread and no connection holds zlib state.
///
/// The output never grows past the caller's limit: a decompression bomb costs at most `limit`
/// bytes of memory and the work to produce them, then `.tooLarge`. Not thread-safe: one per thread.
public final class MessageInflater {
    public enum Result {
        /// The inflated message, in the inflater's buffer: valid until its next `inflate`.
        case message(UnsafeRawBufferPointer)
        /// The message inflates to more than the limit (close 1009).
        case tooLarge
        /// Not a valid deflate stream, or one cut short (close 1007).
        case invalid
    }

    @usableFromInline let stream: UnsafeMutablePointer<z_stream>
    @usableFromInline var storage: UnsafeMutableRawPointer
    @usableFromInline var storageSize: Int
    /// The buffer a message starts with; a larger one left by a big message is given back at
    /// the next call, so one large message does not pin its size for the thread's life.
    public let initialCapacity: Int
    public let retainedCapacity: Int
    /// Bytes the last `inflate` produced, counting the one byte read past the limit that proves
    /// a message too large (tests and metrics).
    public private(set) var bytesInflated = 0
    /// zlib's `data_type` after the last call that consumed or produced bytes. A call without
    /// progress would hide the block boundary: zlib turns its TYPE state into TYPEDO on entry.
    @usableFromInline var progressDataType: Int32 = 0

    /// §7.2.2: the sender removed this from the end of the message; the receiver puts it back.
    @usableFromInline static let syncTail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    public init(initialCapacity: Int = 16 << 10, retainedCapacity: Int = 1 << 20) {
        self.initialCapacity = max(initialCapacity, 1)
        self.retainedCapacity = max(retainedCapacity, self.initialCapacity)
        storageSize = self.initialCapacity
        storage = .allocate(byteCount: storageSize, alignment: 16)
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // A 15-bit window reads every smaller one, so whatever client_max_window_bits a client
        // agreed to, this one inflater reads it.
        let status = tw_inflate_init2(stream, -15)
        precondition(status == Z_OK, "inflateInit2 failed: \(status)")
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
        storage.deallocate()
    }

    /// Inflates one whole message (all its frames' payloads, concatenated) of at most `limit`
    /// bytes once inflated.
    public func inflate(_ message: UnsafeRawBufferPointer, limit: Int) -> Result {
        let limit = max(limit, 0)
        if storageSize > retainedCapacity {
            storage.deallocate()
            storageSize = initialCapacity
            storage = .allocate(byteCount: storageSize, alignment: 16)
        }
        // An empty payload is not a deflate stream (the restored tail alone is a cut-off stored
        // block), but it can only mean the empty message; senders that skip compressing it exist.
        if message.count == 0 {
            bytesInflated = 0
            return .message(UnsafeRawBufferPointer(start: storage, count: 0))
        }
        defer { inflateReset(stream) }
        var produced = 0
        progressDataType = 0
        var step = run(message, isTail: false, limit: limit, produced: &produced)
        if case .consumed = step {
            step = Self.syncTail.withUnsafeBytes { run($0, isTail: true, limit: limit, produced: &produced) }
            // Whole messages end on a block boundary: the restored empty stored block. Anything
            // else was cut short (zlib's data_type has 128 when it waits for a block header).
            if case .consumed = step, progressDataType & 128 == 0 { step = .invalid }
        }
        switch step {
        case .consumed, .ended:
            bytesInflated = produced
            return .message(UnsafeRawBufferPointer(start: storage, count: produced))
        case .tooLarge:
            bytesInflated = produced + 1
            return .tooLarge
        case .invalid:
            bytesInflated = produced
            return .invalid
        }
    }

    @usableFromInline enum Step {
        /// The input is used up and nothing more is pending; the stream goes on.
        case consumed
        /// The stream ended (a final block, §7.2.3.4).
        case ended
        case tooLarge
        case invalid
    }

    /// Inflates `input` onto `storage[produced...]`, growing it up to `limit`.
    func run(_ input: UnsafeRawBufferPointer, isTail: Bool, limit: Int, produced: inout Int) -> Step {
        var probe: UInt8 = 0
        return withUnsafeMutablePointer(to: &probe) { probePointer in
            stream.pointee.next_in = input.count > 0
                ? UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: UInt8.self))
                : probePointer
            stream.pointee.avail_in = uInt(input.count)
            while true {
                var probing = false
                if produced == min(storageSize, limit) {
                    if storageSize < limit {
                        grow(to: min(limit, storageSize * 2), keeping: produced)
                    } else {
                        // At the limit: room for one byte elsewhere, to learn whether more is coming.
                        probing = true
                    }
                }
                let room = probing ? 1 : min(storageSize, limit) - produced
                stream.pointee.next_out = probing ? probePointer : (storage + produced).assumingMemoryBound(to: UInt8.self)
                stream.pointee.avail_out = uInt(room)
                let inputBefore = stream.pointee.avail_in
                let status = CZlib.inflate(stream, Z_SYNC_FLUSH)
                let wrote = room - Int(stream.pointee.avail_out)
                if wrote > 0 || stream.pointee.avail_in != inputBefore { progressDataType = stream.pointee.data_type }
                if probing {
                    if wrote > 0 { return .tooLarge }
                } else {
                    produced += wrote
                }
                switch status {
                case Z_STREAM_END:
                    // After a final block only the restored tail may follow, never more data.
                    return !isTail && stream.pointee.avail_in > 0 ? .invalid : .ended
                case Z_OK, Z_BUF_ERROR:
                    let inputLeft = stream.pointee.avail_in > 0
                    let roomLeft = stream.pointee.avail_out > 0
                    if !inputLeft && roomLeft { return .consumed }
                    // No progress with both input and room: cannot happen, but never loop on it.
                    if status == Z_BUF_ERROR && inputLeft && roomLeft { return .invalid }
                default:
                    // Z_DATA_ERROR (corrupt), Z_NEED_DICT (impossible in raw mode), Z_MEM_ERROR.
                    return .invalid
                }
            }
        }
    }

    func grow(to size: Int, keeping count: Int) {
        let bigger = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        if count > 0 { bigger.copyMemory(from: storage, byteCount: count) }
        storage.deallocate()
        storage = bigger
        storageSize = size
    }
}
