/// One Redis command as its arguments; encoded to RESP once, handed to hiredis as bytes
/// (`redisAsyncFormattedCommand`), so payloads are never turned into C strings or
/// printf-formatted.
public struct RedisCommand: Sendable, Equatable {
    public private(set) var arguments: [[UInt8]]

    public init(_ name: String, _ arguments: String...) {
        self.arguments = [Array(name.utf8)] + arguments.map { Array($0.utf8) }
    }

    public mutating func append(_ argument: String) { arguments.append(Array(argument.utf8)) }
    public mutating func append(bytes: [UInt8]) { arguments.append(bytes) }
    public mutating func append(_ number: Int) { arguments.append(Array(String(number).utf8)) }

    /// `*N\r\n` then `$len\r\nbytes\r\n` per argument (RESP multi-bulk).
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16 + arguments.reduce(0) { $0 + $1.count + 16 })
        func line(_ prefix: UInt8, _ n: Int) {
            out.append(prefix)
            out.append(contentsOf: String(n).utf8)
            out.append(13)
            out.append(10)
        }
        line(UInt8(ascii: "*"), arguments.count)
        for a in arguments {
            line(UInt8(ascii: "$"), a.count)
            out.append(contentsOf: a)
            out.append(13)
            out.append(10)
        }
        return out
    }
}

/// Why a command got no reply, or an error reply. `.linkDown` means it was never sent
/// (safe to refuse or retry); `.disconnected` and `.timeout` mean it was sent and its
/// outcome is unknown (a publish may have been applied).
public enum RedisFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case linkDown(String)
    case disconnected(String)
    case timeout
    /// An error reply from Redis (`ERR ...`, `NOSCRIPT ...`, `WRONGTYPE ...`).
    case server(String)
    /// A reply of a shape the caller did not expect.
    case unexpectedReply(String)

    public var description: String {
        switch self {
        case .linkDown(let why): "redis link down: \(why)"
        case .disconnected(let why): "redis connection lost before the reply: \(why)"
        case .timeout: "redis reply timed out"
        case .server(let message): "redis error: \(message)"
        case .unexpectedReply(let what): "unexpected redis reply: \(what)"
        }
    }
}

/// Reconnect delays: exponential from `initial` to `maximum`, with "equal jitter" (half
/// the delay fixed, half random) so that nodes restarted together do not reconnect in step,
/// yet none retries at once.
public struct ReconnectBackoff: Sendable {
    public let initial: Double
    public let maximum: Double
    public private(set) var attempt = 0

    public init(initial: Double, maximum: Double) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    /// `random` in 0...1.
    public mutating func nextDelay(random: Double) -> Double {
        let cap = min(maximum, initial * Double(1 << min(attempt, 30)))
        attempt += 1
        return cap / 2 + cap / 2 * random
    }

    public mutating func reset() { attempt = 0 }
}

/// Time limits of a link. Every default has a reason; all are checked by `validate()`.
public struct RedisLinkSettings: Sendable, Equatable {
    /// TCP connect plus AUTH, SELECT and the link's preparations (script loads, SUBSCRIBE).
    /// Loopback or a LAN answers in well under a millisecond; a second means it is not there.
    public var connectTimeout: Double = 1.0
    /// The oldest unanswered command may wait this long. Replies come in order, so one
    /// stuck reply means all later ones are stuck (a stopped or partitioned Redis): the link
    /// is dropped and reconnected rather than left to fill up.
    public var commandTimeout: Double = 1.0
    /// First reconnect delay; doubled per failed attempt up to `reconnectMaxDelay`.
    public var reconnectInitialDelay: Double = 0.05
    /// Caps the delay so a Redis back after an outage is found within a few seconds.
    public var reconnectMaxDelay: Double = 2.0

    public init() {}

    public func validate() throws(RedisSettingsError) {
        for (name, v) in [("connect timeout", connectTimeout), ("command timeout", commandTimeout),
                          ("reconnect delay", reconnectInitialDelay), ("reconnect max delay", reconnectMaxDelay)]
        where !(v > 0 && v <= 3600) {
            throw RedisSettingsError(message: "\(name) must be in (0, 3600] seconds, got \(v)")
        }
    }
}

public struct RedisSettingsError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
