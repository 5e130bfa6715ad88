// Client pings and replacing a link silent for the stale timeout.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

extension TickwireClient {
    // MARK: - Heartbeat

    private var heartbeatInterval: Duration {
        configuration.heartbeatInterval ?? serverHeartbeat ?? .seconds(30)
    }

    private var staleTimeout: Duration {
        configuration.staleTimeout ?? heartbeatInterval * 2.5
    }

    /// One ticker per connection sends pings and watches for silence and deadlines.
    func startTicker(_ gen: Int) {
        tickerTask?.cancel()
        tickerTask = Task { [weak self] in
            while !Task.isCancelled {
                guard let period = await self?.tick(gen) else { return }
                try? await Task.sleep(for: period)
            }
        }
    }

    /// Returns when to tick next, or nil when the connection is gone.
    private func tick(_ gen: Int) -> Duration? {
        guard gen == generation, state == .connected, let connection else { return nil }
        let now = Posix.monotonicNanoseconds()
        let heartbeat = heartbeatInterval
        let stale = staleTimeout
        let last = connection.lastReceived.load(ordering: .relaxed)
        if now > last, now - last > Posix.nanoseconds(stale) {
            let silent = Double(now - last) / 1e9
            connectionLost(gen, TickwireDiagnostic(.stale, "nothing received for \(Self.format(silent)) s (stale timeout \(stale)); reconnecting"),
                           closeWith: CloseCode(rawValue: 4000))
            return nil
        }
        if let deadline = confirmationDeadline, now >= deadline {
            confirmationDeadline = nil
            perform(sync.confirmationTimedOut(), gen)
        }
        if now - lastPingAt >= Posix.nanoseconds(heartbeat) {
            lastPingAt = now
            try? send(type: "Ping")
        }
        let period = Swift.min(heartbeat, stale) / 5
        return Swift.min(Swift.max(period, .milliseconds(50)), .seconds(1))
    }
}
