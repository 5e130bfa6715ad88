// Per-connection messages (confirmations, errors) and the rate-limited invalid-message log.
import AccessToken
import Logging
import Reactor
import TradingStream
import WireProtocol

extension StreamEndpoint {
    // MARK: - Sending

    /// Sends a per-connection message; `seq` overrides the stamp (greeting and resume).
    func sendMessage(_ c: UnsafeMutablePointer<Connection>, type: String, data: [UInt8]?, message: String?, seq: UInt64? = nil) {
        let stamp = seq ?? path.placeControl(c)
        envelope.begin(type: type, seq: stamp)
        if let data { envelope.data(data) }
        if let message { envelope.message(message) }
        envelope.end(timestampMilliseconds: worker.clock.wall)
        envelope.bytes.withUnsafeBytes { output.enqueueFrame(c, .text, $0, placeInStream: false) }
        stats.messagesSent.bump()
    }

    func sendConfirmation(_ c: UnsafeMutablePointer<Connection>, resumed: (recovered: Bool, replayed: Int)?, seq: UInt64) {
        let subscription = path.currentSubscription(c)
        var w = EnvelopeWriter(capacity: 256)
        w.appendRaw("{\"channels\":[")
        for (i, channel) in subscription.channels.enumerated() {
            if i > 0 { w.appendRaw(",") }
            w.appendRaw("\"\(channel.typeName)\"")
        }
        w.appendRaw("],\"symbols\":[")
        for (i, symbol) in subscription.symbols.enumerated() {
            if i > 0 { w.appendRaw(",") }
            w.appendQuoted(symbol)
        }
        w.appendRaw("]")
        if subscription.maxFrequency > 0 { w.appendRaw(",\"max_frequency\":\(subscription.maxFrequency)") }
        if let resumed {
            w.appendRaw(",\"recovered\":\(resumed.recovered),\"replayed\":\(resumed.replayed),\"epoch\":\"\(path.epoch)\",\"head\":\(log.headSeq)")
        }
        w.appendRaw("}")
        sendMessage(c, type: "SubscriptionConfirmed", data: w.bytes, message: nil, seq: seq)
    }

    /// An `Error` message for this connection (FR-WEBSOCKET-006's format).
    func sendError(_ c: UnsafeMutablePointer<Connection>, code: String, message: String, details: String?) {
        var w = EnvelopeWriter(capacity: 256)
        w.appendRaw("{\"message\":")
        w.appendQuoted(message)
        w.appendRaw(",\"code\":\"\(code)\"")
        if let details { w.appendRaw(",\"details\":\(details)") }
        w.appendRaw("}")
        sendMessage(c, type: "Error", data: w.bytes, message: nil)
    }

    /// The spec's "Invalid message format" warning, rate-limited per reactor so a client
    /// cannot flood the log.
    func logInvalid(_ c: UnsafeMutablePointer<Connection>, _ payload: UnsafeRawBufferPointer, reason: String) {
        let second = worker.clock.monotonic / 1000
        if second != invalidLogSecond {
            if invalidLogSuppressed > 0 {
                logger.warning("suppressed \(invalidLogSuppressed) invalid-message warnings")
            }
            invalidLogSecond = second
            invalidLogCount = 0
            invalidLogSuppressed = 0
        }
        invalidLogCount += 1
        if invalidLogCount > 10 { invalidLogSuppressed += 1; return }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: payload.prefix(200)), as: UTF8.self)
        logger.warning("Invalid message format: \(text)", metadata: [
            "conn": "\(c.pointee.id)", "peer": "\(c.pointee.peer.description)", "reason": "\(reason)",
        ])
    }
}
