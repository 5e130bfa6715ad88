// Hooks the tests use to simulate a lost network or an unknown epoch.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

extension TickwireClient {
    // MARK: - Test hooks

    /// Drops the TCP connection without a closing handshake, as a lost network would.
    func dropConnectionForTesting() {
        connection?.abort()
    }

    /// Replaces the resume point (e.g. with an epoch the server does not know).
    func setResumePointForTesting(epoch: String, seq: UInt64) {
        sync.setResumePointForTesting(epoch: epoch, seq: seq)
    }
}
