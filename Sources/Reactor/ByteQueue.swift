import Glibc

/// A FIFO of bytes in one malloc'd block whose header (capacity, read and write indices)
/// lives inside the block, so an empty queue costs its owner 8 bytes: what an idle
/// connection pays for each of its buffers. Blocks come from and go back to a `BufferPool`.
public struct ByteQueue {
    public var block: UnsafeMutableRawPointer?

    @usableFromInline static let headerSize = 16

    @inlinable public init() { block = nil }

    @inlinable var capacity: Int { Int(block!.load(as: UInt32.self)) }
    @inlinable var readIndex: Int {
        get { Int(block!.load(fromByteOffset: 4, as: UInt32.self)) }
        nonmutating set { block!.storeBytes(of: UInt32(newValue), toByteOffset: 4, as: UInt32.self) }
    }
    @inlinable var writeIndex: Int {
        get { Int(block!.load(fromByteOffset: 8, as: UInt32.self)) }
        nonmutating set { block!.storeBytes(of: UInt32(newValue), toByteOffset: 8, as: UInt32.self) }
    }

    @inlinable public var isEmpty: Bool { block == nil || readIndex == writeIndex }
    @inlinable public var count: Int { block == nil ? 0 : writeIndex - readIndex }

    /// The unread bytes.
    @inlinable
    public var readable: UnsafeMutableRawBufferPointer {
        guard let block else { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        let r = readIndex
        return UnsafeMutableRawBufferPointer(start: block + Self.headerSize + r, count: writeIndex - r)
    }

    /// Returns space for at least `n` more bytes, growing or compacting the block as needed;
    /// write into it, then `commit(n)`.
    @inlinable
    public mutating func reserve(_ n: Int, pool: BufferPool) -> UnsafeMutableRawPointer {
        if block == nil {
            block = pool.take(minimumCapacity: n)
        }
        var r = readIndex
        var w = writeIndex
        if capacity - w < n {
            if r > 0 {
                // Compact before growing: the unread part moves to the front.
                let base = block! + Self.headerSize
                if w > r { memmove(base, base + r, w - r) }
                w -= r
                r = 0
                readIndex = 0
                writeIndex = w
            }
            if capacity - w < n {
                block = pool.grow(block!, minimumCapacity: w + n)
            }
        }
        return block! + Self.headerSize + w
    }

    @inlinable
    public mutating func commit(_ n: Int) {
        writeIndex = writeIndex + n
    }

    @inlinable
    public mutating func append(_ bytes: UnsafeRawBufferPointer, pool: BufferPool) {
        guard bytes.count > 0 else { return }
        let p = reserve(bytes.count, pool: pool)
        p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        commit(bytes.count)
    }

    @inlinable
    public mutating func append(_ bytes: [UInt8], pool: BufferPool) {
        bytes.withUnsafeBytes { append($0, pool: pool) }
    }

    /// Drops `n` bytes from the front; the block goes back to the pool once empty.
    @inlinable
    public mutating func consume(_ n: Int, pool: BufferPool) {
        guard block != nil else { return }
        let r = readIndex + n
        if r >= writeIndex {
            release(pool: pool)
        } else {
            readIndex = r
        }
    }

    /// Empties the queue and returns its block.
    @inlinable
    public mutating func release(pool: BufferPool) {
        if let b = block {
            pool.give(b)
            block = nil
        }
    }
}

/// Per-reactor free list of standard-size blocks, so steady traffic (echo replies, HTTP
/// responses, partial frames) allocates nothing. Larger blocks are freed on return;
/// the list keeps at most `maxFree` blocks so an idle server gives memory back.
public final class BufferPool {
    public let blockSize: Int
    public let maxFree: Int
    @usableFromInline var free: [UnsafeMutableRawPointer] = []
    /// Bytes currently handed out (metrics).
    public private(set) var bytesOutstanding = 0

    public init(blockSize: Int = 4096, maxFree: Int = 1024) {
        self.blockSize = blockSize
        self.maxFree = maxFree
        free.reserveCapacity(maxFree)
    }

    deinit {
        for b in free { Glibc.free(b) }
    }

    @usableFromInline
    func take(minimumCapacity: Int) -> UnsafeMutableRawPointer {
        let block: UnsafeMutableRawPointer
        let capacity: Int
        if minimumCapacity + ByteQueue.headerSize <= blockSize {
            capacity = blockSize - ByteQueue.headerSize
            block = free.popLast() ?? malloc(blockSize)!
        } else {
            capacity = Self.roundUp(minimumCapacity)
            block = malloc(capacity + ByteQueue.headerSize)!
        }
        block.storeBytes(of: UInt32(capacity), as: UInt32.self)
        block.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        block.storeBytes(of: UInt32(0), toByteOffset: 8, as: UInt32.self)
        bytesOutstanding += capacity + ByteQueue.headerSize
        return block
    }

    @usableFromInline
    func grow(_ block: UnsafeMutableRawPointer, minimumCapacity: Int) -> UnsafeMutableRawPointer {
        let old = Int(block.load(as: UInt32.self))
        let capacity = Self.roundUp(max(minimumCapacity, old * 2))
        precondition(capacity <= Int(UInt32.max) - ByteQueue.headerSize, "buffer over 4 GiB")
        let grown: UnsafeMutableRawPointer
        if old + ByteQueue.headerSize == blockSize {
            // Standard blocks are not realloc'd, so the pool only ever holds standard sizes.
            grown = malloc(capacity + ByteQueue.headerSize)!
            grown.copyMemory(from: block, byteCount: old + ByteQueue.headerSize)
            giveStandard(block)
            bytesOutstanding += capacity + ByteQueue.headerSize
        } else {
            grown = realloc(block, capacity + ByteQueue.headerSize)!
            bytesOutstanding += capacity - old
        }
        grown.storeBytes(of: UInt32(capacity), as: UInt32.self)
        return grown
    }

    @usableFromInline
    func give(_ block: UnsafeMutableRawPointer) {
        let capacity = Int(block.load(as: UInt32.self))
        if capacity + ByteQueue.headerSize == blockSize {
            giveStandard(block)
        } else {
            bytesOutstanding -= capacity + ByteQueue.headerSize
            Glibc.free(block)
        }
    }

    private func giveStandard(_ block: UnsafeMutableRawPointer) {
        bytesOutstanding -= blockSize
        if free.count < maxFree { free.append(block) } else { Glibc.free(block) }
    }

    /// Spare blocks held for reuse.
    public var cachedBlocks: Int { free.count }

    /// Trims the free list (called when the server is idle).
    public func trim(keep: Int) {
        while free.count > keep { Glibc.free(free.removeLast()) }
    }

    @usableFromInline
    static func roundUp(_ n: Int) -> Int { (n + 4095) & ~4095 }
}
