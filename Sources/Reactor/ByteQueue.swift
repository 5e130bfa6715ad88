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

/// Per-reactor free lists of blocks in two sizes, so steady traffic (echo replies, HTTP
/// responses, partial frames) allocates nothing. Small blocks (512 bytes) hold what most
/// connections queue for themselves (a 101 and a greeting, a pong, an error): a storm of
/// new connections, or of closing ones, then costs a small block each while it lasts, not
/// a page. A queue that outgrows its block moves to a standard one (4 KiB), then to an
/// exact-size block; exact sizes are freed on return. Each list keeps at most `maxFree`
/// blocks, and `trim` gives the rest back when the server is idle.
public final class BufferPool {
    public let blockSize: Int
    public let maxFree: Int
    /// The small size class; `blockSize` is the standard one.
    public static let smallBlockSize = 512
    @usableFromInline var free: [UnsafeMutableRawPointer] = []
    @usableFromInline var freeSmall: [UnsafeMutableRawPointer] = []
    /// Bytes currently handed out (metrics).
    public private(set) var bytesOutstanding = 0

    public init(blockSize: Int = 4096, maxFree: Int = 1024) {
        precondition(blockSize > Self.smallBlockSize)
        self.blockSize = blockSize
        self.maxFree = maxFree
        free.reserveCapacity(maxFree)
        freeSmall.reserveCapacity(maxFree)
    }

    deinit {
        for b in free { Glibc.free(b) }
        for b in freeSmall { Glibc.free(b) }
    }

    @usableFromInline
    func take(minimumCapacity: Int) -> UnsafeMutableRawPointer {
        let block: UnsafeMutableRawPointer
        let size: Int
        if minimumCapacity + ByteQueue.headerSize <= Self.smallBlockSize {
            size = Self.smallBlockSize
            block = freeSmall.popLast() ?? malloc(size)!
        } else if minimumCapacity + ByteQueue.headerSize <= blockSize {
            size = blockSize
            block = free.popLast() ?? malloc(size)!
        } else {
            size = Self.roundUp(minimumCapacity) + ByteQueue.headerSize
            block = malloc(size)!
        }
        block.storeBytes(of: UInt32(size - ByteQueue.headerSize), as: UInt32.self)
        block.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        block.storeBytes(of: UInt32(0), toByteOffset: 8, as: UInt32.self)
        bytesOutstanding += size
        return block
    }

    @usableFromInline
    func grow(_ block: UnsafeMutableRawPointer, minimumCapacity: Int) -> UnsafeMutableRawPointer {
        let old = Int(block.load(as: UInt32.self))
        let oldSize = old + ByteQueue.headerSize
        if oldSize == Self.smallBlockSize || oldSize == blockSize {
            // Pooled sizes are never realloc'd, so the lists only ever hold their own size.
            let grown = take(minimumCapacity: max(minimumCapacity, old * 2))
            let used = Int(block.load(fromByteOffset: 8, as: UInt32.self))
            grown.storeBytes(of: block.load(fromByteOffset: 4, as: UInt32.self), toByteOffset: 4, as: UInt32.self)
            grown.storeBytes(of: UInt32(used), toByteOffset: 8, as: UInt32.self)
            (grown + ByteQueue.headerSize).copyMemory(from: block + ByteQueue.headerSize, byteCount: used)
            give(block)
            return grown
        }
        let capacity = Self.roundUp(max(minimumCapacity, old * 2))
        precondition(capacity <= Int(UInt32.max) - ByteQueue.headerSize, "buffer over 4 GiB")
        let grown = realloc(block, capacity + ByteQueue.headerSize)!
        bytesOutstanding += capacity - old
        grown.storeBytes(of: UInt32(capacity), as: UInt32.self)
        return grown
    }

    @usableFromInline
    func give(_ block: UnsafeMutableRawPointer) {
        let size = Int(block.load(as: UInt32.self)) + ByteQueue.headerSize
        bytesOutstanding -= size
        if size == Self.smallBlockSize {
            if freeSmall.count < maxFree { freeSmall.append(block) } else { Glibc.free(block) }
        } else if size == blockSize {
            if free.count < maxFree { free.append(block) } else { Glibc.free(block) }
        } else {
            Glibc.free(block)
        }
    }

    /// Spare blocks held for reuse (both sizes).
    public var cachedBlocks: Int { free.count + freeSmall.count }

    /// Bytes held in spare blocks.
    public var cachedBytes: Int { free.count * blockSize + freeSmall.count * Self.smallBlockSize }

    /// Trims each free list to `keep` blocks (called when the server is idle).
    public func trim(keep: Int) {
        while free.count > keep { Glibc.free(free.removeLast()) }
        while freeSmall.count > keep { Glibc.free(freeSmall.removeLast()) }
    }

    @usableFromInline
    static func roundUp(_ n: Int) -> Int { (n + 4095) & ~4095 }
}
