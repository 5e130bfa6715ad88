// swift-tools-version:6.0
import PackageDescription

// Hot-path modules are compiled with exclusivity checks off: they hold their state in
// raw, slot-indexed memory owned by one reactor thread, where the dynamic checks cost
// time per message and protect nothing.
let hotPath: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "Tickwire",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tickwire", targets: ["tickwire"]),
        .executable(name: "tickwire-bench", targets: ["tickwire-bench"]),
        .library(name: "TickwireClient", targets: ["TickwireClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", exact: "0.2.0"),
        // JWT signatures (HS256, RS256, ES256): BoringSSL's primitives, never our own crypto.
        .package(url: "https://github.com/apple/swift-crypto", exact: "4.5.2"),
    ],
    targets: [
        .systemLibrary(name: "CLibEV", path: "CLibEV", providers: [.apt(["libev-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "COpenSSL", providers: [.apt(["libssl-dev"])]),
        // permessage-deflate (RFC 7692): raw deflate streams, one shared z_stream per reactor.
        .systemLibrary(name: "CZlib", path: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // The cluster's Redis client (async, on a libev loop through hiredis' adapter).
        .systemLibrary(name: "CHiredis", path: "CHiredis", providers: [.apt(["libhiredis-dev"])]),

        // Pure protocol code: bytes in, events or errors out. No sockets, no libev.
        .target(name: "WireProtocol", dependencies: ["COpenSSL", "CZlib"]),

        // Native TLS: OpenSSL sessions on the reactors' sockets, shaped like recv/writev.
        .target(name: "CTLSShims", dependencies: ["COpenSSL"]),

        // libev reactors: threads, loops, sockets, queues, deadline lists, buffers.
        .target(name: "CSystemShims"),
        .target(name: "Reactor", dependencies: ["CLibEV", "CSystemShims"], swiftSettings: hotPath),

        // The trading stream's vocabulary: channels, subscriptions, JSON, envelopes, frames.
        .target(name: "TradingStream", dependencies: ["WireProtocol"], swiftSettings: hotPath),

        // Access tokens (JWT) as values: parsing, claims and their checks. Pure, fuzzable;
        // the signature is checked by `Authentication`.
        .target(name: "AccessToken", dependencies: ["TradingStream"]),
        // Keys from files and JWT signature verification (swift-crypto).
        .target(
            name: "Authentication",
            dependencies: [
                "AccessToken",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),

        // The cluster over Redis: links (hiredis on an edge loop of their own), the publish
        // script, the shared stream.
        .target(name: "Cluster", dependencies: ["CHiredis", "CLibEV", "Reactor"]),

        // The ingestion edge (Swift actors): publisher, snapshot, market simulator.
        .target(name: "Ingestion", dependencies: ["TradingStream", "Reactor", "WireProtocol", "Cluster"]),

        // Upstream market-data feeds (Binance format): WebSocket clients on the ingestion edge
        // loop, mapped events published through the StreamPublisher.
        .target(name: "Upstream", dependencies: ["CLibEV", "CTLSShims", "Reactor", "WireProtocol", "TradingStream", "Ingestion"]),

        // The edge server: HTTP routes, WebSocket sessions, per-worker connection tables,
        // the per-core broadcast path.
        .target(
            name: "EdgeServer",
            dependencies: [
                "CLibEV", "CSystemShims", "CTLSShims", "Reactor", "WireProtocol", "TradingStream", "Ingestion",
                "AccessToken", "Authentication", "Cluster", "Upstream",
                .product(name: "Logging", package: "swift-log"),
            ],
            // The dashboard and the browser client, compiled into the binary: one file to deploy.
            resources: [
                .embedInCode("Web/index.html"), .embedInCode("Web/app.js"), .embedInCode("Web/app.css"),
                .embedInCode("Web/tickwire.js"), .embedInCode("Web/tickwire.d.ts"),
            ],
            swiftSettings: hotPath
        ),

        .executableTarget(
            name: "tickwire",
            dependencies: [
                "EdgeServer", "Authentication",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The load generator: the client side of the same protocol code, on the same reactor.
        .executableTarget(
            name: "tickwire-bench",
            dependencies: [
                "CLibEV", "Reactor", "WireProtocol",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: hotPath
        ),

        // wss:// through the same OpenSSL shims as the server; permessage-deflate through
        // WireProtocol's codec.
        .target(name: "TickwireClient", dependencies: ["WireProtocol", "CTLSShims"]),

        .testTarget(name: "WireProtocolTests", dependencies: ["WireProtocol"]),
        .testTarget(
            name: "AuthenticationTests",
            dependencies: [
                "AccessToken", "Authentication",
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "CHiredis", "Reactor"]),
        .testTarget(name: "TradingStreamTests", dependencies: ["TradingStream", "Ingestion"]),
        .testTarget(
            name: "EdgeServerTests",
            dependencies: [
                "EdgeServer", "WireProtocol", "CTLSShims", "AccessToken", "Authentication",
                .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "TickwireClientTests",
            dependencies: [
                "TickwireClient", "EdgeServer", "Authentication",
                .product(name: "Logging", package: "swift-log"),
                // HS256 test tokens are minted with swift-crypto's HMAC.
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
    ]
)
