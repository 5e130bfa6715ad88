/// What a connection agreed to for permessage-deflate (RFC 7692 §7). Both sides always use no
/// context takeover (our policy, see `DeflateNegotiation`), so the only thing that differs
/// between connections is the window the server may compress with.
public struct DeflateParameters: Sendable, Equatable {
    /// The client's `server_max_window_bits` (8...15), answered as it came; nil when it sent
    /// none, which means the full 15-bit window (§7.1.2.1).
    public var serverMaxWindowBits: UInt8?
    /// The `client_max_window_bits` value answered (the client's own, echoed), or nil when the
    /// response leaves it out. Our inflater always runs with a 15-bit window, which reads any
    /// smaller one, so this is only said back, never acted on.
    public var clientMaxWindowBits: UInt8?

    @inlinable
    public init(serverMaxWindowBits: UInt8? = nil, clientMaxWindowBits: UInt8? = nil) {
        self.serverMaxWindowBits = serverMaxWindowBits
        self.clientMaxWindowBits = clientMaxWindowBits
    }

    /// The largest LZ77 window the server may use towards this client (§7.1.2.1).
    @inlinable public var serverWindowBits: Int { Int(serverMaxWindowBits ?? 15) }

    /// The window bits to give zlib's raw deflate. zlib refuses a raw 8-bit window (since
    /// 1.2.9), so an 8-bit limit compresses with 9 bits under `Z_RLE`, whose matches never reach
    /// further back than one byte: inside any window, so the client's 256-byte one reads it.
    @inlinable public var deflaterWindowBits: Int { max(serverWindowBits, 9) }
    /// Whether the deflater must restrict itself to run-length matches (see `deflaterWindowBits`).
    @inlinable public var deflaterRunLengthOnly: Bool { serverWindowBits < 9 }

    /// The `Sec-WebSocket-Extensions` value of the handshake response. It always carries both
    /// no-context-takeover parameters (§7.1.1.1 and §7.1.1.2 let a server add them unasked).
    public var responseHeaderValue: String {
        var s = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        if let bits = serverMaxWindowBits { s += "; server_max_window_bits=\(bits)" }
        if let bits = clientMaxWindowBits { s += "; client_max_window_bits=\(bits)" }
        return s
    }
}

/// The server's choices in a negotiation.
public struct DeflatePolicy: Sendable, Equatable {
    /// Accept an offer limiting the server to an 8-bit window, answering it with a run-length-only
    /// deflater (see `DeflateParameters.deflaterWindowBits`); false declines such an offer.
    /// Autobahn 13.3 and 13.5 offer only that; declined, they report "unimplemented".
    public var acceptsEightBitServerWindow: Bool

    public init(acceptsEightBitServerWindow: Bool = true) {
        self.acceptsEightBitServerWindow = acceptsEightBitServerWindow
    }
}

/// The server side of the permessage-deflate negotiation (RFC 7692 §5, §7.1): reads the
/// client's offers from `Sec-WebSocket-Extensions` and picks the first acceptable one.
///
/// Grammar (RFC 6455 §9.1, RFC 7230 §7 lists): offers separated by commas (empty elements
/// skipped), each `extension-token *( ";" token [ "=" ( token / quoted-string ) ] )`, optional
/// whitespace around every separator, names case-insensitive. An offer is declined (skipped) when
/// it has an unknown parameter, a parameter twice, or an invalid value (§7); a syntax error
/// declines the offer it is in and the list resumes at the next comma outside quotes.
///
/// Our answer always sets `server_no_context_takeover` and `client_no_context_takeover`: every
/// message is then a fresh deflate stream both ways, so a reactor needs one shared deflater and
/// one shared inflater, compresses a broadcast once for all its subscribers, and holds no zlib
/// state for any connection.
public enum DeflateNegotiation {
    /// The extension's name (§7).
    public static let extensionName = "permessage-deflate"

    /// Negotiates over one header value; nil when no offer is acceptable.
    public static func negotiate(_ value: UnsafeRawBufferPointer, policy: DeflatePolicy = .init()) -> DeflateParameters? {
        var parser = OfferParser(value)
        while let offer = parser.nextOffer() {
            if let parameters = offer, accepts(parameters, policy) { return parameters }
        }
        return nil
    }

    /// Negotiates over several `Sec-WebSocket-Extensions` header lines, in the order they came
    /// (the same as one line joined with commas: RFC 7230 §3.2.2).
    public static func negotiate(_ values: [UnsafeRawBufferPointer], policy: DeflatePolicy = .init()) -> DeflateParameters? {
        for value in values {
            if let parameters = negotiate(value, policy: policy) { return parameters }
        }
        return nil
    }

    /// Negotiates over a header value given as text (tests and clients).
    public static func negotiate(_ value: String, policy: DeflatePolicy = .init()) -> DeflateParameters? {
        var text = value
        return text.withUTF8 { negotiate(UnsafeRawBufferPointer($0), policy: policy) }
    }

    static func accepts(_ parameters: DeflateParameters, _ policy: DeflatePolicy) -> Bool {
        if parameters.serverWindowBits == 8 && !policy.acceptsEightBitServerWindow { return false }
        return true
    }
}

/// Walks a `Sec-WebSocket-Extensions` value offer by offer. Byte-level and allocation-free
/// except for the rare quoted value, which is unescaped into a small stack of bytes.
struct OfferParser {
    let bytes: UnsafeRawBufferPointer
    var i = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The next offer: nil at the end of the list, `.some(nil)` for an offer that is not a valid
    /// permessage-deflate one (another extension, bad syntax, a parameter we must decline).
    mutating func nextOffer() -> DeflateParameters?? {
        skipSpaceAndEmptyElements()
        if i >= bytes.count { return nil }
        guard let name = token() else { return .some(skipToNextOffer()) }
        let isDeflate = equalsLowercase(name, "permessage-deflate")
        var parameters = DeflateParameters()
        var seen: UInt8 = 0                     // one bit per known parameter, for duplicates
        var valid = isDeflate
        while true {
            skipSpace()
            if i >= bytes.count { break }
            let c = bytes[i]
            if c == UInt8(ascii: ",") { i += 1; break }
            guard c == UInt8(ascii: ";") else { return .some(skipToNextOffer()) }
            i += 1
            skipSpace()
            guard let param = token() else { return .some(skipToNextOffer()) }
            skipSpace()
            var value: WindowBitsValue = .absent
            if i < bytes.count && bytes[i] == UInt8(ascii: "=") {
                i += 1
                skipSpace()
                guard let v = parameterValue() else { return .some(skipToNextOffer()) }
                value = v
            }
            // Other extensions' parameters are read for syntax only.
            guard valid else { continue }
            let bit: UInt8
            if equalsLowercase(param, "server_no_context_takeover") {
                bit = 1
                if value != .absent { valid = false }
            } else if equalsLowercase(param, "client_no_context_takeover") {
                bit = 2
                if value != .absent { valid = false }
            } else if equalsLowercase(param, "server_max_window_bits") {
                bit = 4
                if case .bits(let b) = value { parameters.serverMaxWindowBits = b } else { valid = false }
            } else if equalsLowercase(param, "client_max_window_bits") {
                bit = 8
                switch value {
                case .absent: break                                  // "I can take any value you pick"
                case .bits(let b): parameters.clientMaxWindowBits = b
                case .invalid: valid = false
                }
            } else {
                bit = 0
                valid = false                                        // §7: unknown parameter
            }
            if seen & bit != 0 { valid = false }                     // §7: the same parameter twice
            seen |= bit
        }
        return .some(valid ? parameters : nil)
    }

    // MARK: - Lexing

    enum WindowBitsValue: Equatable {
        case absent
        case bits(UInt8)
        /// Present, syntactically fine, but not a window size (8...15, no leading zero: §7.1.2.1).
        case invalid
    }

    /// A token or quoted-string value, read as a window size; nil on a syntax error. A quoted
    /// value must be a token once unescaped (RFC 6455 §9.1).
    mutating func parameterValue() -> WindowBitsValue? {
        if i < bytes.count && bytes[i] == UInt8(ascii: "\"") {
            i += 1
            // Window sizes are at most 2 digits; longer values are read but only counted.
            var digits: (UInt8, UInt8) = (0, 0)
            var count = 0
            var allToken = true
            while true {
                guard i < bytes.count else { return nil }            // unterminated
                var c = bytes[i]
                i += 1
                if c == UInt8(ascii: "\"") { break }
                if c == UInt8(ascii: "\\") {
                    guard i < bytes.count else { return nil }
                    c = bytes[i]
                    i += 1
                }
                if c < 0x20 && c != 0x09 || c == 0x7F { return nil } // not qdtext / quoted-pair
                if !Self.isTokenByte(c) { allToken = false }
                if count == 0 { digits.0 = c } else if count == 1 { digits.1 = c }
                count += 1
            }
            guard allToken && count > 0 else { return .invalid }
            return Self.windowBits(count, digits)
        }
        let start = i
        while i < bytes.count && Self.isTokenByte(bytes[i]) { i += 1 }
        let count = i - start
        if count == 0 { return nil }
        let d0 = bytes[start], d1 = count > 1 ? bytes[start + 1] : 0
        return Self.windowBits(count, (d0, d1))
    }

    static func windowBits(_ count: Int, _ digits: (UInt8, UInt8)) -> WindowBitsValue {
        let zero = UInt8(ascii: "0")
        if count == 1 && digits.0 >= UInt8(ascii: "8") && digits.0 <= UInt8(ascii: "9") { return .bits(digits.0 - zero) }
        if count == 2 && digits.0 == UInt8(ascii: "1") && digits.1 >= zero && digits.1 <= UInt8(ascii: "5") {
            return .bits(10 + digits.1 - zero)
        }
        return .invalid
    }

    /// A token (RFC 7230 §3.2.6) as a range of `bytes`; nil when none starts here.
    mutating func token() -> Range<Int>? {
        let start = i
        while i < bytes.count && Self.isTokenByte(bytes[i]) { i += 1 }
        return i > start ? start..<i : nil
    }

    /// After a syntax error: past the next comma outside a quoted string. Always `nil` (the
    /// offer is declined); an unterminated quote ends the list.
    mutating func skipToNextOffer() -> DeflateParameters? {
        var quoted = false
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            if quoted {
                if c == UInt8(ascii: "\\") { i += 1 } else if c == UInt8(ascii: "\"") { quoted = false }
            } else if c == UInt8(ascii: "\"") {
                quoted = true
            } else if c == UInt8(ascii: ",") {
                return nil
            }
        }
        return nil
    }

    mutating func skipSpace() {
        while i < bytes.count && (bytes[i] == 0x20 || bytes[i] == 0x09) { i += 1 }
    }

    /// RFC 7230 §7: a recipient accepts and ignores empty list elements.
    mutating func skipSpaceAndEmptyElements() {
        while i < bytes.count && (bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == UInt8(ascii: ",")) { i += 1 }
    }

    func equalsLowercase(_ range: Range<Int>, _ lowercase: StaticString) -> Bool {
        guard range.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for k in 0..<range.count {
            var c = bytes[range.lowerBound + k]
            if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c |= 0x20 }
            if c != expected[k] { return false }
        }
        return true
    }

    /// tchar (RFC 7230 §3.2.6): visible ASCII except separators.
    static func isTokenByte(_ c: UInt8) -> Bool {
        if c <= 0x20 || c >= 0x7F { return false }
        switch c {
        case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "@"),
             UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: ":"), UInt8(ascii: "\\"), UInt8(ascii: "\""),
             UInt8(ascii: "/"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "?"), UInt8(ascii: "="),
             UInt8(ascii: "{"), UInt8(ascii: "}"):
            return false
        default:
            return true
        }
    }
}
