#!/usr/bin/env python3
"""Writes the seed corpora of Fuzz/corpus/<target>/ from the unit tests' inputs.

    python3 Fuzz/make-seeds.py

The seeds are committed; rerun this after adding inputs here (it rewrites only its own
files, named seed-*). Regression inputs from crashes live beside them as crash-*.
"""
import hashlib
import os
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(target, items):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith("seed-"):
            os.remove(os.path.join(folder, name))
    for data in items:
        data = data.encode() if isinstance(data, str) else bytes(data)
        name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(items)} seeds")


# ---- HTTP request heads (Tests/WireProtocolTests/HTTPHeadParserTests.swift) -----------------
upgrade = ("GET /ws?since=5 HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n")
http = [
    upgrade,
    "GET /health HTTP/1.1\r\nHost: a\r\n\r\nPOST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
    "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1 extra\r\n\r\n",
    "GET http://x/ HTTP/1.1\r\n\r\n",
    "GET / HTTP/2.0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.1\nHost: a\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "\x16\x03\x01\x02",
    "GET / HTTP/1.1\r\nHost",
    "GET / HTTP/1.1\r\n" + "".join(f"X-{i}: v\r\n" for i in range(9)) + "\r\n",
    "GET /" + "a" * 120,
    "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\n"
    "X-Forwarded-For: 10.0.0.1\r\nIf-None-Match: \"e\"\r\nSec-WebSocket-Protocol: p\r\nSec-WebSocket-Extensions: e\r\n\r\n",
]
write("http-head", http)


# ---- WebSocket frames (Tests/WireProtocolTests/FrameDecoderTests.swift, WebSocketSessionTests.swift) --
def frame(opcode, payload, fin=True, rsv=0, masked=True):
    payload = payload.encode() if isinstance(payload, str) else bytes(payload)
    out = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        out.append(bit | n)
    elif n <= 0xFFFF:
        out += bytes([bit | 126, n >> 8, n & 0xFF])
    else:
        out += bytes([bit | 127]) + n.to_bytes(8, "big")
    if masked:
        out += MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    else:
        out += payload
    return bytes(out)


def deflated(data, wbits=15):
    """A permessage-deflate payload (RFC 7692 §7.2.1): raw deflate, sync flush, tail removed."""
    data = data.encode() if isinstance(data, str) else bytes(data)
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# The harness's byte 0: bit 0 client role, bits 1-3 the message limit (6: 1 MiB, 4: 1000 bytes),
# bit 4 through WebSocketSession, bit 5 the session sent Close first, bit 6 permessage-deflate.
# Bytes 1-2 seed the chunking.
SERVER, CLIENT, SMALL, SESSION, CLOSE_FIRST, DEFLATE = 6 << 1, 6 << 1 | 1, 4 << 1, 0x10, 0x20, 0x40
streams = [
    frame(1, "Hello, Tickwire ✓"),
    b"".join(frame(1 if i % 2 == 0 else 2, f"message {i}") for i in range(10)) + frame(9, "ping"),
    frame(2, bytes((i * 31) & 0xFF for i in range(126))),
    frame(2, bytes((i * 31) & 0xFF for i in range(1000))),
    frame(1, "frag", fin=False) + frame(9, "p1") + frame(0, "men", fin=False) + frame(10, b"") + frame(0, "ted"),
    frame(1, b"") + frame(2, b"", fin=False) + frame(0, b""),
    frame(1, "x", rsv=4), frame(3, b""), frame(0xB, b""), frame(1, "x", masked=False),
    frame(9, bytes(126)), frame(9, "x", fin=False), frame(0, "x"), frame(1, "a", fin=False) + frame(1, "b"),
    bytes([0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]),
    bytes([0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]),
    frame(1, "κόσμε".encode() + bytes([0xF4, 0x90, 0x80, 0x80]), fin=False),
    frame(1, b"hello\xc0" + b"a" * 94)[:14],
    frame(1, b"\xe2", fin=False) + frame(0, b"\x82", fin=False) + frame(0, b"\xac"),
    frame(1, b"\xe2\x82"), frame(2, b"\xff\xfe\xc0"),
    frame(8, b""), frame(8, b"\x03\xe8"), frame(8, b"\x03"), frame(8, b"\x03\xed"), frame(8, b"\x03\xe8\xc0"),
    frame(8, b"\x03\xe8bye"), frame(8, b"\x0f\xa0") + frame(9, b""),
    frame(9, "hb") + frame(1, "hi") + frame(10, b""),
    frame(1, "ok") + frame(1, "x", rsv=4) + frame(1, "never"),
]
frames = []
for i, s in enumerate(streams):
    seed = bytes([i, 7 * i & 0xFF])
    frames.append(bytes([SERVER]) + seed + s)
    frames.append(bytes([SERVER | SESSION]) + seed + s)
frames.append(bytes([SERVER | SESSION | CLOSE_FIRST, 1, 2]) + frame(1, "x") + frame(9, b"") + frame(8, b"\x03\xe8"))
frames.append(bytes([SMALL, 3, 4]) + frame(2, bytes(600), fin=False) + frame(0, bytes(600)))
for s in (frame(1, "Hi", masked=False), frame(2, bytes(200), masked=False), frame(9, b"", masked=False),
          frame(1, "x"), frame(8, b"\x03\xe8", masked=False)):
    frames.append(bytes([CLIENT, 5, 6]) + s)
    frames.append(bytes([CLIENT | SESSION, 5, 6]) + s)
# permessage-deflate (Tests/WireProtocolTests/DeflateSessionTests.swift): RSV1 (rsv=4) on first frames.
hello = deflated("Hello, compressed ✓")
fragmented = deflated("tick 43250.5 BTCUSDT; " * 50)
third = len(fragmented) // 3
deflate_streams = [
    frame(1, hello, rsv=4) + frame(1, "plain") + frame(2, deflated(bytes([1, 2, 3])), rsv=4) + frame(1, b"\x00", rsv=4),
    frame(1, fragmented[:third], fin=False, rsv=4) + frame(9, "hb") + frame(0, fragmented[third:2 * third], fin=False)
    + frame(0, fragmented[2 * third:]),
    frame(1, hello[:3], fin=False, rsv=4) + frame(0, hello[3:], rsv=4),
    frame(9, b"", rsv=4), frame(1, hello, rsv=2), frame(1, hello, rsv=5),
    frame(2, deflated(bytes(1 << 20)), rsv=4), frame(2, b"\xff\xff\xff", rsv=4),
    frame(1, deflated(b"a\xff"), rsv=4), frame(2, bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), rsv=4),
]
for i, s in enumerate(deflate_streams):
    seed = bytes([i, 11 * i & 0xFF])
    frames.append(bytes([SERVER | DEFLATE]) + seed + s)
    frames.append(bytes([SERVER | SESSION | DEFLATE]) + seed + s)
    frames.append(bytes([SMALL | SESSION | DEFLATE]) + seed + s)
write("frame-decoder", frames)

# ---- permessage-deflate (Tests/WireProtocolTests/Deflate*Tests.swift) --------------------------
# Byte 0 % 3: 0 negotiation (the rest is a Sec-WebSocket-Extensions value, bytes 1-2 the split
# into two lines), 1 inflate (bytes 1-2 the limit), 2 round trip (byte 1 % 8 + 8 window bits,
# byte 2 % 11 - 1 the level).
offers = [
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=8, "
    "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, permessage-deflate",
    "permessage-deflate; server_max_window_bits=\"1\\2\"; client_max_window_bits=10",
    "x-webkit-deflate-frame; a=\"x,y\" ,, PerMessage-Deflate;Server_Max_Window_Bits=15",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover, permessage-deflate; foo",
    "permessage-deflate; server_max_window_bits=08, permessage-deflate; server_max_window_bits=\"10",
]
compressed = [
    bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), bytes([0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00]),
    bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), b"\x00", b"", bytes([0x07]), deflated(bytes(1 << 16)),
    deflated('{"type":"MarketData","seq":1,"data":{"symbol":"BTCUSDT","price":43250.5,"volume":1523.75}}'),
    deflated("tick 43250.5 BTCUSDT; " * 50, wbits=9),
]
messages = ["", "Hello", '{"type":"MarketData","seq":1,"data":{"symbol":"BTCUSDT","price":43250.5,"bid":43250.0}}',
            bytes(3000), bytes(range(256)) * 4]
deflate_seeds = [bytes([0, 0, 7 * i]) + o.encode() for i, o in enumerate(offers)]
deflate_seeds += [bytes([1, 0x80 | i, 0]) + c for i, c in enumerate(compressed)] + [bytes([1, 0, 40]) + deflated(bytes(1 << 16))]
deflate_seeds += [bytes([2, bits, level]) + (m.encode() if isinstance(m, str) else m)
                  for bits, level in ((7, 0), (0, 2), (1, 7), (4, 10)) for m in messages]
write("deflate", deflate_seeds)

# ---- UTF-8 (Tests/WireProtocolTests/EncoderAndCodecTests.swift); byte 0 seeds the chunking ----
texts = ["", "ascii only, long enough to use the 8-byte path", "κόσμε", "€𝄞ü", "\U0010FFFF", "\uD7FF\uE000",
         "a€𝄞ü-κόσμε-0123456789"]
invalid = [[0x80], [0xBF], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80],
           [0xF0, 0x80, 0x80, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xFF],
           list(b"abcdefgh") + [0xFE], [0xF0, 0x9D], [0xF0, 0x9D, 0x84, 0x9E]]
write("utf8", [bytes([i]) + t.encode() for i, t in enumerate(texts)] + [bytes([i + 9]) + bytes(b) for i, b in enumerate(invalid)])

# ---- JSON (Tests/TradingStreamTests/TradingStreamTests.swift) ---------------------------------
valid = ['{}', '[]', '{"a":1}', ' {"a" : [1, -2.5e3, true, false, null, "x\\n\\u00e9\\ud83d\\ude00"]} ',
         '"just a string"', "0", "-0.0", "1E+2", '{"nested":{"deep":[[[{}]]]}}', '{"κόσμε":"€"}',
         '{"type":"Subscribe","data":{"channels":["prices","tr\\u0061des"],"since":12345678901,"x":-3,"f":1.5},"type2":null}',
         '{"type":"MarketData","data":{"symbol":"X","price":1}}',
         '[{"type":"MarketData","data":{"symbol":"X","price":1}},{"type":"BotStatusUpdate","data":{"status":"running"}}]',
         '{"type":"Subscribe","data":{"channels":["prices"],"symbols":["BTCUSDT"],"resume":{"epoch":"e","since":5}}}',
         "[" * 60 + "]" * 60]
rejected = ["", "{", "}", '{"a"}', '{"a":}', '{"a":1,}', "[1,]", "01", "1.", ".5", "-", "1e", "+1",
            "tru", "nul", '"unterminated', '"tab\there"', '"\\x"', '"\\u12G4"', "[1] 2", "{'a':1}", "NaN",
            "[" * 100 + "]" * 100]
write("json", valid + rejected + [b'"\xff"', b'"\xed\xa0\x80"'])

# ---- Base64 (Tests/WireProtocolTests/EncoderAndCodecTests.swift) -----------------------------
write("base64", ["", "f", "fo", "foo", "foob", "fooba", "foobar", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                 "Zm9vYmFy", "Zg=", "Zh==", "Zm9=", "Z===", "Zm9v!", "====", "Zg==Zg==", "dGhlIHNhbXBsZSBub25jZQ==",
                 "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", bytes(range(256))])

# ---- Query strings (the /ws query of README.md and PROTOCOL.md); 0x00 separates pair fields --
write("query", ["since=5", "channels=prices,trades&symbols=BTCUSDT,ETHUSDT", "a=1&b=x%2Cy", "epoch=e1&since=42",
                "q=a+b%20c&q=last", "=v&k=&&x", "bad=%zz&ok=1", "k=%E2%82%AC", "k=%C0%80",
                b"channels\x00prices,trades\x00symbols\x00BTC USDT", b"k\x00\xe2\x82\xac&=%\x00x"])
