// Refresh (PROTOCOL.md "Token refresh"): a new token for the same accounts.
import AccessToken
import Logging
import Reactor
import TradingStream
import WireProtocol

extension StreamEndpoint {
    // MARK: - Token refresh

    /// `{"type":"Refresh","data":{"token":"..."}}` (PROTOCOL.md "Token refresh"): a valid
    /// token for the same accounts extends the connection's life to its `exp`.
    func refresh(_ c: UnsafeMutablePointer<Connection>, _ data: JSONValue?, _ raw: UnsafeRawBufferPointer) {
        guard let current = BroadcastPath.grant(of: c) else {
            return sendError(c, code: "INVALID_MESSAGE", message: "this connection has no token to refresh; connect with one", details: nil)
        }
        guard let data, data.kind == .object, let t = JSONScanner.member("token", of: data, in: raw), let token = JSONScanner.string(t, in: raw) else {
            return sendError(c, code: "INVALID_MESSAGE", message: "Refresh needs 'data' with a string 'token'", details: nil)
        }
        switch worker.authenticator.verify(token) {
        case .failure(let f):
            stats.tokenRefreshesRefused.bump()
            sendError(c, code: "TOKEN_INVALID", message: "refresh refused: \(f.message); the current token stays in force until it expires",
                      details: "{\"reason\":\"\(f.code)\"}")
        case .success(var fresh):
            guard Set(fresh.accounts) == Set(current.accounts) else {
                stats.tokenRefreshesRefused.bump()
                return sendError(c, code: "FORBIDDEN", message: "a refresh token must name the same accounts as the connection's; reconnect to change accounts",
                                 details: nil)
            }
            stats.tokenRefreshes.bump()
            // The grant's accounts stay (the index lists are theirs); permissions and expiry are the new token's.
            fresh.accounts = current.accounts
            BroadcastPath.extras(c)?.grant = fresh
            c.pointee.bandwidthCap = AccessGrant.bandwidthCap(server: config.maxBandwidthBytesPerSecond, grant: fresh)
            c.pointee.bandwidthTokens = min(c.pointee.bandwidthTokens, c.pointee.bandwidthCap == 0 ? Int.max : c.pointee.bandwidthCap)
            // Entries for the old `exp` go stale by themselves.
            if let exp = fresh.expiresAt { worker.tokens.track(c, expiresAt: exp) }
            var body = EnvelopeWriter(capacity: 48)
            body.appendRaw("{\"expires_at\":\(fresh.expiresAt.map(String.init) ?? "null")}")
            sendMessage(c, type: "TokenRefreshed", data: body.bytes, message: nil)
            // A token that grants less narrows the subscription now, not at the next Subscribe.
            let before = path.currentSubscription(c)
            var narrowed = before
            narrowed.channelMask &= fresh.channelMask
            if let allowed = fresh.symbols {
                let keep = narrowed.symbols.isEmpty ? allowed : narrowed.symbols.filter { allowed.contains($0) }
                let mask = narrowed.channelMask
                let frequency = narrowed.maxFrequency
                narrowed = Subscription(channels: narrowed.channels, symbols: keep)
                narrowed.channelMask = keep.isEmpty ? 0 : mask
                narrowed.maxFrequency = frequency
            }
            if narrowed != before {
                path.joinIndex(c, narrowed)
                sendConfirmation(c, resumed: nil, seq: path.placeControl(c))
            }
        }
    }
}
