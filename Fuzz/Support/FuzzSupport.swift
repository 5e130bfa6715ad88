// Shared by every target: a failed property stops the run with a message (libFuzzer then
// saves the input as a crash), and a seeded generator of chunk sizes for streaming parsers.

/// Stops the run when a property of the parser does not hold.
@inline(__always)
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("property violated: \(message())", file: file, line: line) }
}

/// Chunk sizes for feeding a stream in pieces, drawn from a seed that comes from the fuzz
/// input, so that the fuzzer explores splits and a failing split replays exactly.
struct Chunker {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// splitmix64.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next chunk, at most `remaining` bytes: often 1-3 bytes (splits inside a header or
    /// a code point), sometimes up to 64, sometimes the rest, now and then empty.
    mutating func size(remaining: Int) -> Int {
        guard remaining > 0 else { return 0 }
        let r = next()
        switch r & 7 {
        case 0: return 0
        case 1, 2, 3: return min(remaining, Int((r >> 8) & 3) + 1)
        case 4, 5: return min(remaining, Int((r >> 8) & 63) + 1)
        case 6: return remaining
        default: return min(remaining, Int((r >> 8) % UInt64(remaining)) + 1)
        }
    }
}

/// FNV-1a, for deriving split points from the input itself.
func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return h
}
