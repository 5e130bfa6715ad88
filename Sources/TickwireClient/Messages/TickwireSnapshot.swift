/// `GET /api/snapshot`: the latest state, each entry the complete broadcast message that
/// carried it, so it is applied with the same code as live messages (PROTOCOL.md "HTTP").
///
/// After a snapshot the client continues from `seq`: live messages at or below it are
/// already reflected here and are not delivered again.
public struct TickwireSnapshot: Sendable, Hashable, Decodable {
    /// The server run this state belongs to.
    public var epoch: String
    /// The head seq when the snapshot was taken.
    public var seq: UInt64
    /// The latest `MarketData` per symbol.
    public var market: [String: TickwireEnvelope]
    /// The latest `ChartUpdate` per symbol and timeframe.
    public var charts: [String: [String: TickwireEnvelope]]
    /// Open positions (`PositionUpdate`).
    public var positions: [TickwireEnvelope]
    /// The latest `BotStatusUpdate`.
    public var botStatus: TickwireEnvelope?
    /// `TradeExecuted`, newest first, at most 20.
    public var recentTrades: [TickwireEnvelope]
    /// `AISignalReceived`, newest first, at most 20.
    public var aiSignals: [TickwireEnvelope]
    public var timestamp: String?
    /// Entries left out because they did not decode (each also reported as a diagnostic).
    public var skippedEntries: [String] = []

    public init(epoch: String, seq: UInt64, market: [String: TickwireEnvelope] = [:], charts: [String: [String: TickwireEnvelope]] = [:],
                positions: [TickwireEnvelope] = [], botStatus: TickwireEnvelope? = nil, recentTrades: [TickwireEnvelope] = [],
                aiSignals: [TickwireEnvelope] = [], timestamp: String? = nil) {
        self.epoch = epoch
        self.seq = seq
        self.market = market
        self.charts = charts
        self.positions = positions
        self.botStatus = botStatus
        self.recentTrades = recentTrades
        self.aiSignals = aiSignals
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey {
        case epoch, seq, market, charts, positions, timestamp
        case botStatus = "bot_status"
        case recentTrades = "recent_trades"
        case aiSignals = "ai_signals"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epoch = try c.decode(String.self, forKey: .epoch)
        seq = try c.decode(UInt64.self, forKey: .seq)
        timestamp = try c.decodeIfPresent(String.self, forKey: .timestamp)
        var skipped: [String] = []
        func keep(_ entry: Lenient, _ place: String) -> TickwireEnvelope? {
            switch entry {
            case .decoded(let envelope): return envelope
            case .failed(let why): skipped.append("\(place): \(why)"); return nil
            case .null: return nil
            }
        }
        market = [:]
        for (symbol, entry) in try c.decodeIfPresent([String: Lenient].self, forKey: .market) ?? [:] {
            market[symbol] = keep(entry, "market.\(symbol)")
        }
        charts = [:]
        for (symbol, frames) in try c.decodeIfPresent([String: [String: Lenient]].self, forKey: .charts) ?? [:] {
            var kept: [String: TickwireEnvelope] = [:]
            for (timeframe, entry) in frames { kept[timeframe] = keep(entry, "charts.\(symbol).\(timeframe)") }
            if !kept.isEmpty { charts[symbol] = kept }
        }
        positions = (try c.decodeIfPresent([Lenient].self, forKey: .positions) ?? []).enumerated().compactMap { keep($1, "positions[\($0)]") }
        botStatus = try c.decodeIfPresent(Lenient.self, forKey: .botStatus).flatMap { keep($0, "bot_status") }
        recentTrades = (try c.decodeIfPresent([Lenient].self, forKey: .recentTrades) ?? []).enumerated().compactMap { keep($1, "recent_trades[\($0)]") }
        aiSignals = (try c.decodeIfPresent([Lenient].self, forKey: .aiSignals) ?? []).enumerated().compactMap { keep($1, "ai_signals[\($0)]") }
        skippedEntries = skipped
    }

    /// Every entry, in seq order (convenient for applying the snapshot like a replay).
    public var allEntries: [TickwireEnvelope] {
        var all = Array(market.values) + charts.values.flatMap(\.values) + positions + recentTrades + aiSignals
        if let botStatus { all.append(botStatus) }
        return all.sorted { ($0.seq ?? 0) < ($1.seq ?? 0) }
    }

    /// Only what `subscription` would deliver (the server's snapshot is not filtered).
    public func filtered(by subscription: TickwireSubscription) -> TickwireSnapshot {
        if subscription.isEverything { return self }
        func passes(_ e: TickwireEnvelope) -> Bool {
            guard let channel = e.payload.channel else { return true }
            return subscription.includes(channel, symbol: e.payload.symbol)
        }
        var copy = self
        copy.market = market.filter { passes($0.value) }
        copy.charts = charts.compactMapValues { frames in
            let kept = frames.filter { passes($0.value) }
            return kept.isEmpty ? nil : kept
        }
        copy.positions = positions.filter(passes)
        copy.botStatus = botStatus.flatMap { passes($0) ? $0 : nil }
        copy.recentTrades = recentTrades.filter(passes)
        copy.aiSignals = aiSignals.filter(passes)
        return copy
    }

    /// One snapshot entry: decoded, undecodable (skipped, not fatal), or JSON null.
    private enum Lenient: Decodable {
        case decoded(TickwireEnvelope)
        case failed(String)
        case null

        init(from decoder: any Decoder) throws {
            if (try? decoder.singleValueContainer().decodeNil()) == true {
                self = .null
                return
            }
            do {
                self = .decoded(try TickwireEnvelope(from: decoder))
            } catch {
                self = .failed(DecodingProblem.describe(error))
            }
        }
    }
}
