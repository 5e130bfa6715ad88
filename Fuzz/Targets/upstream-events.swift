// UpstreamEventMapper (Binance combined-stream and raw events -> Tickwire data objects) and
// StreamDedupe. Input: any bytes, taken as one upstream message. Checked:
//  - mapping never traps, whatever the bytes;
//  - a MarketData or ChartUpdate outcome carries a data object that is valid JSON (what the
//    publisher forwards byte for byte), whose "symbol" is the outcome's symbol, which passes
//    isSymbol; MarketData has a numeric "price", ChartUpdate a boolean candle.is_closed and
//    the outcome's timeframe;
//  - unknown and malformed outcomes carry no data; the input is valid JSON whenever the
//    outcome is not malformed;
//  - a fresh mapper maps the same input to the same outcome and bytes (no hidden state but
//    the 24 h statistics a ticker leaves for later candles);
//  - the dedupe admits an event once: the same stream and order again is refused, a higher
//    order is admitted.
import TradingStream

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUpstreamEvents(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var mapper = UpstreamEventMapper()
    let event = mapper.map(bytes)
    var again = UpstreamEventMapper()
    let second = again.map(bytes)
    require(event.outcome == second.outcome && event.data == second.data && event.symbol == second.symbol
            && event.order == second.order && event.streamHash == second.streamHash, "mapping is not deterministic")
    let isJSON = (try? JSONScanner.parse(bytes)) != nil
    switch event.outcome {
    case .malformed:
        require(event.data.isEmpty, "malformed with data")
    case .unknown:
        require(event.data.isEmpty && isJSON, "unknown with data, or from invalid JSON")
    case .aggTrade:
        require(event.data.isEmpty && isJSON && UpstreamEventMapper.isSymbol(event.symbol), "aggTrade")
    case .marketData, .chartUpdate:
        require(isJSON && UpstreamEventMapper.isSymbol(event.symbol), "published from invalid JSON or without a symbol")
        event.data.withUnsafeBytes { out in
            guard let root = try? JSONScanner.parse(out), root.kind == .object else {
                require(false, "data is not a JSON object: \(String(decoding: event.data, as: UTF8.self))")
                return
            }
            let symbol = JSONScanner.member("symbol", of: root, in: out).flatMap { JSONScanner.string($0, in: out) }
            require(symbol == event.symbol, "data.symbol \(String(describing: symbol)) != \(event.symbol)")
            if case .chartUpdate(let timeframe) = event.outcome {
                let tf = JSONScanner.member("timeframe", of: root, in: out).flatMap { JSONScanner.string($0, in: out) }
                require(tf == timeframe, "timeframe")
                let candle = JSONScanner.member("candle", of: root, in: out)
                let closed = candle.flatMap { JSONScanner.member("is_closed", of: $0, in: out) }
                require(closed?.kind == .bool, "candle.is_closed is not a boolean")
            } else {
                let price = JSONScanner.member("price", of: root, in: out)
                require(price?.kind == .number, "price is not a number")
            }
        }
    }
    var dedupe = StreamDedupe()
    require(dedupe.admit(stream: event.streamHash, order: event.order), "first event refused")
    require(!dedupe.admit(stream: event.streamHash, order: event.order), "duplicate admitted")
    if event.order < Int64.max { require(dedupe.admit(stream: event.streamHash, order: event.order + 1), "later event refused") }
    return 0
}
