import AccessToken
import Authentication
import Crypto
import EdgeServer
import Foundation
import Synchronization
import Testing
@testable import TickwireClient

// MARK: - Fixtures

/// A throwaway PKI made with the openssl command line for one test: a CA, a server
/// certificate it signed for `names`, and a second CA that signed nothing here.
struct TestCertificates {
    let directory: URL
    var caFile: String { directory.appendingPathComponent("ca.crt").path }
    var otherCAFile: String { directory.appendingPathComponent("other-ca.crt").path }
    var certificateFile: String { directory.appendingPathComponent("server.crt").path }
    var keyFile: String { directory.appendingPathComponent("server.key").path }

    /// `names`: subjectAltName entries, e.g. `DNS:localhost,IP:127.0.0.1`.
    init(names: String = "DNS:localhost,IP:127.0.0.1") throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tickwire-client-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let d = directory.path
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for ca in ["ca", "other-ca"] {
            try Self.openssl(["req", "-x509"] + ec + ["-days", "2", "-subj", "/CN=Tickwire test \(ca)",
                             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                             "-keyout", "\(d)/\(ca).key", "-out", "\(d)/\(ca).crt"])
        }
        try Self.openssl(["req"] + ec + ["-subj", "/CN=tickwire test server", "-keyout", "\(d)/server.key", "-out", "\(d)/server.csr"])
        try "subjectAltName=\(names)\nextendedKeyUsage=serverAuth\n".write(toFile: "\(d)/server.ext", atomically: true, encoding: .utf8)
        try Self.openssl(["x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca.crt", "-CAkey", "\(d)/ca.key", "-CAcreateserial",
                          "-days", "2", "-extfile", "\(d)/server.ext", "-out", "\(d)/server.crt"])
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }

    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw TestFailure("openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(text)")
        }
    }
}

/// HS256 tokens for the test server's secret file (the same construction as
/// AuthenticationTests' TokenMinter, with swift-crypto's HMAC).
enum TestTokens {
    static let secret = Array("tickwire-client-tests-hs256-secret-0123456789".utf8)
    static let wrongSecret = Array("not-the-server-secret-0123456789abcdefghijkl".utf8)

    static func hs256(sub: String, expiresIn seconds: Int64, secret: [UInt8] = secret) -> String {
        let exp = Int64(Date().timeIntervalSince1970) + seconds
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let claims = Base64URL.encode(Array(#"{"exp":\#(exp),"sub":"\#(sub)"}"#.utf8))
        let input = header + "." + claims
        let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: secret))
        return input + "." + Base64URL.encode(Array(mac))
    }

    /// Writes the secret where `--jwt-secret-file` would read it and loads it the same way.
    static func verifier() throws -> (TokenVerifier, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tickwire-client-secret-\(UUID().uuidString)").path
        try Data(secret).write(to: URL(fileURLWithPath: path))
        let keys = try KeySet.load(secretFile: path, publicKeyFile: nil, jwksFile: nil)
        // No leeway: an expired token is refused at once, so a reconnect with the old
        // token could not pass unnoticed.
        return (TokenVerifier(keys: keys, policy: ClaimsPolicy(leewaySeconds: 0)), path)
    }
}

/// Counts and scripts a token provider's answers.
final class ScriptedTokens: Sendable {
    private let calls = Mutex<Int>(0)
    private let answer: @Sendable (Int) throws -> String

    /// `answer(n)`: the token for the n-th call (1-based).
    init(_ answer: @escaping @Sendable (Int) throws -> String) { self.answer = answer }

    var count: Int { calls.withLock { $0 } }

    var provider: @Sendable () async throws -> String {
        { [self] in
            let n = calls.withLock { c -> Int in
                c += 1
                return c
            }
            return try answer(n)
        }
    }
}

struct ProviderRefused: Error, CustomStringConvertible {
    var description: String { "no token today" }
}

extension LiveServer {
    /// An HTTP(S) request to the test server, from a dedicated thread.
    func request(_ method: String, _ target: String, body: String = "", tls: TLSClientContext? = nil) async throws -> HTTPExchange.Response {
        let exchange = HTTPExchange(host: "127.0.0.1", port: port, hostHeader: "127.0.0.1:\(port)", timeout: .seconds(5), maxBodyBytes: 4 << 20, tls: tls)
        let result = await DedicatedThread.run {
            Result { () throws(TransportError) in
                try exchange.perform(method: method, target: target, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
            }
        }
        return try #require(result).get()
    }

    func publish(_ body: String, tls: TLSClientContext?) async throws -> [UInt64] {
        let response = try await request("POST", "/api/publish", body: body, tls: tls)
        guard response.status == 202 else {
            throw TestFailure("publish answered \(response.status): \(String(decoding: response.body, as: UTF8.self))")
        }
        struct Accepted: Decodable { var seqs: [UInt64] }
        return try JSONDecoder().decode(Accepted.self, from: Data(response.body)).seqs
    }

    /// A counter from `/metrics` (no labels).
    func metric(_ name: String, tls: TLSClientContext? = nil) async throws -> Double {
        let text = String(decoding: try await request("GET", "/metrics", tls: tls).body, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            if let value = Double(line.split(separator: " ").last ?? "") { return value }
        }
        throw TestFailure("no metric \(name)")
    }
}

extension Array where Element == TickwireEvent {
    var errors: [ErrorData] {
        messages.compactMap { if case .error(let e) = $0.payload { return e } else { return nil } }
    }

    var refreshes: [TokenRefreshed] {
        messages.compactMap { if case .tokenRefreshed(let r) = $0.payload { return r } else { return nil } }
    }
}

func privateTradeJSON(account: String, n: Int) -> String {
    #"{"type":"TradeExecuted","account":"\#(account)","data":{"symbol":"BTCUSDT","side":"BUY","quantity":0.5,"price":50000.0,"timestamp":\#(n),"pnl":1.0}}"#
}

/// A trade whose `data` carries `padding` bytes of one repeated letter: large once inflated,
/// a few dozen bytes deflated.
func paddedTradeJSON(n: Int, padding: Int) -> String {
    #"{"type":"TradeExecuted","data":{"symbol":"BTCUSDT","side":"BUY","quantity":0.5,"price":50000.0,"timestamp":\#(n),"pnl":1.0,"note":"\#(String(repeating: "a", count: padding))"}}"#
}

// MARK: - Tests

/// wss://, tokens and permessage-deflate against a real in-process server on loopback (the
/// same `Server` the binary runs, configured as its --tls-cert/--tls-key, --auth
/// required --jwt-secret-file and --compression flags would). Serialized: each test starts
/// a server with two reactor threads on a machine that may have two cores.
@Suite("Client TLS, tokens and compression against a live server", .serialized, .timeLimit(.minutes(1)))
struct SecureClientTests {
    static func configuration(_ change: (inout TickwireClient.Configuration) -> Void = { _ in }) -> TickwireClient.Configuration {
        ClientIntegrationTests.configuration {
            $0.reconnect = ReconnectPolicy(initialDelay: .milliseconds(100), factor: 1, maxDelay: .milliseconds(100), maxAttempts: 5, jitter: false)
            change(&$0)
        }
    }

    static func tlsServer(_ pki: TestCertificates, _ configure: (inout ServerConfiguration) -> Void = { _ in }) throws -> LiveServer {
        try LiveServer {
            $0.tlsCertificateFile = pki.certificateFile
            $0.tlsKeyFile = pki.keyFile
            configure(&$0)
        }
    }

    // MARK: wss://

    @Test func wssWithTheRightCAStreamsAndLoadsTheSnapshotOverHTTPS() async throws {
        let pki = try TestCertificates()
        defer { pki.remove() }
        let server = try Self.tlsServer(pki)
        let trust = try TLSClientContext(caFile: pki.caFile)
        // By name: SNI and a DNS name check.
        let client = try TickwireClient(url: "wss://localhost:\(server.port)/ws", configuration: Self.configuration { $0.tls.caFile = pki.caFile })
        let recorder = EventRecorder(client)
        await client.connect()
        let sync = try await recorder.wait(for: "the first sync") { $0.syncs.first }
        #expect(sync.source == .snapshot)  // GET /api/snapshot went over https:// too
        let seqs = try await server.publish(batch([tradeJSON(n: 1), tradeJSON(n: 2)]), tls: trust)
        let trades = try await recorder.wait(for: "two trades over TLS") { $0.trades.count >= 2 ? $0.trades : nil }
        #expect(trades.map(\.seq) == seqs)
        #expect(recorder.events.diagnostics.isEmpty)
        await client.shutdown()

        // By IP address: the certificate's IP entry is checked (no SNI for a literal).
        let byAddress = try TickwireClient(url: "wss://127.0.0.1:\(server.port)/ws", configuration: Self.configuration {
            $0.tls.caFile = pki.caFile
            $0.loadSnapshotOnFirstConnect = false
        })
        let second = EventRecorder(byAddress)
        await byAddress.connect()
        try await second.wait(for: "a sync by IP address") { $0.syncs.first }
        await byAddress.shutdown()

        // And the port speaks only TLS: a plain ws:// client gets nowhere.
        let plain = try TickwireClient(url: server.url, configuration: Self.configuration { $0.reconnect.maxAttempts = 0 })
        let third = EventRecorder(plain)
        await plain.connect()
        try await third.wait(for: "the plain attempt to fail") { $0.diagnostics.first { $0.kind == .handshakeFailed || $0.kind == .connectFailed } }
        #expect(!third.events.states.contains(.connected))
        await plain.shutdown()
        await server.stop()
    }

    @Test func aCertificateFromAnUntrustedCAIsRefusedClearly() async throws {
        let pki = try TestCertificates()
        defer { pki.remove() }
        let server = try Self.tlsServer(pki)
        let client = try TickwireClient(url: "wss://localhost:\(server.port)/ws", configuration: Self.configuration {
            $0.tls.caFile = pki.otherCAFile
            $0.reconnect.maxAttempts = 0
        })
        let recorder = EventRecorder(client)
        await client.connect()
        let failure = try await recorder.wait(for: "a TLS failure") { $0.diagnostics.first { $0.kind == .tlsFailed } }
        #expect(failure.message.contains("certificate of localhost:\(server.port) was rejected"))
        #expect(failure.message.contains("unable to get local issuer certificate"))
        #expect(failure.message.contains("caFile"))
        #expect(!recorder.events.states.contains(.connected))
        #expect(server.server.webSocketCount == 0)
        await client.shutdown()
        await server.stop()
    }

    @Test func aCertificateForAnotherHostIsRefusedClearly() async throws {
        // Trusted CA, but the certificate names neither localhost nor 127.0.0.1.
        let pki = try TestCertificates(names: "DNS:feed.example.com,IP:10.0.0.1")
        defer { pki.remove() }
        let server = try Self.tlsServer(pki)
        for (host, said) in [("localhost", "hostname mismatch"), ("127.0.0.1", "IP address mismatch")] {
            let client = try TickwireClient(url: "wss://\(host):\(server.port)/ws", configuration: Self.configuration {
                $0.tls.caFile = pki.caFile
                $0.reconnect.maxAttempts = 0
            })
            let recorder = EventRecorder(client)
            await client.connect()
            let failure = try await recorder.wait(for: "a TLS failure for \(host)") { $0.diagnostics.first { $0.kind == .tlsFailed } }
            #expect(failure.message.contains(said))
            #expect(failure.message.contains("not for '\(host)'"))
            #expect(!recorder.events.states.contains(.connected))
            await client.shutdown()
        }
        await server.stop()
    }

    @Test func unusableTrustSettingsAreReportedUpFront() throws {
        #expect(throws: TickwireClientError.self) {
            var c = TickwireClient.Configuration()
            c.tls.caFile = "/nonexistent/ca.pem"
            _ = try TickwireClient(url: "wss://localhost:1/ws", configuration: c)
        }
        // ws:// never reads the TLS settings.
        var c = TickwireClient.Configuration()
        c.tls.caFile = "/nonexistent/ca.pem"
        _ = try TickwireClient(url: "ws://localhost:1/ws", configuration: c)
    }

    // MARK: Tokens

    static func authServer(_ configure: (inout ServerConfiguration) -> Void = { _ in }) throws -> (LiveServer, String) {
        let (verifier, secretFile) = try TestTokens.verifier()
        let server = try LiveServer {
            $0.auth = .required
            $0.tokenVerifier = verifier
            configure(&$0)
        }
        return (server, secretFile)
    }

    @Test func theTokenTravelsAsASubprotocolAndOpensThePrivateStream() async throws {
        let (server, secretFile) = try Self.authServer()
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        let tokens = ScriptedTokens { _ in TestTokens.hs256(sub: "acc-1", expiresIn: 300) }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration { $0.tokenProvider = tokens.provider })
        let recorder = EventRecorder(client)
        await client.connect()
        // --auth required: both the upgrade and /api/snapshot need the token.
        let sync = try await recorder.wait(for: "the first sync") { $0.syncs.first }
        #expect(sync.source == .snapshot)
        #expect(tokens.count == 1)
        let seqs = try await server.publish(batch([privateTradeJSON(account: "acc-2", n: 1), privateTradeJSON(account: "acc-1", n: 2)]))
        let trades = try await recorder.wait(for: "acc-1's trade") { $0.trades.isEmpty ? nil : $0.trades }
        #expect(trades.map(\.seq) == [seqs[1]])  // never acc-2's
        #expect(recorder.events.diagnostics.isEmpty)
        await client.shutdown()

        // Without a provider the server refuses the upgrade, and the client says why.
        let anonymous = try TickwireClient(url: server.url, configuration: Self.configuration { $0.reconnect.maxAttempts = 0 })
        let refused = EventRecorder(anonymous)
        await anonymous.connect()
        let failure = try await refused.wait(for: "the 401") { $0.diagnostics.first { $0.kind == .handshakeFailed } }
        #expect(failure.message.contains("401") && failure.message.contains("token_missing"))
        await anonymous.shutdown()
        await server.stop()
    }

    @Test func theServersRefreshRequestIsAnsweredWithANewToken() async throws {
        let (server, secretFile) = try Self.authServer()
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        // The first token lives 3 s, so the server asks for a refresh about halfway.
        let firstExpiry = Int64(Date().timeIntervalSince1970) + 3
        let tokens = ScriptedTokens { n in TestTokens.hs256(sub: "acc-1", expiresIn: n == 1 ? 3 : 300) }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration { $0.tokenProvider = tokens.provider })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        let refreshed = try await recorder.wait(for: "TokenRefreshed", timeout: .seconds(10)) { $0.refreshes.first }
        #expect((refreshed.expiresAt ?? 0) > firstExpiry + 200)
        #expect(tokens.count == 2)
        #expect(await client.statistics.tokenRefreshes == 1)
        #expect(recorder.events.messages.contains { if case .refreshToken = $0.payload { return true } else { return false } })

        // Past the first token's exp the same connection still streams.
        let clock = ContinuousClock()
        let pastExpiry = Double(firstExpiry + 1) - Date().timeIntervalSince1970
        if pastExpiry > 0 { try await clock.sleep(for: .milliseconds(Int(pastExpiry * 1000))) }
        let seqs = try await server.publish(privateTradeJSON(account: "acc-1", n: 1))
        try await recorder.wait(for: "a trade after the old exp") { $0.trades.last?.seq == seqs.first ? true : nil }
        #expect(!recorder.events.states.contains(.reconnecting))
        #expect(!recorder.events.diagnostics.contains { $0.closeCode == 4001 })
        await client.shutdown()
        await server.stop()
    }

    @Test func afterCloseFourThousandOneANewTokenIsFetchedBeforeReconnecting() async throws {
        let (server, secretFile) = try Self.authServer()
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        // 1: a 2-second token; 2 (the refresh): one the server refuses; 3 on: a good one.
        let tokens = ScriptedTokens { n in
            switch n {
            case 1: return TestTokens.hs256(sub: "acc-1", expiresIn: 2)
            case 2: return TestTokens.hs256(sub: "acc-1", expiresIn: 300, secret: TestTokens.wrongSecret)
            default: return TestTokens.hs256(sub: "acc-1", expiresIn: 300)
            }
        }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration { $0.tokenProvider = tokens.provider })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        let refusal = try await recorder.wait(for: "TOKEN_INVALID", timeout: .seconds(10)) { $0.errors.first { $0.code == "TOKEN_INVALID" } }
        #expect(refusal.details?["reason"]?.stringValue == "bad_signature")
        let expired = try await recorder.wait(for: "close 4001", timeout: .seconds(10)) { $0.diagnostics.first { $0.closeCode == 4001 } }
        #expect(expired.message.contains("token expired"))
        // The old token would get 401 `expired` (no leeway): only a new one reconnects.
        try await recorder.wait(for: "the resume", timeout: .seconds(10)) { events in
            events.syncs.first { if case .resumed = $0.source { return true } else { return false } }
        }
        #expect(tokens.count == 3)
        let published = try await server.publish(privateTradeJSON(account: "acc-1", n: 1))
        try await recorder.wait(for: "a trade on the new connection") { $0.trades.last?.seq == published.first ? true : nil }
        #expect(!recorder.events.diagnostics.contains { $0.kind == .handshakeFailed })
        await client.shutdown()
        await server.stop()
    }

    @Test func aFailingProviderIsReportedAndRetried() async throws {
        let (server, secretFile) = try Self.authServer()
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        let tokens = ScriptedTokens { n in
            if n == 1 { throw ProviderRefused() }
            return TestTokens.hs256(sub: "acc-1", expiresIn: 300)
        }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration { $0.tokenProvider = tokens.provider })
        let recorder = EventRecorder(client)
        await client.connect()
        let failure = try await recorder.wait(for: "the provider failure") { $0.diagnostics.first { $0.kind == .tokenFailed } }
        #expect(failure.message.contains("no token today"))
        try await recorder.wait(for: "the sync after the retry") { $0.syncs.first }
        #expect(tokens.count == 2)
        await client.shutdown()
        await server.stop()
    }

    // MARK: permessage-deflate

    @Test func compressionIsNegotiatedBothWays() async throws {
        let server = try LiveServer { $0.compression = true }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration { $0.loadSnapshotOnFirstConnect = false })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        let seqs = try await server.publish(batch((1...3).map { paddedTradeJSON(n: $0, padding: 2000) }))
        let trades = try await recorder.wait(for: "three trades") { $0.trades.count >= 3 ? $0.trades : nil }
        #expect(trades.map(\.seq) == seqs)
        #expect(await client.statistics.compressedMessagesReceived >= 3)
        #expect(try await server.metric("tickwire_deflate_frames_compressed_total") >= 1)

        // A Subscribe over 128 bytes goes deflated; the server inflates and confirms it.
        let inflatedBefore = try await server.metric("tickwire_deflate_messages_inflated_total")
        let symbols = (1...40).map { "SYMBOL\($0)USDT" }
        try await client.subscribe(channels: [.tradeExecuted], symbols: symbols)
        let confirmed = try await recorder.wait(for: "the confirmation") { events in
            events.messages.lazy.compactMap { m -> SubscriptionConfirmed? in
                if case .subscriptionConfirmed(let c) = m.payload { return c } else { return nil }
            }.first
        }
        #expect(confirmed.symbols == symbols)
        #expect(try await server.metric("tickwire_deflate_messages_inflated_total") == inflatedBefore + 1)
        await client.shutdown()

        // Turned off, nothing arrives compressed.
        let plain = try TickwireClient(url: server.url, configuration: Self.configuration {
            $0.loadSnapshotOnFirstConnect = false
            $0.compression = false
        })
        let second = EventRecorder(plain)
        await plain.connect()
        try await second.wait(for: "the first sync") { $0.syncs.first }
        let more = try await server.publish(paddedTradeJSON(n: 4, padding: 2000))
        try await second.wait(for: "the trade") { $0.trades.last?.seq == more.first ? true : nil }
        #expect(await plain.statistics.compressedMessagesReceived == 0)
        await plain.shutdown()
        await server.stop()
    }

    @Test func theSizeLimitHoldsForTheInflatedMessage() async throws {
        let server = try LiveServer { $0.compression = true }
        let client = try TickwireClient(url: server.url, configuration: Self.configuration {
            $0.loadSnapshotOnFirstConnect = false
            $0.maxMessageSize = 4096
            $0.reconnect.maxAttempts = 0
        })
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        // Under the limit once inflated: delivered.
        let small = try await server.publish(paddedTradeJSON(n: 1, padding: 3000))
        try await recorder.wait(for: "the 3 KB trade") { $0.trades.last?.seq == small.first ? true : nil }
        // 64 KiB inflated, a few hundred bytes on the wire: closed with 1009, not delivered.
        let big = try await server.publish(paddedTradeJSON(n: 2, padding: 64 << 10))
        let lost = try await recorder.wait(for: "the 1009") { $0.diagnostics.first { $0.kind == .connectionLost } }
        #expect(lost.message.contains("1009"))
        #expect(!recorder.events.trades.contains { $0.seq == big.first })
        #expect(await client.statistics.compressedMessagesReceived >= 1)
        await client.shutdown()
        await server.stop()
    }

    // MARK: max_frequency

    @Test func theFrequencyIsSentOnSubscribeAndOnEveryReconnect() async throws {
        // The server side of max_frequency is built separately: what is tested here is that
        // the client sends it, keeps it, and stays in step whatever the server answers.
        let server = try LiveServer()
        let client = try TickwireClient(url: server.url, configuration: Self.configuration())
        let recorder = EventRecorder(client)
        await client.connect()
        try await recorder.wait(for: "the first sync") { $0.syncs.first }
        try await client.subscribe(channels: [.marketData, .tradeExecuted], symbols: ["BTCUSDT"], maxFrequency: 4)
        #expect(await client.subscription.maxFrequency == 4)
        try await recorder.wait(for: "the confirmation") { events in
            events.messages.contains { if case .subscriptionConfirmed = $0.payload { return true } else { return false } } ? true : nil
        }
        await #expect(throws: TickwireClientError.self) { try await client.subscribe(maxFrequency: 0) }
        await #expect(throws: TickwireClientError.self) { try await client.subscribe(maxFrequency: .nan) }
        #expect(await client.subscription.maxFrequency == 4)  // a refused change changes nothing

        // After a reconnect the frequency is asked for again, and the stream resumes.
        let before = recorder.events.messages.filter { if case .subscriptionConfirmed(let c) = $0.payload { return c.recovered == nil } else { return false } }.count
        await client.dropConnectionForTesting()
        try await recorder.wait(for: "the resume") { events in
            events.syncs.first { if case .resumed = $0.source { return true } else { return false } }
        }
        try await recorder.wait(for: "a confirmation of the re-sent Subscribe") { events in
            let confirmations = events.messages.compactMap { m -> SubscriptionConfirmed? in
                if case .subscriptionConfirmed(let c) = m.payload, c.recovered == nil { return c } else { return nil }
            }
            return confirmations.count > before ? true : nil
        }
        let seqs = try await server.publish(batch([tradeJSON("BTCUSDT", n: 1), tradeJSON("ETHUSDT", n: 2)]))
        try await recorder.wait(for: "the BTC trade") { $0.trades.last?.seq == seqs.first ? true : nil }
        await client.shutdown()
        await server.stop()
    }
}
