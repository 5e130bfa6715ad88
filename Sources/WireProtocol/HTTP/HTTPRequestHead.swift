/// Request methods Tickwire routes on; anything else is `.other` (and gets 405 or 501).
public enum HTTPMethod: Sendable, Equatable {
    case get, head, post, put, delete, options, patch, other
}

/// A parsed request head. Every text field is a byte range into the buffer that was parsed,
/// so parsing allocates nothing; the caller keeps that buffer alive while it reads them.
/// Only the headers Tickwire acts on are kept; the rest are checked for syntax and counted.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: HTTPMethod = .other
    public var methodRange: Range<Int> = 0..<0
    public var target: Range<Int> = 0..<0
    public var path: Range<Int> = 0..<0
    public var query: Range<Int>?
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    public var versionMinor: UInt8 = 1
    /// Bytes of the head including the blank line: the body (if any) starts here.
    public var headLength: Int = 0
    public var headerCount: Int = 0

    public var host: Range<Int>?
    public var origin: Range<Int>?
    public var authorization: Range<Int>?
    public var contentType: Range<Int>?
    public var webSocketKey: Range<Int>?
    public var webSocketKeyCount = 0
    public var webSocketVersion: Range<Int>?
    public var webSocketVersionCount = 0
    public var webSocketProtocol: Range<Int>?
    public var webSocketExtensions: Range<Int>?
    public var forwardedFor: Range<Int>?
    public var ifNoneMatch: Range<Int>?

    /// `Upgrade` lists the token `websocket`.
    public var upgradeWebSocket = false
    /// `Connection` lists the token `upgrade`.
    public var connectionUpgrade = false
    public var connectionClose = false
    public var connectionKeepAlive = false
    public var contentLength: Int?
    public var chunked = false
    public var expectContinue = false

    public init() {}

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    public var keepAlive: Bool {
        if connectionClose { return false }
        return versionMinor >= 1 || connectionKeepAlive
    }
}

/// Why a request head was rejected, each with the status to answer.
public enum HTTPParseError: Error, Equatable, Sendable {
    case malformedRequestLine
    case requestLineTooLong
    case unsupportedVersion
    case malformedHeader
    case headTooLarge
    case tooManyHeaders
    case invalidContentLength
    case conflictingContentLength
    case unsupportedTransferEncoding

    public var status: HTTPStatus {
        switch self {
        case .requestLineTooLong: return .uriTooLong
        case .unsupportedVersion: return .httpVersionNotSupported
        case .headTooLarge, .tooManyHeaders: return .headerFieldsTooLarge
        case .unsupportedTransferEncoding: return .notImplemented
        default: return .badRequest
        }
    }

    public var message: String {
        switch self {
        case .malformedRequestLine: return "malformed request line"
        case .requestLineTooLong: return "request line too long"
        case .unsupportedVersion: return "only HTTP/1.0 and HTTP/1.1 are supported"
        case .malformedHeader: return "malformed header field"
        case .headTooLarge: return "request head too large"
        case .tooManyHeaders: return "too many header fields"
        case .invalidContentLength: return "invalid Content-Length"
        case .conflictingContentLength: return "conflicting Content-Length or Transfer-Encoding headers"
        case .unsupportedTransferEncoding: return "unsupported Transfer-Encoding"
        }
    }
}

/// Limits on a request head. Both bound the work and memory one connection can cost
/// before it has proved to be a real client.
public struct HTTPLimits: Sendable, Equatable {
    /// Bytes of request line plus headers. 8 KiB matches nginx's default large buffer and
    /// fits every browser's upgrade request (cookies included) many times over.
    public var maxHeadBytes: Int
    /// Header fields. Browsers send about 15 on an upgrade.
    public var maxHeaderCount: Int

    public init(maxHeadBytes: Int = 8192, maxHeaderCount: Int = 64) {
        self.maxHeadBytes = maxHeadBytes
        self.maxHeaderCount = maxHeaderCount
    }
}
