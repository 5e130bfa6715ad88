#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// JSON in and out for the client: server messages to envelopes, client messages to text.
struct MessageCodec {
    private let decoder = JSONDecoder()
    private let encoder: JSONEncoder = {
        let e = JSONEncoder()
        // Compact and stable: the server's own messages are compact JSON (PROTOCOL.md).
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// A text frame as a message, or why it was skipped.
    func decodeMessage(_ bytes: [UInt8]) -> Result<TickwireEnvelope, TickwireDiagnostic> {
        do {
            return .success(try decoder.decode(TickwireEnvelope.self, from: Data(bytes)))
        } catch {
            // Name the type and seq when they can be read, so the skipped message can be found.
            let head = try? decoder.decode(EnvelopeHead.self, from: Data(bytes))
            return .failure(TickwireDiagnostic(
                .invalidMessage,
                "skipped an invalid \(head?.type.map { "'\($0)' " } ?? "")message: \(DecodingProblem.describe(error))",
                seq: head?.seq,
                raw: String(decoding: bytes.prefix(TickwireDiagnostic.rawLimit), as: UTF8.self)))
        }
    }

    func decodeSnapshot(_ bytes: [UInt8]) throws -> TickwireSnapshot {
        try decoder.decode(TickwireSnapshot.self, from: Data(bytes))
    }

    /// `{"type": type, "data": data}` as compact JSON text.
    func encodeMessage(type: String, data: (any Encodable & Sendable)?) throws -> [UInt8] {
        Array(try encoder.encode(OutgoingMessage(type: type, data: data.map(AnyEncodable.init))))
    }

    private struct EnvelopeHead: Decodable {
        var type: String?
        var seq: UInt64?
    }

    private struct OutgoingMessage: Encodable {
        var type: String
        var data: AnyEncodable?
    }

    private struct AnyEncodable: Encodable {
        let value: any Encodable
        init(_ value: any Encodable) { self.value = value }
        func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
    }
}

/// A one-line account of a decoding failure (the field path and what was wrong).
enum DecodingProblem {
    static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : "'\(p)': "
        }
        switch error {
        case .keyNotFound(let key, let context):
            let prefix = path(context)
            return "\(prefix)missing field '\(key.stringValue)'"
        case .typeMismatch(let type, let context):
            return "\(path(context))expected \(type)"
        case .valueNotFound(let type, let context):
            return "\(path(context))null where \(type) was expected"
        case .dataCorrupted(let context):
            return "\(path(context))\(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

extension MessageCodec {
    func encodeMessageOrThrow(type: String, data: (any Encodable & Sendable)?) throws(TickwireClientError) -> [UInt8] {
        do {
            return try encodeMessage(type: type, data: data)
        } catch {
            throw .encodingFailed("\(error)")
        }
    }
}
