import Testing
@testable import WireProtocol

/// Inputs the fuzz targets of Fuzz/ found, each with the property it broke. The inputs
/// themselves are also in Fuzz/corpus/<target>/regression-*.
@Suite struct FuzzRegressionTests {
    /// http-head: garbage of at least maxHeadBytes got 431/414 in one read but 400 when it
    /// arrived in smaller reads; the verdict must not depend on the chunking.
    @Test(arguments: [1, 7, 64, 10_000])
    func garbagePastTheLimitIsAMalformedRequestLineInAnyChunking(chunk: Int) {
        let limits = HTTPLimits(maxHeadBytes: 96, maxHeaderCount: 3)
        let notAToken = "|~6%" + String(repeating: "\u{BB}", count: 60) + "\r\n"   // the fuzzer's input, shortened
        let tlsHello = "\u{16}\u{03}\u{01}" + String(repeating: "x", count: 120)
        let noVersion = "255555555+rrrr\r\n" + String(repeating: "y", count: 120)
        for garbage in [notAToken, tlsHello, noVersion] {
            let whole = Array(garbage.utf8).withUnsafeBytes { HTTPHeadParser.parse($0, limits: limits) }
            #expect(whole == .failure(.malformedRequestLine), "\(garbage.prefix(20).debugDescription)")
            #expect(parseIncrementally(garbage, chunk: chunk, limits: limits).0 == .failure(.malformedRequestLine))
        }
        // A well-formed request line still gets its own limit errors.
        let long = "GET /" + String(repeating: "a", count: 120)
        #expect(Array(long.utf8).withUnsafeBytes { HTTPHeadParser.parse($0, limits: limits) } == .failure(.requestLineTooLong))
        let big = "GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 120)
        #expect(Array(big.utf8).withUnsafeBytes { HTTPHeadParser.parse($0, limits: limits) } == .failure(.headTooLarge))
    }

    /// utf8: after a failure, feeding an empty piece returned true (accepted).
    @Test func emptyFeedAfterAFailureStaysFailed() {
        var v = UTF8Validator()
        let invalid = v.feed([0xCD, 0xCF])
        let emptyArray = v.feed([])
        let bytes: [UInt8] = [0x61]
        let emptySlice = bytes.withUnsafeBytes { v.feed(UnsafeRawBufferPointer(rebasing: $0[1...])) }
        #expect(!invalid && !emptyArray && !emptySlice)
        #expect(v.hasFailed && !v.isComplete)
    }

    /// query: "%+c" decoded to 0x0C, because UInt8(_:radix:) takes a sign.
    @Test func percentEscapesTakeExactlyTwoHexDigits() {
        #expect(QueryParameters.decode("%+c") == nil)
        #expect(QueryParameters.decode("%-0") == nil)
        #expect(QueryParameters.decode("%+") == nil)
        #expect(QueryParameters.decode("%2C") == ",")
        #expect(QueryParameters.decode("%e2%82%AC+x") == "€ x")
        let query = QueryParameters("a=%+1&b=2")
        #expect(query["a"] == "")
        #expect(query["b"] == "2")
    }

    /// deflate: a stored block that the restored 00 00 FF FF completes, inflated with the limit
    /// at exactly its length, was called invalid: the one-byte probe past the limit made no
    /// progress, and zlib reports no block boundary after such a call (TYPE becomes TYPEDO).
    @Test func limitAtTheEndOfAStoredBlock() {
        let inflater = MessageInflater(initialCapacity: 256, retainedCapacity: 4096)
        let storedFive: [UInt8] = [0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48]   // "H", the tail gives the other 4
        #expect(inflateOutcome(storedFive, limit: 73728, with: inflater) == "message 5")
        #expect(inflateOutcome(storedFive, limit: 5, with: inflater) == "message 5")
        #expect(inflateOutcome(storedFive, limit: 4, with: inflater) == "tooLarge")
        // Same with a compressed block ending exactly at the limit.
        let hello: [UInt8] = [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]
        #expect(inflateOutcome(hello, limit: 5, with: inflater) == "message 5")
    }
}
