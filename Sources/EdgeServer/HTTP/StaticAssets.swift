import TradingStream

/// The dashboard's files, embedded at build time (`.embedInCode` in Package.swift), served
/// from memory with an ETag so browsers revalidate cheaply and never run stale code after
/// an upgrade.
struct StaticAsset: Sendable {
    let bytes: [UInt8]
    let contentType: String
    let etag: String
}

enum StaticAssets {
    static let all: [String: StaticAsset] = {
        let files: [(String, [UInt8], String)] = [
            ("/index.html", PackageResources.index_html, "text/html; charset=utf-8"),
            ("/app.js", PackageResources.app_js, "text/javascript; charset=utf-8"),
            ("/app.css", PackageResources.app_css, "text/css; charset=utf-8"),
            ("/tickwire.js", PackageResources.tickwire_js, "text/javascript; charset=utf-8"),
            ("/tickwire.d.ts", PackageResources.tickwire_d_ts, "application/typescript; charset=utf-8"),
        ]
        var table: [String: StaticAsset] = [:]
        for (path, bytes, type) in files {
            let hash = bytes.withUnsafeBytes { SymbolHash.hash($0) }
            table[path] = StaticAsset(bytes: bytes, contentType: type, etag: "\"\(String(hash, radix: 16))\"")
        }
        table["/"] = table["/index.html"]
        return table
    }()
}
