import Cluster
import Testing

@Suite struct RedisEndpointTests {
    @Test func parsesHostPortDatabaseAndCredentials() throws {
        #expect(try RedisEndpoint(url: "redis://127.0.0.1:6380/2") == RedisEndpoint(host: "127.0.0.1", port: 6380, database: 2))
        #expect(try RedisEndpoint(url: "redis://redis.internal") == RedisEndpoint(host: "redis.internal"))
        #expect(try RedisEndpoint(url: "redis://h:1/") == RedisEndpoint(host: "h", port: 1))
        #expect(try RedisEndpoint(url: "redis://:s3cret@h:6379/0") == RedisEndpoint(host: "h", password: "s3cret"))
        #expect(try RedisEndpoint(url: "redis://tw:p%40ss%3A@h") == RedisEndpoint(host: "h", user: "tw", password: "p@ss:"))
        #expect(try RedisEndpoint(url: "redis://[::1]:7000/3") == RedisEndpoint(host: "::1", port: 7000, database: 3))
        #expect(try RedisEndpoint(url: "redis://[::1]") == RedisEndpoint(host: "::1"))
    }

    @Test func rejectsBadURLsWithAClearReason() {
        let cases: [(String, RedisEndpointError)] = [
            ("http://h:6379", .notRedisURL),
            ("h:6379", .notRedisURL),
            ("rediss://h", .unsupported("TLS to Redis (rediss://) is not supported")),
            ("redis://", .missingHost),
            ("redis://:6379", .missingHost),
            ("redis://h:0", .badPort("0")),
            ("redis://h:65536", .badPort("65536")),
            ("redis://h:abc", .badPort("abc")),
            ("redis://h:", .badPort("")),
            ("redis://h/x", .badDatabase("x")),
            ("redis://h/-1", .badDatabase("-1")),
            ("redis://h?db=1", .unsupported("a query or fragment in the URL")),
            ("redis://pass@h", .badCredentials("expected [user]:password before @")),
            ("redis://:p%zz@h", .badCredentials("bad percent-encoding")),
            ("redis://[::1", .badHost("[::1")),
            ("redis://h h", .badHost("h h")),
        ]
        for (url, error) in cases {
            #expect(throws: error, "\(url)") { try RedisEndpoint(url: url) }
        }
        // The messages never repeat a password.
        #expect(!RedisEndpointError.notRedisURL.description.isEmpty)
        #expect(RedisEndpoint(host: "h", password: "secret").description == "redis://:***@h:6379/0")
    }

    @Test func backoffDoublesToItsCapWithJitter() {
        var b = ReconnectBackoff(initial: 0.05, maximum: 1)
        #expect(b.nextDelay(random: 0) == 0.025)
        #expect(b.nextDelay(random: 1) == 0.1)
        #expect(abs(b.nextDelay(random: 0.5) - 0.15) < 1e-12)
        for _ in 0..<40 { #expect(b.nextDelay(random: 1) <= 1) }
        #expect(b.nextDelay(random: 0) == 0.5)
        b.reset()
        #expect(b.nextDelay(random: 1) == 0.05)
    }

    @Test func settingsAreValidated() {
        var s = RedisLinkSettings()
        #expect(throws: Never.self) { try s.validate() }
        s.commandTimeout = 0
        #expect(throws: RedisSettingsError.self) { try s.validate() }
    }
}
