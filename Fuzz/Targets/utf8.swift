// UTF8Validator against Swift's own UTF-8 decoding. Input: byte 0 seeds the chunking,
// the rest is the text. Checked:
//  - isValid(whole) exactly when String(validating:as: UTF8.self) accepts the bytes;
//  - fed in chunks, after each chunk the validator has failed exactly when the bytes so far
//    cannot begin any valid UTF-8 (no completion of at most three bytes makes them valid),
//    isComplete exactly when the bytes so far are valid, and once failed it stays failed.
import WireProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUTF8(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let text = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    let valid = String(validating: text, as: UTF8.self) != nil
    require(UTF8Validator.isValid(text) == valid, "isValid disagrees with Swift (Swift: \(valid))")

    var chunker = Chunker(seed: UInt64(data[0]))
    var validator = UTF8Validator()
    var fed = 0
    var failed = false
    repeat {
        let n = chunker.size(remaining: text.count - fed)
        let accepted = validator.feed(UnsafeRawBufferPointer(rebasing: text[fed..<(fed + n)]))
        fed += n
        let prefix = UnsafeRawBufferPointer(rebasing: text[..<fed])
        if failed {
            require(!accepted && validator.hasFailed, "accepted bytes after failing")
            continue
        }
        let extendable = canBeginValidUTF8(prefix)
        require(accepted == extendable && validator.hasFailed == !extendable,
                "after \(fed) bytes: accepted \(accepted), but a valid completion \(extendable ? "exists" : "does not exist")")
        if accepted {
            require(validator.isComplete == (String(validating: prefix, as: UTF8.self) != nil), "isComplete after \(fed) bytes")
        }
        failed = !accepted
    } while fed < text.count
    return 0
}

/// Whether some 1-3 bytes appended to `prefix` (or none) make it valid UTF-8, by Swift's
/// decoder. Only the last code point can be unfinished: the bytes before it must be valid on
/// their own, and it plus a completion must be. Continuation bytes that open or close each
/// of table 3-7's ranges (80, 8F, 90, 9F, A0, BF) stand for every completion.
func canBeginValidUTF8(_ prefix: UnsafeRawBufferPointer) -> Bool {
    if String(validating: prefix, as: UTF8.self) != nil { return true }
    for start in max(0, prefix.count - 3)..<prefix.count
    where String(validating: prefix[..<start], as: UTF8.self) != nil {
        let unfinished = Array(prefix[start...])
        for completion in completions where String(validating: unfinished + completion, as: UTF8.self) != nil {
            return true
        }
    }
    return false
}

private let completions: [[UInt8]] = {
    let bytes: [UInt8] = [0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF]
    var all: [[UInt8]] = bytes.map { [$0] }
    var last = all
    for _ in 2...3 {
        last = last.flatMap { c in bytes.map { c + [$0] } }
        all += last
    }
    return all
}()
