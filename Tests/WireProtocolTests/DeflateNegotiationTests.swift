import Testing
@testable import WireProtocol

private let bothNoContext = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

@Suite struct DeflateNegotiationTests {
    @Test func browserOffer() {
        // Chrome, Firefox and Safari all send this.
        let p = DeflateNegotiation.negotiate("permessage-deflate; client_max_window_bits")
        #expect(p == DeflateParameters())
        #expect(p?.responseHeaderValue == bothNoContext)
        #expect(p?.serverWindowBits == 15)
    }

    @Test func bareOffer() {
        #expect(DeflateNegotiation.negotiate("permessage-deflate")?.responseHeaderValue == bothNoContext)
    }

    @Test(arguments: 9...15)
    func autobahnOfferWithServerWindow(bits: Int) {
        // What Autobahn's fuzzingclient sends in 13.3 to 13.6 (with 9...15 in place of 8 and 15).
        let offer = "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=\(bits)"
        let p = DeflateNegotiation.negotiate(offer)
        #expect(p?.serverMaxWindowBits == UInt8(bits))
        #expect(p?.clientMaxWindowBits == nil)
        #expect(p?.deflaterWindowBits == bits)
        #expect(p?.deflaterRunLengthOnly == false)
        #expect(p?.responseHeaderValue == bothNoContext + "; server_max_window_bits=\(bits)")
    }

    @Test func eightBitServerWindowIsRunLengthOnlyOrDeclined() {
        let offer = "permessage-deflate; client_max_window_bits; server_max_window_bits=8"
        let p = DeflateNegotiation.negotiate(offer)
        #expect(p?.serverMaxWindowBits == 8)
        #expect(p?.deflaterWindowBits == 9 && p?.deflaterRunLengthOnly == true)
        #expect(p?.responseHeaderValue == bothNoContext + "; server_max_window_bits=8")
        #expect(DeflateNegotiation.negotiate(offer, policy: DeflatePolicy(acceptsEightBitServerWindow: false)) == nil)
        // Autobahn 13.7: three offers; declining the first picks the second.
        let three = "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=8, "
            + "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, "
            + "permessage-deflate; client_no_context_takeover; client_max_window_bits"
        #expect(DeflateNegotiation.negotiate(three, policy: DeflatePolicy(acceptsEightBitServerWindow: false)) == DeflateParameters())
        #expect(DeflateNegotiation.negotiate(three)?.serverMaxWindowBits == 8)
    }

    @Test(arguments: 8...15)
    func clientWindowWithValueIsAnswered(bits: Int) {
        let p = DeflateNegotiation.negotiate("permessage-deflate; client_max_window_bits=\(bits)")
        #expect(p?.clientMaxWindowBits == UInt8(bits))
        #expect(p?.responseHeaderValue == bothNoContext + "; client_max_window_bits=\(bits)")
    }

    @Test(arguments: [
        "permessage-deflate; foo",                                          // unknown parameter
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",  // duplicate
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; Server_Max_Window_Bits=11",
        "permessage-deflate; server_no_context_takeover=1",                 // takes no value
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; server_max_window_bits",                       // needs a value
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",                    // no leading zero
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; server_max_window_bits=\"10 \"",               // unquoted, not a token
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=100",
        "permessage-deflate; server_max_window_bits=",                      // syntax errors
        "permessage-deflate; =10",
        "permessage-deflate;;",
        "permessage-deflate x",
        "permessage-deflate; server_max_window_bits=\"10",
        "x-webkit-deflate-frame",                                           // another extension
        "permessage-deflat",
        "",
    ])
    func badOfferIsDeclined(offer: String) {
        #expect(DeflateNegotiation.negotiate(offer) == nil)
        // ... and the next offer, if the list can be read on, is taken instead (not after an
        // unterminated quote, which swallows the rest).
        let next = DeflateNegotiation.negotiate(offer + ", permessage-deflate; client_max_window_bits=9")
        if offer.hasSuffix("\"10") {
            #expect(next == nil)
        } else {
            #expect(next == DeflateParameters(clientMaxWindowBits: 9))
        }
    }

    @Test func quotedAndCaseInsensitive() {
        #expect(DeflateNegotiation.negotiate("permessage-deflate; server_max_window_bits=\"10\"")?.serverMaxWindowBits == 10)
        #expect(DeflateNegotiation.negotiate("permessage-deflate; server_max_window_bits=\"1\\2\"")?.serverMaxWindowBits == 12)
        #expect(DeflateNegotiation.negotiate("PerMessage-Deflate;Server_Max_Window_Bits=12 ;\tCLIENT_NO_CONTEXT_TAKEOVER")?.serverMaxWindowBits == 12)
    }

    @Test func severalOffersAndEmptyElements() {
        let p = DeflateNegotiation.negotiate(" , x-webkit-deflate-frame; a=\"x,y\" ,, permessage-deflate; client_max_window_bits=10 , permessage-deflate")
        #expect(p == DeflateParameters(clientMaxWindowBits: 10))
        // Several header lines, in order.
        let lines = ["foo", "permessage-deflate; server_max_window_bits=11"].map { Array($0.utf8) }
        let q = lines[0].withUnsafeBytes { a in lines[1].withUnsafeBytes { b in DeflateNegotiation.negotiate([a, b]) } }
        #expect(q?.serverMaxWindowBits == 11)
    }

    @Test func answerReparsesToTheSameParameters() {
        for server in [nil, 8, 9, 12, 15] as [UInt8?] {
            for client in [nil, 8, 10, 15] as [UInt8?] {
                let p = DeflateParameters(serverMaxWindowBits: server, clientMaxWindowBits: client)
                #expect(DeflateNegotiation.negotiate(p.responseHeaderValue) == p)
            }
        }
    }
}
