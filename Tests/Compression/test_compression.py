"""permessage-deflate (RFC 7692) on /ws, over real sockets against a real tickwire binary:
negotiation, broadcasts compressed once and shared, the minimum size, compressed client
messages, and the limits on what a client's compressed message may inflate to."""
import json
import pathlib
import socket
import struct
import sys
import zlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import Process, upgrade, wait_for  # noqa: E402

OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")


def deflate(data):
    # One message, no context takeover: a fresh raw deflate stream, its sync-flush tail cut.
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload):
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


class Client:
    """A /ws connection that records each frame's RSV1 bit."""

    def __init__(self, srv, headers=(OFFER,), path="/ws"):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        self.frames, self.response = upgrade(self.sock, path, headers)

    def frame(self):
        f = self.frames
        f._need(2)
        rsv1 = bool(f.buf[0] & 0x40)
        opcode, payload = f.read()
        return opcode, rsv1, payload

    def message(self):
        """(JSON, whether it came compressed), answering pings."""
        while True:
            opcode, rsv1, payload = self.frame()
            if opcode == 9:
                self.frames.send(10, payload)
                continue
            if opcode == 8:
                return {"close": struct.unpack(">H", payload[:2])[0]}, False
            if opcode == 1:
                return json.loads(inflate(payload) if rsv1 else payload), rsv1

    def until(self, kind):
        while True:
            msg, compressed = self.message()
            if msg.get("type") == kind or "close" in msg:
                return msg, compressed

    def send_compressed(self, opcode, data):
        """A masked frame with RSV1 set and `data` deflated."""
        payload = deflate(data)
        f = self.frames
        mask = b"\x11\x22\x33\x44"
        n = len(payload)
        head = bytes([0x80 | 0x40 | opcode])
        head += bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        f.sock.sendall(head + mask + masked)

    def close(self):
        self.sock.close()


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


def market(symbol, pad=0):
    data = {"symbol": symbol, "price": 50123.45, "price_change_24h": 812.5, "price_change_percent_24h": 1.65,
            "volume_24h": 123456.789, "high_24h": 50500.0, "low_24h": 49100.0, "timestamp": 1764547200000}
    if pad:
        data["note"] = "x" * pad
    return {"type": "MarketData", "data": data}


def test_negotiated_only_when_offered_and_allowed(make):
    srv = make("--workers", "1")
    c = Client(srv)
    value = c.response.get("sec-websocket-extensions", "")
    assert value.startswith("permessage-deflate")
    assert "server_no_context_takeover" in value and "client_no_context_takeover" in value
    c.close()
    plain = Client(srv, headers=())
    assert "sec-websocket-extensions" not in plain.response
    plain.close()
    assert srv.metric("tickwire_deflate_sessions_total") == 1

    off = make("--workers", "1", "--compression", "off")
    c = Client(off)
    assert "sec-websocket-extensions" not in c.response
    c.close()


def test_broadcast_compressed_once_and_identical_to_plain(make):
    srv = make("--workers", "1")
    zipped = [Client(srv) for _ in range(3)]
    plain = Client(srv, headers=())
    for c in zipped + [plain]:
        c.until("Connected")
    srv.publish(market("BTCUSDT"))
    got_plain, compressed = plain.until("MarketData")
    assert not compressed
    for c in zipped:
        got, compressed = c.until("MarketData")
        assert compressed, "a deflate subscriber got the broadcast uncompressed"
        assert got == got_plain
    # One compression for three subscribers: the compressed bytes are shared.
    assert srv.metric("tickwire_deflate_frames_compressed_total") == 1
    for c in zipped + [plain]:
        c.close()


def test_two_reactors_deliver_the_same_messages(make):
    srv = make("--workers", "2")
    clients = [Client(srv) for _ in range(6)]
    for c in clients:
        c.until("Connected")
    srv.publish([market(f"SYM{i}USDT") for i in range(20)])
    for c in clients:
        symbols = [c.until("MarketData")[0]["data"]["symbol"] for _ in range(20)]
        assert symbols == [f"SYM{i}USDT" for i in range(20)]
    assert 20 <= srv.metric("tickwire_deflate_frames_compressed_total") <= 40
    for c in clients:
        c.close()


def test_small_messages_go_uncompressed(make):
    srv = make("--workers", "1", "--compression-min-size", "4096")
    c = Client(srv)
    c.until("Connected")
    srv.publish(market("BTCUSDT"))
    msg, compressed = c.until("MarketData")
    assert msg["data"]["symbol"] == "BTCUSDT" and not compressed
    srv.publish(market("ETHUSDT", pad=8000))
    msg, compressed = c.until("MarketData")
    assert msg["data"]["symbol"] == "ETHUSDT" and compressed
    c.close()


def test_compressed_client_message_is_understood(make):
    srv = make("--workers", "1")
    c = Client(srv)
    c.until("Connected")
    c.send_compressed(1, json.dumps({"type": "Subscribe", "data": {"channels": ["prices"], "symbols": ["ETHUSDT"]}}).encode())
    confirmed, _ = c.until("SubscriptionConfirmed")
    assert confirmed["data"]["symbols"] == ["ETHUSDT"]
    srv.publish([market("BTCUSDT"), market("ETHUSDT")])
    msg, _ = c.until("MarketData")
    assert msg["data"]["symbol"] == "ETHUSDT"
    assert srv.metric("tickwire_deflate_messages_inflated_total") == 1
    c.close()


def test_decompression_bomb_closes_with_1009(make):
    srv = make("--workers", "1", "--max-message-size", "65536")
    c = Client(srv)
    c.until("Connected")
    # 16 MiB of spaces deflates to about 16 KiB: far under the limit on the wire.
    c.send_compressed(1, b" " * (16 << 20))
    msg, _ = c.until("never")
    assert msg == {"close": 1009}
    # The server is fine and serves the next client.
    d = Client(srv)
    assert d.until("Connected")[0]["type"] == "Connected"
    d.close()


def test_corrupt_deflate_data_closes_with_1007(make):
    srv = make("--workers", "1")
    c = Client(srv)
    c.until("Connected")
    f = c.frames
    payload = b"\xff\xff\xff\xff\xff\xff"   # block type 3: invalid
    mask = b"\x00\x00\x00\x00"
    f.sock.sendall(bytes([0x80 | 0x40 | 1, 0x80 | len(payload)]) + mask + payload)
    msg, _ = c.until("never")
    assert msg == {"close": 1007}


def test_rsv1_without_negotiation_is_a_protocol_error(make):
    srv = make("--workers", "1")
    c = Client(srv, headers=())
    c.until("Connected")
    c.send_compressed(1, b'{"type":"Ping"}')
    msg, _ = c.until("never")
    assert msg == {"close": 1002}
    wait_for(lambda: srv.metric("tickwire_deflate_messages_inflated_total") == 0, what="no inflation counted")
