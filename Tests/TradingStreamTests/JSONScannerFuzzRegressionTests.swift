import Testing
@testable import TradingStream

/// Inputs the json fuzz target (Fuzz/Targets/json.swift) found, each with what it broke.
/// The inputs are also in Fuzz/corpus/json/regression-*.
@Suite struct JSONScannerFuzzRegressionTests {
    func accepts(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { (try? JSONScanner.parse($0)) != nil }
    }

    /// A multi-byte UTF-8 sequence cut by an escape was accepted: the validator's state
    /// carried over the escape, so D0 \\ 92 passed as if it were D0 92.
    @Test func utf8CutByAnEscapeIsRejected() {
        #expect(!accepts([0x22, 0x2B, 0x4C, 0xD0, 0x5C, 0x5C, 0x92, 0x22]))
        #expect(!accepts(Array("\"".utf8) + [0xE2] + Array("\\n".utf8) + [0x82, 0xAC, 0x22]))
        #expect(accepts(Array("\"€\\n€\"".utf8)))
    }

    /// A high surrogate escape followed by another kind of escape read that escape's next
    /// four bytes as hex: a trap on `"\uD83D\"F\"\"["`, and `\n` swallowed before "DE00".
    @Test func highSurrogateBeforeAnotherEscape() throws {
        for (text, decoded) in [(#""\uD83D\"F\"\"[""#, "\u{FFFD}\"F\"\"["),
                                (#""\uD83D\nDE00""#, "\u{FFFD}\nDE00"),
                                (#""\uD83D\uDE00""#, "😀")] {
            let bytes = Array(text.utf8)
            try bytes.withUnsafeBytes { raw in
                let value = try JSONScanner.parse(raw)
                #expect(JSONScanner.string(value, in: raw) == decoded, "\(text)")
            }
        }
    }

    /// integer() returned nil for Int64.min: it accumulated the magnitude as a positive Int64.
    @Test func integerCoversTheWholeInt64Range() throws {
        func integer(_ text: String) throws -> Int64? {
            try Array(text.utf8).withUnsafeBytes { raw in JSONScanner.integer(try JSONScanner.parse(raw), in: raw) }
        }
        #expect(try integer("-9223372036854775808") == Int64.min)
        #expect(try integer("9223372036854775807") == Int64.max)
        #expect(try integer("9223372036854775808") == nil)
        #expect(try integer("-9223372036854775809") == nil)
        #expect(try integer("-0") == 0)
    }
}
