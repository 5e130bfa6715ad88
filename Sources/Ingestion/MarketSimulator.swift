import Glibc
import Reactor
import TradingStream

/// Settings of the built-in market simulator.
public struct SimulatorConfiguration: Sendable {
    public var symbols: [String] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
    /// MarketData messages per second, across symbols.
    public var ticksPerSecond: Double = 8
    /// Candle length for ChartUpdate (the spec's "1m").
    public var candleSeconds: Int = 60
    public var botStatusSeconds: Double = 5
    /// Fixed seed for reproducible runs; nil for a random one.
    public var seed: UInt64?
    /// The demo trader's account: its trades, positions and bot status are published as
    /// private messages of this account (public when the server has no authentication).
    public var account = "demo"

    public init() {}
}

/// The built-in market: a random-walk price per symbol with 24 h statistics and 1 m
/// candles, a small paper-trading bot that opens and closes positions (trades with PnL,
/// position updates as prices move), AI signals now and then, and bot status every 5 s.
/// It publishes through the same actor as external producers, so everything it emits is
/// sequenced, kept in history and visible in snapshots like real data.
public actor MarketSimulator {
    /// Runs on the edge actors' own thread, never on the cooperative pool.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        EdgeLoop.edge.asUnownedSerialExecutor()
    }

    private let publisher: StreamPublisher
    private let config: SimulatorConfiguration
    private var rng: SplitMix64
    private var markets: [SymbolState] = []
    private var positions: [String: Position] = [:]
    private var totalPnL = 0.0
    private var totalTrades = 0
    private let startedAt = monotonicMilliseconds()
    private var tickIndex = 0
    private var nextTradeDecision: Double = 4
    private var nextSignal: Double = 6
    private var nextStatus: Double = 0
    private var elapsed: Double = 0
    private var task: Task<Void, Never>?

    struct SymbolState {
        let symbol: String
        var price: Double
        var open24h: Double
        var volume24h: Double
        var high24h: Double
        var low24h: Double
        var candle: Candle
        var momentum: Double = 0
        var decimals: Int
    }

    struct Candle {
        var start: UInt64   // ms
        var open, high, low, close, volume: Double
    }

    struct Position {
        let symbol: String
        let side: String      // LONG / SHORT
        let quantity: Double
        let entryPrice: Double
        let openedAt: Double
        let holdFor: Double
        var lastUpdate: Double
    }

    public init(publisher: StreamPublisher, config: SimulatorConfiguration) {
        self.publisher = publisher
        self.config = config
        var generator = SplitMix64(seed: config.seed ?? wallClockNanoseconds())
        let now = wallClockNanoseconds() / 1_000_000
        let reference: [String: Double] = ["BTCUSDT": 67_250, "ETHUSDT": 3_480, "SOLUSDT": 152.4, "BNBUSDT": 584.2, "XRPUSDT": 0.62, "ADAUSDT": 0.45, "DOGEUSDT": 0.16]
        var markets: [SymbolState] = []
        for symbol in config.symbols {
            let base = reference[symbol] ?? Double(10 + generator.next() % 190)
            let open = base * (1 + generator.normal() * 0.02)
            let candleStart = now - now % UInt64(config.candleSeconds * 1000)
            let volume = base > 1000 ? 12_000 + Double(generator.next() % 8000) : 250_000 + Double(generator.next() % 500_000)
            markets.append(SymbolState(
                symbol: symbol, price: base, open24h: open, volume24h: volume,
                high24h: max(base, open) * 1.01, low24h: min(base, open) * 0.99,
                candle: Candle(start: candleStart, open: base, high: base, low: base, close: base, volume: 0),
                decimals: base >= 100 ? 2 : (base >= 1 ? 3 : 5)
            ))
        }
        self.markets = markets
        self.rng = generator
    }

    /// Starts publishing; runs until `stop()`.
    public func start() {
        guard task == nil, !markets.isEmpty else { return }
        let interval = 1 / max(config.ticksPerSecond, 0.1)
        task = Task { [weak self] in
            let clock = ContinuousClock()
            var next = clock.now
            while !Task.isCancelled {
                next = next.advanced(by: .seconds(interval))
                try? await clock.sleep(until: next)
                guard let self else { return }
                await self.step(dt: interval)
            }
        }
    }

    public func stop() {
        task?.cancel()
        task = nil
    }

    // MARK: - One step

    private func step(dt: Double) async {
        elapsed += dt
        let now = wallClockNanoseconds() / 1_000_000
        let i = tickIndex % markets.count
        tickIndex += 1
        // Each symbol moves every time it is ticked: dt is the time since its last tick.
        let symbolDt = dt * Double(markets.count)
        advance(&markets[i], dt: symbolDt)
        await publishMarketData(markets[i], now: now)
        await closeCandles(now: now)
        await updatePositions(now: now)
        if elapsed >= nextTradeDecision {
            nextTradeDecision = elapsed + 3 + rng.uniform() * 7
            await tradeDecision(now: now)
        }
        if elapsed >= nextSignal {
            nextSignal = elapsed + 10 + rng.uniform() * 15
            await aiSignal(now: now)
        }
        if elapsed >= nextStatus {
            nextStatus = elapsed + config.botStatusSeconds
            await botStatus()
        }
    }

    /// Geometric random walk with a little momentum and mean reversion towards the 24 h
    /// open, scaled to about 1.5% hourly volatility: lively on a dashboard, plausible.
    private func advance(_ m: inout SymbolState, dt: Double) {
        let sigma = 0.015 / (3600.0).squareRoot()
        m.momentum = m.momentum * 0.9 + rng.normal() * 0.1
        let drift = -0.02 * (m.price - m.open24h) / m.open24h * dt / 60
        let r = drift + sigma * dt.squareRoot() * (rng.normal() + 0.5 * m.momentum)
        m.price = max(m.price * (1 + r), 0.0001)
        let tradedBase = (m.price > 1000 ? 0.05 : (m.price > 10 ? 2 : 500)) * (0.5 + rng.uniform())
        m.volume24h += tradedBase
        m.high24h = max(m.high24h, m.price)
        m.low24h = min(m.low24h, m.price)
        m.candle.high = max(m.candle.high, m.price)
        m.candle.low = min(m.candle.low, m.price)
        m.candle.close = m.price
        m.candle.volume += tradedBase
    }

    private func publishMarketData(_ m: SymbolState, now: UInt64) async {
        let change = m.price - m.open24h
        let data = "{\"symbol\":\"\(m.symbol)\",\"price\":\(num(m.price, m.decimals)),\"price_change_24h\":\(num(change, m.decimals)),"
            + "\"price_change_percent_24h\":\(num(change / m.open24h * 100, 3)),\"volume_24h\":\(num(m.volume24h, 2)),"
            + "\"high_24h\":\(num(m.high24h, m.decimals)),\"low_24h\":\(num(m.low24h, m.decimals)),\"timestamp\":\(now)}"
        await publisher.publish(.marketData, data: Array(data.utf8), keys: .init(symbol: m.symbol))
    }

    private func closeCandles(now: UInt64) async {
        let length = UInt64(config.candleSeconds * 1000)
        for i in markets.indices where now >= markets[i].candle.start + length {
            let m = markets[i]
            let c = m.candle
            let change = m.price - m.open24h
            let data = "{\"symbol\":\"\(m.symbol)\",\"timeframe\":\"\(timeframeName)\",\"candle\":{\"timestamp\":\(c.start),"
                + "\"open\":\(num(c.open, m.decimals)),\"high\":\(num(c.high, m.decimals)),\"low\":\(num(c.low, m.decimals)),"
                + "\"close\":\(num(c.close, m.decimals)),\"volume\":\(num(c.volume, 3)),\"is_closed\":true},"
                + "\"latest_price\":\(num(m.price, m.decimals)),\"price_change_24h\":\(num(change, m.decimals)),"
                + "\"price_change_percent_24h\":\(num(change / m.open24h * 100, 3)),\"volume_24h\":\(num(m.volume24h, 2)),\"timestamp\":\(now)}"
            await publisher.publish(.chartUpdate, data: Array(data.utf8), keys: .init(symbol: m.symbol, timeframe: timeframeName))
            let start = now - now % length
            markets[i].candle = Candle(start: start, open: m.price, high: m.price, low: m.price, close: m.price, volume: 0)
        }
    }

    private var timeframeName: String {
        config.candleSeconds % 3600 == 0 ? "\(config.candleSeconds / 3600)h"
            : (config.candleSeconds % 60 == 0 ? "\(config.candleSeconds / 60)m" : "\(config.candleSeconds)s")
    }

    // MARK: - Paper trading

    private func tradeDecision(now: UInt64) async {
        // Close positions whose time is up or that hit take-profit / stop-loss...
        for (symbol, p) in positions {
            guard let m = markets.first(where: { $0.symbol == symbol }) else { continue }
            let move = (m.price - p.entryPrice) / p.entryPrice * (p.side == "LONG" ? 1 : -1)
            if elapsed - p.openedAt >= p.holdFor || move > 0.006 || move < -0.004 {
                await close(p, market: m, now: now)
            }
        }
        // ...and maybe open one on a symbol without a position.
        let free = markets.filter { positions[$0.symbol] == nil }
        guard !free.isEmpty, positions.count < max(1, markets.count - 1), rng.uniform() < 0.7 else { return }
        let m = free[Int(rng.next() % UInt64(free.count))]
        let side = m.momentum + rng.normal() * 0.3 >= 0 ? "LONG" : "SHORT"
        let notional = 1_000 + rng.uniform() * 4_000
        let quantity = roundQuantity(notional / m.price)
        let p = Position(symbol: m.symbol, side: side, quantity: quantity, entryPrice: m.price, openedAt: elapsed,
                         holdFor: 15 + rng.uniform() * 45, lastUpdate: elapsed)
        positions[m.symbol] = p
        totalTrades += 1
        let trade = "{\"symbol\":\"\(m.symbol)\",\"side\":\"\(side == "LONG" ? "BUY" : "SELL")\",\"quantity\":\(num(quantity, 6)),"
            + "\"price\":\(num(m.price, m.decimals)),\"timestamp\":\(now),\"trade_id\":\"T\(totalTrades)\",\"position_side\":\"\(side)\",\"action\":\"OPEN\"}"
        await publisher.publish(.tradeExecuted, data: Array(trade.utf8), keys: .init(symbol: m.symbol, side: side, account: config.account))
        await publishPosition(p, market: m, now: now, closed: false, realized: 0)
    }

    private func close(_ p: Position, market m: SymbolState, now: UInt64) async {
        positions[p.symbol] = nil
        let pnl = (m.price - p.entryPrice) * p.quantity * (p.side == "LONG" ? 1 : -1)
        totalPnL += pnl
        totalTrades += 1
        let trade = "{\"symbol\":\"\(p.symbol)\",\"side\":\"\(p.side == "LONG" ? "SELL" : "BUY")\",\"quantity\":\(num(p.quantity, 6)),"
            + "\"price\":\(num(m.price, m.decimals)),\"timestamp\":\(now),\"pnl\":\(num(pnl, 2)),\"trade_id\":\"T\(totalTrades)\","
            + "\"position_side\":\"\(p.side)\",\"action\":\"CLOSE\"}"
        await publisher.publish(.tradeExecuted, data: Array(trade.utf8), keys: .init(symbol: p.symbol, side: p.side, account: config.account))
        await publishPosition(p, market: m, now: now, closed: true, realized: pnl)
    }

    private func updatePositions(now: UInt64) async {
        for (symbol, p) in positions where elapsed - p.lastUpdate >= 1 {
            guard let m = markets.first(where: { $0.symbol == symbol }) else { continue }
            positions[symbol]?.lastUpdate = elapsed
            await publishPosition(p, market: m, now: now, closed: false, realized: 0)
        }
    }

    private func publishPosition(_ p: Position, market m: SymbolState, now: UInt64, closed: Bool, realized: Double) async {
        let unrealized = closed ? 0 : (m.price - p.entryPrice) * p.quantity * (p.side == "LONG" ? 1 : -1)
        let data = "{\"symbol\":\"\(p.symbol)\",\"side\":\"\(p.side)\",\"pnl\":\(num(closed ? realized : unrealized, 2)),"
            + "\"current_price\":\(num(m.price, m.decimals)),\"unrealized_pnl\":\(num(unrealized, 2)),\"quantity\":\(num(p.quantity, 6)),"
            + "\"entry_price\":\(num(p.entryPrice, m.decimals)),\"status\":\"\(closed ? "CLOSED" : "OPEN")\",\"timestamp\":\(now)}"
        await publisher.publish(.positionUpdate, data: Array(data.utf8), keys: .init(symbol: p.symbol, side: p.side, closed: closed, account: config.account))
    }

    private func roundQuantity(_ q: Double) -> Double {
        var scale = 1.0
        while q * scale < 100 { scale *= 10 }
        return (q * scale).rounded() / scale
    }

    // MARK: - Signals and status

    private func aiSignal(now: UInt64) async {
        let m = markets[Int(rng.next() % UInt64(markets.count))]
        let trend = (m.price - m.open24h) / m.open24h + m.momentum * 0.01
        let signal = trend > 0.002 ? "long" : (trend < -0.002 ? "short" : "neutral")
        let confidence = 0.55 + rng.uniform() * 0.4
        let models = ["LSTM", "GRU", "Transformer", "XGBoost"]
        let timeframes = ["5m", "15m", "1h", "4h"]
        let reasons: [String: [String]] = [
            "long": ["Strong bullish momentum detected", "RSI oversold recovery with rising volume", "MACD bullish crossover above signal line"],
            "short": ["Bearish divergence on RSI", "Price rejected at resistance with falling volume", "MACD bearish crossover below signal line"],
            "neutral": ["Consolidation inside Bollinger Bands", "Mixed signals across timeframes", "Low volatility, no clear direction"],
        ]
        let reason = reasons[signal]![Int(rng.next() % 3)]
        func score() -> String { num(0.3 + rng.uniform() * 0.7, 2) }
        let data = "{\"symbol\":\"\(m.symbol)\",\"signal\":\"\(signal)\",\"confidence\":\(num(confidence, 2)),\"timestamp\":\(now),"
            + "\"model_type\":\"\(models[Int(rng.next() % 4)])\",\"timeframe\":\"\(timeframes[Int(rng.next() % 4)])\","
            + "\"reasoning\":\"\(reason)\",\"strategy_scores\":{\"rsi\":\(score()),\"macd\":\(score()),\"bollinger\":\(score()),\"volume\":\(score())}}"
        await publisher.publish(.aiSignalReceived, data: Array(data.utf8), keys: .init(symbol: m.symbol))
    }

    private func botStatus() async {
        let uptime = (monotonicMilliseconds() - startedAt) / 1000
        let data = "{\"status\":\"running\",\"active_positions\":\(positions.count),\"total_pnl\":\(num(totalPnL, 2)),"
            + "\"total_trades\":\(totalTrades),\"uptime\":\(uptime)}"
        await publisher.publish(.botStatusUpdate, data: Array(data.utf8), keys: .init(account: config.account))
    }

    private func num(_ v: Double, _ places: Int) -> String { JSONNumber.format(v, places: places) }
}

/// A small, fast, seedable generator (SplitMix64), so simulator runs can be reproduced.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// Standard normal (Box-Muller).
    mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-12)
        let u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
