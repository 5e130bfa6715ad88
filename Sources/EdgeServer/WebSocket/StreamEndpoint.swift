import Reactor
import WireProtocol

extension Worker {
    /// A `/ws` session just opened: greet it with the spec's `Connected` message.
    func webSocketOpened(_ c: UnsafeMutablePointer<Connection>) {
        guard c.pointee.endpoint == .stream else { return }
        var json = Array("{\"type\":\"Connected\",\"message\":\"WebSocket connection established\",\"timestamp\":\"".utf8)
        json += Array(repeating: 0, count: Timestamp.length)
        json.withUnsafeMutableBytes { raw in
            Timestamp.write(millisecondsSinceEpoch: nowWall, into: raw.baseAddress! + raw.count - Timestamp.length)
        }
        json += Array("\"}".utf8)
        json.withUnsafeBytes { enqueueFrame(c, .text, $0) }
    }

    /// A message from a `/ws` client.
    func onClientMessage(_ c: UnsafeMutablePointer<Connection>, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
    }
}
