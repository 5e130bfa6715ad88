import AccessToken
import Testing

@Suite struct TokenLocationTests {
    func located(authorization: String? = nil, subprotocols: String? = nil, query: String? = nil) -> LocatedToken? {
        guard case .success(let t) = TokenLocation.locate(authorization: authorization, subprotocols: subprotocols, query: query) else { return nil }
        return t
    }

    func refusal(authorization: String? = nil, subprotocols: String? = nil, query: String? = nil) -> TokenFailure? {
        guard case .failure(let f) = TokenLocation.locate(authorization: authorization, subprotocols: subprotocols, query: query) else { return nil }
        return f
    }

    @Test(arguments: ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER abc.def.ghi", "bEaReR   abc.def.ghi  ", "\tBearer abc.def.ghi"])
    func theBearerSchemeIsCaseInsensitive(header: String) {
        #expect(located(authorization: header) == LocatedToken(token: "abc.def.ghi", source: .authorization, subprotocol: nil))
    }

    @Test(arguments: ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearerabc.def.ghi", "Bearer_abc", "Béarer abc", "", "Token abc.def.ghi"])
    func otherSchemesAndEmptyBearerAreRefused(header: String) {
        #expect(refusal(authorization: header)?.code == TokenFailure.malformed("").code)
    }

    @Test func theHeaderComesFirstThenTheSubprotocolThenTheQuery() {
        #expect(located(authorization: "Bearer h.h.h", subprotocols: "tickwire, bearer.s.s.s", query: "q.q.q")
            == LocatedToken(token: "h.h.h", source: .authorization, subprotocol: "tickwire"))
        #expect(located(subprotocols: "tickwire, bearer.s.s.s", query: "q.q.q")
            == LocatedToken(token: "s.s.s", source: .subprotocol, subprotocol: "tickwire"))
        // With nothing else offered, the browser needs its token entry answered.
        #expect(located(subprotocols: "bearer.s.s.s") == LocatedToken(token: "s.s.s", source: .subprotocol, subprotocol: "bearer.s.s.s"))
        #expect(located(query: "q.q.q") == LocatedToken(token: "q.q.q", source: .query, subprotocol: nil))
        #expect(located() == nil && refusal() == nil)
    }

    @Test func emptyPlacesAreRefusedNotSkipped() {
        #expect(refusal(subprotocols: "tickwire, bearer.") != nil)
        #expect(refusal(query: "") != nil)
    }
}

@Suite struct TokenLocationByteTests {
    @Test func aCombiningMarkAfterTheSchemeIsPartOfTheTokenNotOfTheSpace() throws {
        // Character-wise, " \u{301}" is one Character; the token is cut on bytes.
        let located = try TokenLocation.locate(authorization: "Bearer \u{301}abc", subprotocols: nil, query: nil).get()
        #expect(located?.token == "\u{301}abc")
    }

    @Test func spacesAndTabsAroundTheTokenAreTrimmed() throws {
        let located = try TokenLocation.locate(authorization: " \tBearer \t a.b.c \t", subprotocols: nil, query: nil).get()
        #expect(located?.token == "a.b.c")
    }
}
