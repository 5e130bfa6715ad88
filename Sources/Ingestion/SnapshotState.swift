import TradingStream

/// The latest state a dashboard needs to draw itself without history (GET /api/snapshot):
/// kept as the exact JSON of the messages that carried it, so a snapshot is assembled by
/// concatenation and a client applies its entries exactly like live messages.
struct SnapshotState {
    /// How many trades and signals the snapshot carries (the spec's recentTrades cap).
    static let recentLimit = 20

    /// The state one audience sees: the public one, or one account's private messages.
    struct Book {
        var market: [String: [UInt8]] = [:]
        var charts: [String: [String: [UInt8]]] = [:]
        var positions: [String: [UInt8]] = [:]
        var botStatus: (seq: UInt64, message: [UInt8])?
        var recentTrades: [(seq: UInt64, message: [UInt8])] = []    // newest first
        var aiSignals: [(seq: UInt64, message: [UInt8])] = []       // newest first
    }

    private(set) var publicBook = Book()
    /// Private messages by account (PROTOCOL.md "Private messages").
    private(set) var accounts: [String: Book] = [:]

    var market: [String: [UInt8]] { publicBook.market }
    var positions: [String: [UInt8]] { publicBook.positions }
    var recentTrades: [[UInt8]] { publicBook.recentTrades.map(\.message) }

    /// Records a published message. `fields` are the data fields that key it; `account`
    /// puts it in that account's book instead of the public one.
    mutating func record(
        _ channel: Channel, message: [UInt8], seq: UInt64 = 0, symbol: String?, timeframe: String?, side: String?, closed: Bool,
        account: String? = nil
    ) {
        if let account {
            Self.record(channel, message, seq, symbol, timeframe, side, closed, into: &accounts[account, default: Book()])
        } else {
            Self.record(channel, message, seq, symbol, timeframe, side, closed, into: &publicBook)
        }
    }

    private static func record(
        _ channel: Channel, _ message: [UInt8], _ seq: UInt64, _ symbol: String?, _ timeframe: String?, _ side: String?, _ closed: Bool,
        into book: inout Book
    ) {
        switch channel {
        case .marketData:
            if let symbol { book.market[symbol] = message }
        case .chartUpdate:
            if let symbol { book.charts[symbol, default: [:]][timeframe ?? "-"] = message }
        case .positionUpdate:
            guard let symbol else { return }
            let key = symbol + "|" + (side ?? "")
            if closed { book.positions[key] = nil } else { book.positions[key] = message }
        case .tradeExecuted:
            book.recentTrades.insert((seq, message), at: 0)
            if book.recentTrades.count > recentLimit { book.recentTrades.removeLast() }
        case .aiSignalReceived:
            book.aiSignals.insert((seq, message), at: 0)
            if book.aiSignals.count > recentLimit { book.aiSignals.removeLast() }
        case .botStatusUpdate:
            book.botStatus = (seq, message)
        case .error:
            break
        }
    }

    /// The snapshot for an audience: the public book plus the books of `accounts`
    /// (nil: every account, for a server without authentication).
    func json(epoch: String, seq: UInt64, timestamp: String, accounts wanted: [String]? = []) -> [UInt8] {
        var books = [publicBook]
        if let wanted {
            for a in wanted { if let b = accounts[a] { books.append(b) } }
        } else {
            books += accounts.keys.sorted().map { accounts[$0]! }
        }
        var market: [String: [UInt8]] = [:]
        var charts: [String: [String: [UInt8]]] = [:]
        var positions: [(String, [UInt8])] = []
        var botStatus: (seq: UInt64, message: [UInt8])?
        var trades: [(seq: UInt64, message: [UInt8])] = []
        var signals: [(seq: UInt64, message: [UInt8])] = []
        for (n, b) in books.enumerated() {
            market.merge(b.market) { a, _ in a }
            charts.merge(b.charts) { a, _ in a }
            positions += b.positions.keys.sorted().map { ("\(n)|\($0)", b.positions[$0]!) }
            if let s = b.botStatus, s.seq >= (botStatus?.seq ?? 0) { botStatus = s }
            trades += b.recentTrades
            signals += b.aiSignals
        }
        // Newest first across books, as one stream would have had them.
        trades = Array(trades.sorted { $0.seq > $1.seq }.prefix(Self.recentLimit))
        signals = Array(signals.sorted { $0.seq > $1.seq }.prefix(Self.recentLimit))

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
        list(positions.map(\.1))
        add(",\"bot_status\":")
        if let botStatus { out.append(contentsOf: botStatus.message) } else { add("null") }
        add(",\"recent_trades\":")
        list(trades.map(\.message))
        add(",\"ai_signals\":")
        list(signals.map(\.message))
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
