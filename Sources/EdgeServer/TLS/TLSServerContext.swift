import CTLSShims

/// The server's TLS credentials: one OpenSSL context per reactor (so handshakes on
/// different cores share no context state), loaded from the PEM files at start-up and
/// again on SIGHUP. A reload swaps each reactor's context for new handshakes; sessions
/// already open keep the context they were made with (OpenSSL counts its references).
struct TLSServerContext {
    /// Loads `count` contexts, or says what to fix in the files.
    static func load(certificateFile: String, keyFile: String, count: Int) -> Result<[OpaquePointer], TLSLoadError> {
        var contexts: [OpaquePointer] = []
        for _ in 0..<count {
            var error = [CChar](repeating: 0, count: 512)
            guard let context = tw_tls_server_context(certificateFile, keyFile, &error, error.count) else {
                contexts.forEach { tw_tls_context_free($0) }
                return .failure(TLSLoadError(message: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
            }
            contexts.append(context)
        }
        return .success(contexts)
    }

    /// The certificate's expiry, in seconds since the epoch (0 if unknown).
    static func notAfter(_ context: OpaquePointer) -> Int64 {
        Int64(tw_tls_certificate_not_after(context))
    }
}

public struct TLSLoadError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
