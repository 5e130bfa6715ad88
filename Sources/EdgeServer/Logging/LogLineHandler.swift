import Glibc
import Logging
import Reactor
import WireProtocol

/// How log lines are written: human-readable text, or one JSON object per line for log
/// shippers (Loki, Elasticsearch, CloudWatch).
public enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json
}

/// A swift-log handler that writes each line to stderr with a single write(2): lines from
/// different threads never interleave (writes under PIPE_BUF are atomic) and no lock is
/// taken, so a reactor thread logging a connect or disconnect never waits on another.
public struct LogLineHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public let label: String
    public let format: LogFormat
    private let fd: Int32

    public init(label: String, level: Logger.Level, format: LogFormat, fd: Int32 = 2) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.fd = fd
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        let time = Timestamp.string(millisecondsSinceEpoch: wallClockNanoseconds() / 1_000_000)
        var line: String
        switch format {
        case .text:
            line = "\(time) \(event.level.rawValue.uppercased()) \(event.message)"
            for key in all.keys.sorted() { line += " \(key)=\(all[key]!)" }
        case .json:
            line = "{\"ts\":\"\(time)\",\"level\":\"\(event.level.rawValue)\",\"logger\":\(JSONText.quoted(label)),\"msg\":\(JSONText.quoted(event.message.description))"
            for key in all.keys.sorted() { line += ",\(JSONText.quoted(key)):\(JSONText.quoted(all[key]!.description))" }
            line += "}"
        }
        line += "\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                offset += n
            }
        }
    }
}

/// JSON string quoting (RFC 8259 §7) for the few places the server writes JSON by hand.
public enum JSONText {
    public static func quoted(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
        return out
    }
}
