import CHiredis

/// One Redis reply, decoded out of hiredis' reply tree (which hiredis frees when the
/// callback returns). Bulk strings stay bytes: payloads are not text.
public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisReply])

    init(_ raw: UnsafePointer<redisReply>) {
        let r = raw.pointee
        switch r.type {
        case TW_REDIS_REPLY_STATUS: self = .status(RedisReply.text(r.str, r.len))
        case TW_REDIS_REPLY_ERROR: self = .error(RedisReply.text(r.str, r.len))
        case TW_REDIS_REPLY_INTEGER: self = .integer(Int64(r.integer))
        case TW_REDIS_REPLY_STRING:
            self = .bulk(r.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case TW_REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements { items.append(RedisReply(UnsafePointer(r.element[i]!))) }
            self = .array(items)
        default: self = .null
        }
    }

    private static func text(_ p: UnsafeMutablePointer<CChar>?, _ n: Int) -> String {
        guard let p, n > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
    }

    /// A bulk or status reply as text (nil for anything else).
    public var string: String? {
        switch self {
        case .bulk(let b): String(decoding: b, as: UTF8.self)
        case .status(let s): s
        default: nil
        }
    }

    /// An integer reply, or a bulk string holding a decimal integer (Lua numbers turn into
    /// integers, HGET's values are strings).
    public var int: Int64? {
        switch self {
        case .integer(let v): v
        case .bulk(let b): Int64(String(decoding: b, as: UTF8.self))
        default: nil
        }
    }

    public var elements: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }
}
