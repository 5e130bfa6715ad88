"""Abuse limits at their edges, over real sockets against a real tickwire binary: Origin,
connections and new connections per address, connections per account, inbound message
rate, symbols per subscription. Each refusal must say which limit, and be counted."""
import json
import pathlib
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import BIN, Closed, Process, UpgradeRefused, upgrade, wait_for  # noqa: E402
from test_auth import claims, hs256  # noqa: E402


def open_ws(srv, path="/ws", headers=()):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    frames, _ = upgrade(sock, path, headers)
    assert frames.message()["type"] == "Connected"
    return sock, frames


def refusal(srv, path="/ws", headers=()):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        with pytest.raises(UpgradeRefused) as e:
            upgrade(sock, path, headers)
        return e.value
    finally:
        sock.close()


@pytest.fixture
def make(tmp_path):
    started = []

    def start(*args):
        s = Process(tmp_path, "--no-simulator", *args)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def test_only_allowed_origins_open_websockets(make):
    srv = make("--allowed-origin", "https://app.example.com", "--allowed-origin", "https://desk.example.com")
    e = refusal(srv, headers=[("Origin", "https://evil.example.net")])
    assert e.status == 403 and e.body["limit"] == "origin" and "evil.example.net" in e.body["message"]
    open_ws(srv, headers=[("Origin", "https://desk.example.com")])
    open_ws(srv)   # no Origin: not a browser page
    assert srv.metric('tickwire_limit_refusals_total{limit="origin"}') == 1


def test_connections_per_address_at_the_edge_and_after_a_close(make):
    srv = make("--max-connections-per-ip", "3")
    held = [open_ws(srv) for _ in range(3)]
    e = refusal(srv)
    assert e.status == 429 and e.body["limit"] == "connections_per_ip" and e.headers["retry-after"] == "5"
    # Other client addresses behind a proxy on this host have budgets of their own.
    open_ws(srv, headers=[("X-Forwarded-For", "203.0.113.7")])
    held[0][0].close()
    wait_for(lambda: _opens(srv), what="the freed connection to be counted back")
    assert srv.metric('tickwire_limit_refusals_total{limit="connections_per_ip"}') >= 1


def _opens(srv):
    try:
        open_ws(srv)
        return True
    except UpgradeRefused:
        return False


def test_new_connections_per_address_per_second(make):
    srv = make("--max-new-connections-per-ip", "2")
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(open_ws(srv))
        except UpgradeRefused as e:
            assert e.status == 429 and e.body["limit"] == "new_connections_per_ip"
            outcomes.append(None)
    # Five tries within two seconds at most: at most four pass, and something was refused.
    assert outcomes.count(None) >= 1 and len([o for o in outcomes if o]) >= 2


def test_connections_per_account(tmp_path, make):
    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef-test-secret")
    srv = make("--auth", "required", "--jwt-secret-file", str(secret), "--max-connections-per-account", "2")
    token_a, token_b = hs256(claims(sub="acc-a")), hs256(claims(sub="acc-b"))
    held = [open_ws(srv, f"/ws?token={token_a}") for _ in range(2)]
    e = refusal(srv, f"/ws?token={token_a}")
    assert e.status == 429 and e.body["limit"] == "connections_per_account" and "acc-a" in e.body["message"]
    open_ws(srv, f"/ws?token={token_b}")
    held[1][0].close()
    wait_for(lambda: _opens_path(srv, f"/ws?token={token_a}"), what="acc-a's freed connection")


def _opens_path(srv, path):
    try:
        open_ws(srv, path)
        return True
    except UpgradeRefused:
        return False


def test_message_rate_is_answered_then_a_flood_is_closed(make):
    srv = make("--max-messages-per-second", "5")
    _, frames = open_ws(srv)
    for _ in range(30):
        frames.send_json({"type": "Ping"})
    got = [frames.message() for _ in range(11)]
    pongs = [m for m in got if m["type"] == "Pong"]
    errors = [m for m in got if m["type"] == "Error"]
    assert len(errors) == 1 and errors[0]["data"]["code"] == "RATE_LIMITED", got
    assert 10 <= len(pongs) <= 11   # the two-second burst, plus what refilled meanwhile
    # A peer that keeps flooding is closed with 1008.
    for _ in range(200):
        frames.send_json({"type": "Ping"})
    with pytest.raises(Closed) as closed:
        while True:
            frames.message()
    assert closed.value.code == 1008
    assert srv.metric("tickwire_flood_closes_total") == 1


def test_symbols_per_subscription(make):
    srv = make("--max-symbols", "3")
    _, frames = open_ws(srv)
    frames.send_json({"type": "Subscribe", "data": {"symbols": ["A", "B", "C", "D"]}})
    m = frames.message()
    assert m["type"] == "Error" and m["data"]["code"] == "INVALID_SUBSCRIPTION" and "at most 3" in json.dumps(m)
    frames.send_json({"type": "Subscribe", "data": {"symbols": ["A", "B", "C"]}})
    assert frames.message()["type"] == "SubscriptionConfirmed"


@pytest.mark.parametrize("args, says", [
    (["--allowed-origin", "app.example.com"], "--allowed-origin takes origins like"),
    (["--max-connections-per-ip=-1"], "--max-connections-per-ip must be 0"),
    (["--max-messages-per-second", "0"], "--max-messages-per-second must be between"),
])
def test_limit_flags_say_what_to_fix(args, says):
    r = subprocess.run([BIN, "--port", "0", *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64 and says in r.stderr, r.stderr
