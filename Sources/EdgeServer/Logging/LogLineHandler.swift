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

/// A swift-log handler that formats each line on the caller's thread and hands it to a
/// `LogOutput`, which queues it without a lock and writes it from its own thread: a reactor
/// logging a connect or disconnect never blocks, even when stderr is slow or full. Each
/// line is written whole by that one thread, so lines never interleave.
public struct LogLineHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public let label: String
    public let output: LogOutput
    public var format: LogFormat { output.format }

    public init(label: String, level: Logger.Level, output: LogOutput) {
        self.label = label
        self.logLevel = level
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Lines dropped by every log output in this process because the output was too slow.
    public static var droppedLines: UInt64 { LogOutput.droppedTotal.load(ordering: .relaxed) }

    public func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        output.write(Self.line(level: event.level, message: event.message.description, label: label, metadata: all, format: format))
    }

    /// One formatted line, newline included: the timestamp is taken now, on the caller's
    /// thread, so a queued line carries the time of its event, not of its write.
    static func line(level: Logger.Level, message: String, label: String, metadata: Logger.Metadata, format: LogFormat) -> String {
        let time = Timestamp.string(millisecondsSinceEpoch: wallClockNanoseconds() / 1_000_000)
        var line: String
        switch format {
        case .text:
            line = "\(time) \(level.rawValue.uppercased()) \(message)"
            for key in metadata.keys.sorted() { line += " \(key)=\(metadata[key]!)" }
        case .json:
            line = "{\"ts\":\"\(time)\",\"level\":\"\(level.rawValue)\",\"logger\":\(JSONText.quoted(label)),\"msg\":\(JSONText.quoted(message))"
            for key in metadata.keys.sorted() { line += ",\(JSONText.quoted(key)):\(JSONText.quoted(metadata[key]!.description))" }
            line += "}"
        }
        line += "\n"
        return line
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
