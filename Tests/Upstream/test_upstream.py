"""The upstream feed (--upstream) over real sockets: a real tickwire binary connected to a
fake Binance-format upstream (fake_upstream.py), and a real /ws subscriber. Mapping,
pings, reconnect, rotation without gap or duplicate, staleness and recovery, and the
event -> subscriber latency (measured and printed, never asserted)."""
import json
import pathlib
import socket
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "support"))
sys.path.insert(0, str(HERE))
from fake_upstream import FakeUpstream  # noqa: E402
from wsharness import Process, upgrade, wait_for  # noqa: E402


class Subscriber:
    def __init__(self, srv, path="/ws"):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        self.frames, _ = upgrade(self.sock, path)
        connected = self.frames.message()
        assert connected["type"] == "Connected"

    def until(self, predicate, timeout=10.0, what="a message"):
        """Messages up to and including the first that satisfies `predicate`."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                m = self.frames.message()
            except socket.timeout:
                break
            seen.append(m)
            if predicate(m):
                return seen
        raise AssertionError(f"timed out waiting for {what}; got {[m.get('type') for m in seen][-10:]}")

    def close(self):
        self.sock.close()


def events_metric(srv, kind):
    return srv.metric(f'tickwire_upstream_events_total{{type="{kind}"}}')


def health(srv):
    return srv.request("GET", "/health")[2]


def test_mapping_of_the_fixture(upstream, tickwire):
    srv = tickwire(upstream)
    sub = Subscriber(srv)
    upstream.replay_fixture()
    got = sub.until(lambda m: m["type"] == "ChartUpdate" and m["data"]["candle"]["is_closed"], what="the closed candle")
    market = [m for m in got if m["type"] == "MarketData"]
    charts = [m for m in got if m["type"] == "ChartUpdate"]
    assert [m["data"]["symbol"] for m in market] == ["BTCUSDT", "ETHUSDT"]
    btc = market[0]["data"]
    # Decimal strings become JSON numbers, digit for digit.
    assert btc == {"symbol": "BTCUSDT", "price": 67250.1, "price_change_24h": 1250.1, "price_change_percent_24h": 1.894,
                   "volume_24h": 12345.678, "high_24h": 67400.0, "low_24h": 65800.0, "timestamp": 1700000001000}
    assert market[1]["data"]["price_change_24h"] == -20.5
    assert len(charts) == 2
    open_candle, closed_candle = charts[0]["data"], charts[1]["data"]
    assert open_candle["timeframe"] == "1m" and open_candle["symbol"] == "BTCUSDT"
    assert open_candle["candle"] == {"timestamp": 1700000000000, "open": 67200.0, "high": 67260.0, "low": 67190.0,
                                     "close": 67250.1, "volume": 12.5, "is_closed": False}
    assert open_candle["latest_price"] == 67250.1
    # The candle carries the symbol's latest 24 h statistics, from its ticker.
    assert open_candle["price_change_24h"] == 1250.1 and open_candle["volume_24h"] == 12345.678
    assert closed_candle["candle"]["is_closed"] is True and closed_candle["candle"]["close"] == 67300.0
    # aggTrade is market flow: counted, never a TradeExecuted.
    assert not [m for m in got if m["type"] == "TradeExecuted"]
    wait_for(lambda: events_metric(srv, "duplicate") == 1, what="the duplicate ticker to be counted")
    assert events_metric(srv, "24hrTicker") == 2
    assert events_metric(srv, "kline") == 2
    assert events_metric(srv, "aggTrade") == 1
    assert events_metric(srv, "unknown") == 2
    assert events_metric(srv, "malformed") == 2
    # Malformed events are logged at warn (rate limited: one line for the burst) and the
    # feed goes on: a later event still arrives.
    log = srv.log_path.read_text()
    assert log.count("malformed event skipped") == 1, log
    upstream.broadcast_text(json.dumps({"stream": "btcusdt@ticker", "data": {
        "e": "24hrTicker", "E": 1700000099000, "s": "BTCUSDT", "p": "1", "P": "1", "c": "67999.5", "v": "1"}}))
    later = sub.until(lambda m: m["type"] == "MarketData", what="the ticker after the malformed ones")
    assert later[-1]["data"]["price"] == 67999.5
    # The simulator is off (--upstream without --simulator): only upstream symbols.
    snapshot = srv.request("GET", "/api/snapshot")[2]
    assert sorted(snapshot["market"]) == ["BTCUSDT", "ETHUSDT"]
    assert snapshot["bot_status"] is None
    # It asked for the URL's streams; every client frame it sent was masked.
    assert upstream.connections[0].path.startswith("/stream?streams=btcusdt@ticker")
    assert upstream.unmasked_frames == 0
    sub.close()


def test_simulator_runs_beside_the_upstream_when_asked(upstream, tickwire):
    srv = tickwire(upstream, "--simulator", "--sim-rate", "50")
    wait_for(lambda: "SOLUSDT" in srv.request("GET", "/api/snapshot")[2]["market"], what="simulator prices")


def test_pings_are_answered_with_pongs(upstream, tickwire):
    srv = tickwire(upstream)
    upstream.ping(b"are-you-there-1")
    upstream.ping(b"")
    wait_for(lambda: upstream.pongs[:2] == [b"are-you-there-1", b""], what="two pongs with the pings' payloads")
    wait_for(lambda: srv.metric("tickwire_upstream_pongs_total") == 2, what="the pongs counted")


def test_reconnects_after_the_upstream_drops(upstream, tickwire):
    srv = tickwire(upstream)
    sub = Subscriber(srv)
    upstream.drop_all()
    wait_for(lambda: len(upstream.connections) >= 2 and upstream.open_connections(), timeout=10, what="a reconnect")
    upstream.broadcast_text(json.dumps({"stream": "btcusdt@ticker", "data": {
        "e": "24hrTicker", "E": 1700000100000, "s": "BTCUSDT", "p": "1", "P": "1", "c": "70000.0", "v": "1"}}))
    got = sub.until(lambda m: m["type"] == "MarketData", what="data after the reconnect")
    assert got[-1]["data"]["price"] == 70000.0
    assert srv.metric("tickwire_upstream_reconnects_total") >= 1
    # A Close from the upstream (a venue's maintenance) is answered and reconnected too.
    before = len(upstream.connections)
    upstream.close_all(1001)
    wait_for(lambda: len(upstream.connections) > before and upstream.open_connections(), timeout=10, what="a reconnect after Close")
    assert srv.metric("tickwire_upstream_connections_up") == 1
    sub.close()


def test_rotation_switches_without_gap_or_duplicate(upstream, tickwire):
    srv = tickwire(upstream, "--upstream-rotate", "2s", streams="btcusdt@ticker")
    sub = Subscriber(srv)
    upstream.start_feed(rate=100)
    wait_for(lambda: srv.metric("tickwire_upstream_rotations_total") >= 2, timeout=15, what="two rotations")
    upstream.stop_feed()
    last = upstream.feed_next - 1
    got = sub.until(lambda m: m["type"] == "MarketData" and m["data"]["timestamp"] == last, what="the feed's last event")
    times = [m["data"]["timestamp"] for m in got if m["type"] == "MarketData"]
    first = times[0]
    assert times == list(range(first, last + 1)), "gap or duplicate around a rotation"
    assert len(upstream.connections) >= 3
    # The rotated-out connections were closed by tickwire with 1000, not dropped.
    closed = [c.closed_by_client for c in upstream.connections[:2]]
    assert closed == [1000, 1000], closed
    assert srv.metric("tickwire_upstream_reconnects_total") == 0
    assert events_metric(srv, "duplicate") >= 0
    sub.close()


def test_stale_symbol_and_recovery(upstream, tickwire):
    srv = tickwire(upstream, "--upstream-stale", "1s", streams="btcusdt@ticker")
    sub = Subscriber(srv, "/ws?symbols=BTCUSDT")
    upstream.start_feed(rate=20)
    sub.until(lambda m: m["type"] == "MarketData", what="data before the stall")
    assert health(srv)["upstream"]["stale_symbols"] == []
    upstream.stall()
    got = sub.until(lambda m: m["type"] == "Error", timeout=10, what="FEED_STALE")
    stale = got[-1]["data"]
    assert stale["code"] == "FEED_STALE" and stale["symbol"] == "BTCUSDT"
    assert stale["details"]["stale_after_ms"] == 1000 and stale["details"]["age_ms"] >= 1000
    h = health(srv)
    assert h["status"] == "degraded" and h["upstream"]["state"] == "stale" and h["upstream"]["stale_symbols"] == ["BTCUSDT"]
    assert srv.metric('tickwire_upstream_symbol_stale{symbol="BTCUSDT"}') == 1
    assert srv.metric('tickwire_upstream_symbol_age_seconds{symbol="BTCUSDT"}') >= 1
    upstream.resume()
    got = sub.until(lambda m: m["type"] == "MarketData", timeout=10, what="data after the stall")
    notices = [m["data"] for m in got if m["type"] == "Error"]
    assert [n["code"] for n in notices] == ["FEED_RECOVERED"] and notices[0]["symbol"] == "BTCUSDT"
    assert notices[0]["details"]["stale_for_ms"] >= 1000
    wait_for(lambda: health(srv)["status"] == "ok", what="health ok again")
    assert health(srv)["upstream"]["stale_symbols"] == []
    assert srv.metric('tickwire_upstream_symbol_stale{symbol="BTCUSDT"}') == 0
    upstream.stop_feed()
    sub.close()


def test_symbol_named_in_url_but_never_sent_goes_stale(upstream, tickwire):
    srv = tickwire(upstream, "--upstream-stale", "1s", streams="btcusdt@ticker/solusdt@ticker")
    upstream.start_feed(rate=20)
    wait_for(lambda: health(srv)["upstream"]["stale_symbols"] == ["SOLUSDT"], timeout=10, what="SOLUSDT stale")
    upstream.stop_feed()


def test_bad_upstream_flags_are_refused(tmp_path):
    import subprocess
    from wsharness import BIN
    for args, needle in [(["--upstream", "http://example.com/x"], "ws://"),
                         (["--upstream", "ws://127.0.0.1:1/x", "--upstream-rotate", "25h"], "--upstream-rotate"),
                         (["--upstream", "ws://127.0.0.1:1/x", "--upstream-stale", "0.1s"], "--upstream-stale")]:
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=20)
        assert r.returncode == 64 and needle in r.stderr, (args, r.stderr)


def test_latency_from_upstream_event_to_subscriber(upstream, tickwire):
    """Measured and printed (pytest -s shows it), never asserted: timing depends on the machine."""
    srv = tickwire(upstream, streams="btcusdt@ticker")
    sub = Subscriber(srv)
    upstream.start_feed(rate=200)
    received = {}
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        m = sub.frames.message()
        if m["type"] == "MarketData":
            received[m["data"]["timestamp"]] = time.time_ns()
    upstream.stop_feed()
    lat = sorted((received[e] - upstream.sent[e]) / 1e6 for e in received if e in upstream.sent)
    assert lat, "no events measured"
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"\nupstream -> subscriber latency over {len(lat)} events at 200/s (debug build): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    sub.close()


def make_certificate(directory):
    import subprocess
    cert, key = directory / "upstream.crt", directory / "upstream.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_upstream(tmp_path):
    import ssl
    cert, key = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake = FakeUpstream(tls=context)
    fake.cert = cert
    yield fake
    fake.close()


def test_wss_upstream_verified_against_the_ca_file(tls_upstream, tickwire):
    srv = tickwire(tls_upstream, "--upstream-ca-file", str(tls_upstream.cert))
    sub = Subscriber(srv)
    tls_upstream.replay_fixture()
    got = sub.until(lambda m: m["type"] == "MarketData", what="data over wss")
    assert got[-1]["data"]["symbol"] == "BTCUSDT"
    tls_upstream.ping(b"tls-ping")
    wait_for(lambda: b"tls-ping" in tls_upstream.pongs, what="a pong over TLS")
    sub.close()


def test_wss_upstream_with_an_untrusted_certificate_is_refused(tmp_path, tls_upstream):
    # Verification is on: the system store does not know this self-signed certificate.
    srv = Process(tmp_path, "--workers", "1", "--upstream", tls_upstream.url())
    try:
        wait_for(lambda: tls_upstream.tls_failures >= 1, what="the TLS handshake to be refused")
        assert not tls_upstream.open_connections()
        wait_for(lambda: "TLS with localhost" in srv.log_path.read_text(), what="the refusal logged")
        assert health(srv)["upstream"]["state"] == "down"
    finally:
        srv.stop()
