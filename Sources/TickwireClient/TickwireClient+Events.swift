// State changes and delivering events to the sequences.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import WireProtocol

extension TickwireClient {
    // MARK: - Events

    func setState(_ next: ConnectionState) {
        guard next != state else { return }
        state = next
        emit(.state(next))
    }

    func emit(_ event: TickwireEvent) {
        hub.emit(event)
    }

    static func diagnostic(for ending: WebSocketConnection.Ending, endpoint: TickwireEndpoint) -> TickwireDiagnostic? {
        guard let error = ending.error else {
            guard let code = ending.serverCloseCode else { return nil }
            var why = "the server closed the connection (\(code))"
            switch code {
            case CloseCode.goingAway.rawValue: why += ": going away (shutdown or idle timeout)"
            case CloseCode.tryAgainLater.rawValue: why += ": this client fell too far behind (slow consumer)"
            case CloseCode.messageTooBig.rawValue: why += ": a message was too big"
            case tokenExpiredCloseCode: why += ": the token expired; getting a new token"
            default: break
            }
            return TickwireDiagnostic(.connectionLost, why + "; reconnecting", closeCode: code)
        }
        if ending.wasOpen {
            return TickwireDiagnostic(.connectionLost, "\(error); reconnecting", closeCode: ending.serverCloseCode)
        }
        if case .handshake = error { return TickwireDiagnostic(.handshakeFailed, "\(endpoint): \(error)") }
        if case .tls = error { return TickwireDiagnostic(.tlsFailed, "\(endpoint): \(error)") }
        return TickwireDiagnostic(.connectFailed, "\(endpoint): \(error)")
    }

    static func format(_ seconds: Double) -> String {
        let tenths = Int((seconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
