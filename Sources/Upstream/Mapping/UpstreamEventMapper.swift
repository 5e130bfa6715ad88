import TradingStream
import WireProtocol

/// The kinds of upstream message, as counted in `tickwire_upstream_events_total{type}`.
public enum UpstreamEventType: Int, CaseIterable, Sendable {
    case ticker = 0
    case kline
    case aggTrade
    /// A well-formed message of a type Tickwire does not map (skipped).
    case unknown
    /// Not JSON, or a known type without a field it needs (skipped, logged at warn).
    case malformed
    /// An event already delivered: the same stream's event time (or trade id) seen before,
    /// typically on the overlap of a rotation or from a redundant upstream.
    case duplicate

    public var label: String {
        switch self {
        case .ticker: return "24hrTicker"
        case .kline: return "kline"
        case .aggTrade: return "aggTrade"
        case .unknown: return "unknown"
        case .malformed: return "malformed"
        case .duplicate: return "duplicate"
        }
    }
}

/// One upstream message, mapped: what to publish (if anything) and what it says about its
/// stream, for de-duplication and staleness.
public struct MappedUpstreamEvent: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// A `MarketData` data object.
        case marketData
        /// A `ChartUpdate` data object for this candle length (`k.i`).
        case chartUpdate(timeframe: String)
        /// Market flow: counted, never published (it is not the user's trades).
        case aggTrade
        case unknown
        case malformed(reason: String)
    }

    public var outcome: Outcome
    public var type: UpstreamEventType {
        switch outcome {
        case .marketData: return .ticker
        case .chartUpdate: return .kline
        case .aggTrade: return .aggTrade
        case .unknown: return .unknown
        case .malformed: return .malformed
        }
    }
    /// The symbol (`s`), upper case as Binance sends it; empty for unknown or malformed.
    public var symbol: String = ""
    /// Hash of the stream name (`stream` of the combined wrapper, else `symbol@type`):
    /// events are de-duplicated per stream.
    public var streamHash: UInt64 = 0
    /// What orders the stream's events: the trade id `a` for aggTrade, else the event time `E`.
    public var order: Int64 = 0
    /// The data object to publish (marketData and chartUpdate only).
    public var data: [UInt8] = []

    static func malformed(_ reason: String) -> MappedUpstreamEvent { MappedUpstreamEvent(outcome: .malformed(reason: reason)) }
}

/// Maps Binance-format stream messages (combined `{"stream":..,"data":{..}}` or raw
/// events) to Tickwire's data objects (PROTOCOL.md "Upstream feed"). Pure: bytes in, an
/// outcome out, no I/O, so the fuzzer runs it as is.
///
/// Prices and quantities arrive as decimal strings ("67250.01000000"); they are copied into
/// the output as JSON numbers, digit for digit, after checking that they are JSON numbers,
/// so nothing is lost to binary floating point and nothing is parsed twice.
public struct UpstreamEventMapper: Sendable {
    /// The latest 24 h statistics per symbol (from its ticker), added to its candles as
    /// ChartUpdate's `price_change_24h`, `price_change_percent_24h` and `volume_24h`.
    private var dailyStats: [UInt64: [UInt8]] = [:]
    /// Bound on `dailyStats`: a feed naming ever new symbols must not grow it without limit.
    public static let maxSymbols = 10_000
    /// Longest symbol accepted (Binance's are under 20 characters).
    public static let maxSymbolLength = 32

    public init() {}

    public mutating func map(_ message: UnsafeRawBufferPointer) -> MappedUpstreamEvent {
        // Validation collects the top level's members in the same pass: they hold the
        // wrapper's fields (first match, as `member` would) or are the raw event's own;
        // only a wrapped event's `data` is scanned again.
        var members: [(key: JSONValue, value: JSONValue)] = []
        members.reserveCapacity(24)
        let root: JSONValue
        do {
            root = try JSONScanner.parse(message, members: &members)
        } catch {
            return .malformed("not JSON: \(error)")
        }
        guard root.kind == .object else { return .malformed("not a JSON object") }
        var stream: JSONValue?
        var wrapped: JSONValue?
        for (key, value) in members {
            if wrapped == nil, JSONScanner.stringEquals(key, "data", in: message) { wrapped = value }
            else if stream == nil, JSONScanner.stringEquals(key, "stream", in: message) { stream = value }
        }
        if let data = wrapped, let name = stream {
            guard data.kind == .object else { return .malformed("combined-stream 'data' is not an object") }
            guard name.kind == .string else { return .malformed("combined-stream 'stream' is not a string") }
            JSONScanner.members(of: data, in: message, into: &members)
        } else {
            stream = nil
        }
        var type: JSONValue?, symbol: JSONValue?, time: JSONValue?
        for (key, value) in members {
            if JSONScanner.stringEquals(key, "e", in: message) { type = value }
            else if JSONScanner.stringEquals(key, "s", in: message) { symbol = value }
            else if JSONScanner.stringEquals(key, "E", in: message) { time = value }
        }
        guard let type else { return MappedUpstreamEvent(outcome: .unknown) }
        let kind: UpstreamEventType
        if JSONScanner.stringEquals(type, "24hrTicker", in: message) { kind = .ticker }
        else if JSONScanner.stringEquals(type, "kline", in: message) { kind = .kline }
        else if JSONScanner.stringEquals(type, "aggTrade", in: message) { kind = .aggTrade }
        else { return MappedUpstreamEvent(outcome: .unknown) }

        guard let symbol, let name = JSONScanner.string(symbol, in: message), Self.isSymbol(name) else {
            return .malformed("\(kind.label) without a valid symbol 's'")
        }
        guard let time, let eventTime = JSONScanner.integer(time, in: message), eventTime >= 0 else {
            return .malformed("\(kind.label) without an integer event time 'E'")
        }
        var out = MappedUpstreamEvent(outcome: .unknown)
        out.symbol = name
        out.order = eventTime
        out.streamHash = stream.map { SymbolHash.hash(message.slice($0.range)) }
            ?? SymbolHash.hash("\(name)@\(kind.label)")
        let symbolHash = SymbolHash.hash(name)
        switch kind {
        case .ticker:
            return mapTicker(members, message, out, symbolHash: symbolHash)
        case .kline:
            return mapKline(members, message, out, symbolHash: symbolHash)
        default:
            guard let id = Self.find("a", members, message).flatMap({ JSONScanner.integer($0, in: message) }) else {
                return .malformed("aggTrade without an integer trade id 'a'")
            }
            out.order = id
            out.outcome = .aggTrade
            return out
        }
    }

    // MARK: - 24hrTicker -> MarketData

    private mutating func mapTicker(
        _ members: [(key: JSONValue, value: JSONValue)], _ b: UnsafeRawBufferPointer, _ event: MappedUpstreamEvent, symbolHash: UInt64
    ) -> MappedUpstreamEvent {
        var out = event
        guard let price = Self.decimal("c", members, b) else { return .malformed("24hrTicker without a decimal last price 'c'") }
        guard let change = Self.decimal("p", members, b) else { return .malformed("24hrTicker without a decimal price change 'p'") }
        guard let percent = Self.decimal("P", members, b) else { return .malformed("24hrTicker without a decimal change percent 'P'") }
        guard let volume = Self.decimal("v", members, b) else { return .malformed("24hrTicker without a decimal volume 'v'") }
        var data: [UInt8] = []
        data.reserveCapacity(256)
        data.append(literal: "{\"symbol\":")
        data.append(quoted: out.symbol)
        data.append(literal: ",\"price\":")
        data.append(contentsOf: b.slice(price))
        var stats: [UInt8] = []
        stats.append(literal: ",\"price_change_24h\":")
        stats.append(contentsOf: b.slice(change))
        stats.append(literal: ",\"price_change_percent_24h\":")
        stats.append(contentsOf: b.slice(percent))
        stats.append(literal: ",\"volume_24h\":")
        stats.append(contentsOf: b.slice(volume))
        data.append(contentsOf: stats)
        if let high = Self.decimal("h", members, b) {
            data.append(literal: ",\"high_24h\":")
            data.append(contentsOf: b.slice(high))
        }
        if let low = Self.decimal("l", members, b) {
            data.append(literal: ",\"low_24h\":")
            data.append(contentsOf: b.slice(low))
        }
        data.append(literal: ",\"timestamp\":")
        data.append(decimal: out.order)
        data.append(UInt8(ascii: "}"))
        if dailyStats[symbolHash] != nil || dailyStats.count < Self.maxSymbols { dailyStats[symbolHash] = stats }
        out.data = data
        out.outcome = .marketData
        return out
    }

    // MARK: - kline -> ChartUpdate

    private func mapKline(
        _ members: [(key: JSONValue, value: JSONValue)], _ b: UnsafeRawBufferPointer, _ event: MappedUpstreamEvent, symbolHash: UInt64
    ) -> MappedUpstreamEvent {
        var out = event
        guard let k = Self.find("k", members, b), k.kind == .object else { return .malformed("kline without a candle object 'k'") }
        let candle = JSONScanner.members(of: k, in: b)
        guard let start = Self.find("t", candle, b).flatMap({ JSONScanner.integer($0, in: b) }), start >= 0 else {
            return .malformed("kline without an integer start time 'k.t'")
        }
        guard let interval = Self.find("i", candle, b).flatMap({ JSONScanner.string($0, in: b) }),
              (1...8).contains(interval.utf8.count), interval.utf8.allSatisfy({ Self.isAlphanumeric($0) })
        else { return .malformed("kline without an interval 'k.i'") }
        var fields: [Range<Int>] = []
        for name: StaticString in ["o", "h", "l", "c", "v"] {
            guard let range = Self.decimal(name, candle, b) else { return .malformed("kline without a decimal 'k.\(name)'") }
            fields.append(range)
        }
        guard let closed = Self.find("x", candle, b), closed.kind == .bool else { return .malformed("kline without a boolean 'k.x'") }
        var data: [UInt8] = []
        data.reserveCapacity(320)
        data.append(literal: "{\"symbol\":")
        data.append(quoted: out.symbol)
        data.append(literal: ",\"timeframe\":")
        data.append(quoted: interval)
        data.append(literal: ",\"candle\":{\"timestamp\":")
        data.append(decimal: start)
        for (i, name) in [",\"open\":", ",\"high\":", ",\"low\":", ",\"close\":", ",\"volume\":"].enumerated() {
            data.append(contentsOf: name.utf8)
            data.append(contentsOf: b.slice(fields[i]))
        }
        data.append(literal: ",\"is_closed\":")
        data.append(contentsOf: b.slice(closed.range))
        data.append(literal: "},\"latest_price\":")
        data.append(contentsOf: b.slice(fields[3]))
        if let stats = dailyStats[symbolHash] { data.append(contentsOf: stats) }
        data.append(literal: ",\"timestamp\":")
        data.append(decimal: out.order)
        data.append(UInt8(ascii: "}"))
        out.data = data
        out.outcome = .chartUpdate(timeframe: interval)
        return out
    }

    // MARK: - Fields

    static func find(_ name: StaticString, _ members: [(key: JSONValue, value: JSONValue)], _ b: UnsafeRawBufferPointer) -> JSONValue? {
        for (key, value) in members where JSONScanner.stringEquals(key, name, in: b) { return value }
        return nil
    }

    /// The byte range of a decimal field as a JSON number: the inside of a string that is
    /// one ("0.0015"), or a JSON number itself. nil for anything else ("", "1e", "NaN").
    static func decimal(_ name: StaticString, _ members: [(key: JSONValue, value: JSONValue)], _ b: UnsafeRawBufferPointer) -> Range<Int>? {
        guard let value = find(name, members, b) else { return nil }
        if value.kind == .number { return value.range }
        guard value.kind == .string, value.range.count > 2 else { return nil }
        let inner = (value.range.lowerBound + 1)..<(value.range.upperBound - 1)
        guard let number = try? JSONScanner.parse(b.slice(inner)), number.kind == .number, number.range.count == inner.count else {
            return nil
        }
        return inner
    }

    static func isAlphanumeric(_ c: UInt8) -> Bool {
        (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c)
    }

    /// Letters and digits (and `-_.` of other venues' symbols), 1 to `maxSymbolLength` bytes:
    /// a symbol is a metrics label and a filter key, so nothing else gets through.
    public static func isSymbol(_ s: String) -> Bool {
        let utf8 = s.utf8
        return (1...maxSymbolLength).contains(utf8.count)
            && utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func append(literal s: StaticString) {
        append(contentsOf: UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// A string already checked to need no escaping (symbols, intervals).
    mutating func append(quoted s: String) {
        append(UInt8(ascii: "\""))
        append(contentsOf: s.utf8)
        append(UInt8(ascii: "\""))
    }

    mutating func append(decimal value: Int64) {
        append(contentsOf: String(value).utf8)
    }
}
