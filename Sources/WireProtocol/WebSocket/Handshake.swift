import COpenSSL

/// The server side of the opening handshake (RFC 6455 §4.2).
public enum Handshake {
    /// §1.3: the GUID appended to the client's key before hashing.
    public static let guid: [UInt8] = Array("258EAFA5-E914-47DA-95CA-C5AB0DC85B11".utf8)

    /// Why an upgrade request was refused, each with the HTTP status §4.2.1 and §4.4 call for.
    public enum Failure: Error, Equatable, Sendable {
        case notGet
        case httpVersionTooOld
        case missingHost
        case missingUpgradeToken
        case missingConnectionUpgrade
        case unsupportedVersion
        case missingKey
        case invalidKey

        public var status: HTTPStatus {
            switch self {
            case .notGet: return .methodNotAllowed
            case .unsupportedVersion: return .upgradeRequired
            default: return .badRequest
            }
        }

        public var message: String {
            switch self {
            case .notGet: return "WebSocket upgrades must use GET"
            case .httpVersionTooOld: return "WebSocket upgrades need HTTP/1.1 or later"
            case .missingHost: return "missing Host header"
            case .missingUpgradeToken: return "the Upgrade header must contain the token 'websocket'"
            case .missingConnectionUpgrade: return "the Connection header must contain the token 'upgrade'"
            case .unsupportedVersion: return "unsupported Sec-WebSocket-Version; this server speaks version 13"
            case .missingKey: return "missing Sec-WebSocket-Key header"
            case .invalidKey: return "Sec-WebSocket-Key must be 16 random bytes in base64"
            }
        }
    }

    /// Validates an upgrade request head whose bytes are in `buffer` (§4.2.1).
    public static func validate(_ head: HTTPRequestHead, in buffer: UnsafeRawBufferPointer) -> Failure? {
        if head.method != .get { return .notGet }
        if head.versionMinor < 1 { return .httpVersionTooOld }
        if head.host == nil { return .missingHost }
        if !head.upgradeWebSocket { return .missingUpgradeToken }
        if !head.connectionUpgrade { return .missingConnectionUpgrade }
        guard let version = head.webSocketVersion,
              head.webSocketVersionCount == 1,
              buffer.slice(version).elementsEqual("13".utf8)
        else { return .unsupportedVersion }
        guard let key = head.webSocketKey else { return .missingKey }
        if head.webSocketKeyCount != 1 { return .invalidKey }
        let keyBytes = UnsafeRawBufferPointer(rebasing: buffer[key])
        if Base64.decodedLength(keyBytes) != 16 { return .invalidKey }
        return nil
    }

    /// Writes the 28-byte `Sec-WebSocket-Accept` value for `key` at `out`:
    /// base64(SHA-1(key + GUID)) (§4.2.2 step 5.4).
    public static func writeAcceptValue(key: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Int {
        // Stack scratch: the handshake runs on a reactor thread and should not allocate.
        withUnsafeTemporaryAllocation(byteCount: key.count + guid.count + 20, alignment: 8) { scratch in
            let base = scratch.baseAddress!
            base.copyMemory(from: key.baseAddress!, byteCount: key.count)
            guid.withUnsafeBytes { (base + key.count).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let inputLength = key.count + guid.count
            let digest = (base + inputLength).assumingMemoryBound(to: UInt8.self)
            _ = SHA1(base.assumingMemoryBound(to: UInt8.self), inputLength, digest)
            return Base64.encode(UnsafeRawBufferPointer(start: digest, count: 20), into: out)
        }
    }

    /// The accept value as a string (tests and clients).
    public static func acceptValue(forKey key: String) -> String {
        let bytes = Array(key.utf8)
        var out = [UInt8](repeating: 0, count: 28)
        let n = bytes.withUnsafeBytes { k in out.withUnsafeMutableBytes { writeAcceptValue(key: k, into: $0.baseAddress!) } }
        return String(decoding: out[..<n], as: UTF8.self)
    }
}

extension UnsafeRawBufferPointer {
    /// The bytes in `range` as a buffer (no copy).
    @inlinable
    public func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[range])
    }
}
