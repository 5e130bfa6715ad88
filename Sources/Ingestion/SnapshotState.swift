import TradingStream

/// The latest state a dashboard needs to draw itself without history (GET /api/snapshot):
/// kept as the exact JSON of the messages that carried it, so a snapshot is assembled by
/// concatenation and a client applies its entries exactly like live messages.
struct SnapshotState {
    /// How many trades and signals the snapshot carries (the spec's recentTrades cap).
    static let recentLimit = 20

    private(set) var market: [String: [UInt8]] = [:]
    private(set) var charts: [String: [String: [UInt8]]] = [:]
    private(set) var positions: [String: [UInt8]] = [:]
    private(set) var botStatus: [UInt8]?
    private(set) var recentTrades: [[UInt8]] = []    // newest first
    private(set) var aiSignals: [[UInt8]] = []       // newest first

    /// Records a published message. `fields` are the data fields that key it.
    mutating func record(_ channel: Channel, message: [UInt8], symbol: String?, timeframe: String?, side: String?, closed: Bool) {
        switch channel {
        case .marketData:
            if let symbol { market[symbol] = message }
        case .chartUpdate:
            if let symbol { charts[symbol, default: [:]][timeframe ?? "-"] = message }
        case .positionUpdate:
            guard let symbol else { return }
            let key = symbol + "|" + (side ?? "")
            if closed { positions[key] = nil } else { positions[key] = message }
        case .tradeExecuted:
            recentTrades.insert(message, at: 0)
            if recentTrades.count > Self.recentLimit { recentTrades.removeLast() }
        case .aiSignalReceived:
            aiSignals.insert(message, at: 0)
            if aiSignals.count > Self.recentLimit { aiSignals.removeLast() }
        case .botStatusUpdate:
            botStatus = message
        case .error:
            break
        }
    }

    func json(epoch: String, seq: UInt64, timestamp: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4096)
        func add(_ s: String) { out.append(contentsOf: s.utf8) }
        func list(_ items: [[UInt8]]) {
            add("[")
            for (i, item) in items.enumerated() {
                if i > 0 { add(",") }
                out.append(contentsOf: item)
            }
            add("]")
        }
        add("{\"epoch\":\"\(epoch)\",\"seq\":\(seq),\"market\":{")
        for (i, symbol) in market.keys.sorted().enumerated() {
            if i > 0 { add(",") }
            add("\(JSONText.quoted(symbol)):")
            out.append(contentsOf: market[symbol]!)
        }
        add("},\"charts\":{")
        for (i, symbol) in charts.keys.sorted().enumerated() {
            if i > 0 { add(",") }
            add("\(JSONText.quoted(symbol)):{")
            let frames = charts[symbol]!
            for (j, tf) in frames.keys.sorted().enumerated() {
                if j > 0 { add(",") }
                add("\(JSONText.quoted(tf)):")
                out.append(contentsOf: frames[tf]!)
            }
            add("}")
        }
        add("},\"positions\":")
        list(positions.keys.sorted().map { positions[$0]! })
        add(",\"bot_status\":")
        if let botStatus { out.append(contentsOf: botStatus) } else { add("null") }
        add(",\"recent_trades\":")
        list(recentTrades)
        add(",\"ai_signals\":")
        list(aiSignals)
        add(",\"timestamp\":\"\(timestamp)\"}")
        return out
    }
}

/// JSON string quoting for the few strings ingestion writes itself.
enum JSONText {
    static func quoted(_ s: String) -> String {
        var w = EnvelopeWriter(capacity: s.utf8.count + 2)
        w.appendQuoted(s)
        return String(decoding: w.bytes, as: UTF8.self)
    }
}
