import Foundation
import Testing
import WireProtocol
@testable import TickwireClient

func responseHead(_ text: String) throws -> HTTPResponseHead {
    guard case .head(let h) = HTTPResponseHead.parse(Array(text.utf8)) else { throw TestFailure("no head in \(text)") }
    return h
}

/// RFC 6455 §1.3's example key and its accept value.
let sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="
let sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

func upgradeAnswer(_ extra: String = "") -> String {
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(sampleAccept)\r\n\(extra)\r\n"
}

@Suite("Subprotocol and permessage-deflate negotiation")
struct NegotiationTests {
    let handshake = ClientHandshake(key: sampleKey, protocols: ["tickwire", "bearer.aaa.bbb.ccc"], offersDeflate: true)

    @Test func requestOffersTheTokenAndDeflate() {
        let request = String(decoding: handshake.request(hostHeader: "h:1", target: "/ws"), as: UTF8.self)
        #expect(request.contains("\r\nSec-WebSocket-Protocol: tickwire, bearer.aaa.bbb.ccc\r\n"))
        #expect(request.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits\r\n"))
        // Nothing offered, nothing said.
        let plain = String(decoding: ClientHandshake(key: sampleKey).request(hostHeader: "h:1", target: "/ws"), as: UTF8.self)
        #expect(!plain.contains("Sec-WebSocket-Protocol") && !plain.contains("Sec-WebSocket-Extensions"))
    }

    @Test func acceptsTheServersAnswer() throws {
        // Tickwire's own answer (PROTOCOL.md "Compression", "Authentication").
        let head = try responseHead(upgradeAnswer("Sec-WebSocket-Protocol: tickwire\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"))
        let agreement = try handshake.accept(head).get()
        #expect(agreement.subprotocol == "tickwire")
        #expect(agreement.deflate == ClientDeflateTerms(clientWindowBits: 15))
        // A server that declines compression and subprotocols is fine too.
        #expect(try handshake.accept(try responseHead(upgradeAnswer())).get() == .init(subprotocol: nil, deflate: nil))
    }

    @Test func refusesWhatWasNotOffered() throws {
        let otherProtocol = try responseHead(upgradeAnswer("Sec-WebSocket-Protocol: graphql-ws\r\n"))
        #expect(handshake.problem(with: otherProtocol)?.contains("graphql-ws") == true)
        let noDeflateOffered = ClientHandshake(key: sampleKey)
        let deflate = try responseHead(upgradeAnswer("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"))
        #expect(noDeflateOffered.problem(with: deflate)?.contains("not offered") == true)
        let otherExtension = try responseHead(upgradeAnswer("Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"))
        #expect(handshake.problem(with: otherExtension)?.contains("x-webkit-deflate-frame") == true)
    }

    @Test func deflateTermsAreChecked() throws {
        #expect(try ClientDeflateTerms.parse("permessage-deflate; server_no_context_takeover").get().clientWindowBits == 15)
        let ten = try? ClientDeflateTerms.parse("Permessage-Deflate ; server_no_context_takeover; client_max_window_bits=10; server_max_window_bits=\"12\"").get()
        #expect(ten?.clientWindowBits == 10 && ten?.deflaterWindowBits == 10 && ten?.deflaterRunLengthOnly == false)
        let eight = try? ClientDeflateTerms.parse("permessage-deflate; server_no_context_takeover; client_max_window_bits=8").get()
        #expect(eight?.deflaterWindowBits == 9 && eight?.deflaterRunLengthOnly == true)
        // Our inflater starts each message afresh: a server keeping its window is refused.
        for bad in [
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; mystery",
            "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
        ] {
            if case .success = ClientDeflateTerms.parse(bad) { Issue.record("accepted '\(bad)'") }
        }
    }

    @Test func refusalsSayWhy() throws {
        let body = #"{"status":401,"error":"Unauthorized","code":"expired","message":"the token expired"}"#
        let text = "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        let head = try responseHead(text)
        let bytes = Array(text.utf8)
        guard case .failure(let refusal) = handshake.accept(head, body: bytes[head.length...]) else {
            Issue.record("accepted a 401")
            return
        }
        #expect(refusal.status == 401)
        #expect(refusal.reason.contains("401 Unauthorized") && refusal.reason.contains(#""code":"expired""#))
    }
}

@Suite("Tokens and max_frequency on the wire")
struct TokenAndFrequencyTests {
    let codec = MessageCodec()

    func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func tokensMustFitAHeaderEntry() throws {
        #expect(try TickwireClient.checkedToken("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_").get() == "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_")
        for bad in ["", "a b", "a,b", "a\r\nX-Injected: 1", "tok\"en", String(repeating: "a", count: 8193)] {
            guard case .failure(let d) = TickwireClient.checkedToken(bad) else {
                Issue.record("accepted token \(bad.prefix(20).debugDescription)")
                continue
            }
            #expect(d.kind == .tokenFailed)
        }
    }

    @Test func subscribeCarriesMaxFrequency() throws {
        let four = TickwireSubscription(channels: [.marketData, .chartUpdate], symbols: ["BTCUSDT"], maxFrequency: 4)
        #expect(text(try codec.encodeMessage(type: "Subscribe", data: four.subscribeData))
            == #"{"data":{"channels":["MarketData","ChartUpdate"],"max_frequency":4,"symbols":["BTCUSDT"]},"type":"Subscribe"}"#)
        let half = TickwireSubscription(maxFrequency: 0.5)
        #expect(text(try codec.encodeMessage(type: "Subscribe", data: half.subscribeData))
            == #"{"data":{"max_frequency":0.5,"symbols":[]},"type":"Subscribe"}"#)
        // Without a frequency the message is what it always was.
        let plain = TickwireSubscription(channels: [.tradeExecuted], symbols: ["BTCUSDT"])
        #expect(text(try codec.encodeMessage(type: "Subscribe", data: plain.subscribeData))
            == #"{"data":{"channels":["TradeExecuted"],"symbols":["BTCUSDT"]},"type":"Subscribe"}"#)
    }

    @Test func confirmationEchoesTheFrequency() throws {
        func confirmation(_ json: String) throws -> SubscriptionConfirmed {
            guard case .subscriptionConfirmed(let c) = try codec.decodeMessage(Array(json.utf8)).get().payload else { throw TestFailure("not a confirmation") }
            return c
        }
        #expect(try confirmation(#"{"type":"SubscriptionConfirmed","seq":1,"data":{"channels":["MarketData"],"symbols":[],"max_frequency":4}}"#).maxFrequency == 4)
        #expect(try confirmation(#"{"type":"SubscriptionConfirmed","seq":1,"data":{"channels":["MarketData"],"symbols":[],"max_frequency":2.5}}"#).maxFrequency == 2.5)
        #expect(try confirmation(#"{"type":"SubscriptionConfirmed","seq":1,"data":{"channels":["MarketData"],"symbols":[]}}"#).maxFrequency == nil)
    }

    @Test func refreshMessagesDecode() throws {
        let ask = try codec.decodeMessage(Array(#"{"type":"RefreshToken","seq":3,"data":{"expires_at":1800000000,"expires_in_ms":59000}}"#.utf8)).get()
        #expect(ask.payload == .refreshToken(TokenRefreshRequest(expiresAt: 1_800_000_000, expiresInMs: 59000)))
        #expect(ask.payload.sequencing == .connection && ask.payload.channel == nil)
        let done = try codec.decodeMessage(Array(#"{"type":"TokenRefreshed","seq":3,"data":{"expires_at":null}}"#.utf8)).get()
        #expect(done.payload == .tokenRefreshed(TokenRefreshed(expiresAt: nil)))
        #expect(text(try codec.encodeMessage(type: "Refresh", data: ["token": "a.b.c"])) == #"{"data":{"token":"a.b.c"},"type":"Refresh"}"#)
    }
}
