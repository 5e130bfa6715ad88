"""The `max_bandwidth` token claim (PROTOCOL.md "Authentication", "Bandwidth"): a signed
HS256 token caps its own connection, the lower of the claim and --max-bandwidth wins, and
a claim out of range is refused at the upgrade. Real sockets, a real tickwire binary fed
through POST /api/publish."""
import base64
import hashlib
import hmac
import json
import pathlib
import socket
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from wsharness import Process, UpgradeRefused, upgrade  # noqa: E402
from test_max_frequency import Client, assert_seq_ordered, padded_prices_with_trades  # noqa: E402

SECRET = b"0123456789abcdef0123456789abcdef-claim-secret"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(**extra):
    claims = {"sub": "acc-a", "exp": int(time.time()) + 600, **extra}
    body = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    return body + "." + b64(hmac.new(SECRET, body.encode(), hashlib.sha256).digest())


@pytest.fixture
def make(tmp_path):
    (tmp_path / "secret").write_bytes(SECRET)
    started = []

    def start(*args):
        s = Process(tmp_path, "--no-simulator", "--workers", "2", "--auth", "required",
                    "--jwt-secret-file", str(tmp_path / "secret"), *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def bearer(t):
    return [("Authorization", "Bearer " + t)]


def flood(srv):
    """1,500 padded prices (~450 KB, a minute at 8 KiB/s) with a trade every 100."""
    batch = padded_prices_with_trades()
    srv.publish(batch)


def received_all(c):
    return any(m["data"]["price"] == 1499.0 for m in c.of("MarketData")) and len(c.of("TradeExecuted")) == 15


def assert_capped(c):
    prices = [m["data"]["price"] for m in c.of("MarketData")]
    assert [m["data"]["price"] for m in c.of("TradeExecuted")] == [float(i) for i in range(0, 1500, 100)]
    assert prices == sorted(prices), "an older price after a newer one"
    assert len(prices) < 300, f"{len(prices)} of 1500 prices: nothing was conflated"
    assert_seq_ordered(c)


def test_the_claim_caps_its_own_connection_only(make):
    srv = make()   # no --max-bandwidth: only the claim caps
    capped = Client(srv, headers=bearer(token(max_bandwidth=8192)))
    free = Client(srv, headers=bearer(token()))
    for c in (capped, free):
        c.until("Connected")
        c.subscribe(channels=["prices", "trades"])
    flood(srv)
    free.drain_until(received_all, timeout=20, what="every message on the uncapped connection")
    capped.drain_until(received_all, timeout=20, what="the last price and every trade on the capped connection")
    assert_capped(capped)
    # The connection without the claim is not held back: every price, none conflated.
    assert len(free.of("MarketData")) == 1500
    assert srv.metric("tickwire_bandwidth_limited_total") > 0
    for c in (capped, free):
        c.close()


def test_the_lower_of_claim_and_flag_wins(make):
    srv = make("--max-bandwidth", "8KiB")
    # A generous claim cannot lift the server's cap.
    c = Client(srv, headers=bearer(token(max_bandwidth=16 << 20)))
    c.until("Connected")
    c.subscribe(channels=["prices", "trades"])
    flood(srv)
    c.drain_until(received_all, timeout=20, what="the last price and every trade")
    assert_capped(c)
    c.close()


def test_a_claim_out_of_range_is_refused(make):
    srv = make()
    for bad in (0, 100, -8192, 1.5, "8192", True, 1 << 40):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        with pytest.raises(UpgradeRefused) as e:
            upgrade(sock, "/ws", bearer(token(max_bandwidth=bad)))
        sock.close()
        assert e.value.status == 401, bad
        assert e.value.body["code"] == "malformed" and "max_bandwidth" in e.value.body["message"], (bad, e.value.body)
    # In range, the same token shape is let in.
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    frames, _ = upgrade(sock, "/ws", bearer(token(max_bandwidth=1024)))
    assert frames.message()["type"] == "Connected"
    sock.close()
