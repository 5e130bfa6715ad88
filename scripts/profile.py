#!/usr/bin/env python3
"""`make profile`: user-space instructions per broadcast delivery, counted by callgrind.

Wall-clock benchmarks on a small shared VM swing by tens of percent; callgrind counts
instructions, which repeat to within a fraction of a percent for the same binary and
workload, whatever else the machine is doing. So this is how a change to the hot path is
compared with the build before it.

For each binary: start it under `valgrind --tool=callgrind`, connect N subscribers, publish
K trades (POST /api/publish, batches of 20), wait until every subscriber has every frame,
stop it. Do it for K and for 2K; the difference, divided by N*K, is the cost of one
delivery with connection set-up, start-up and shutdown cancelled out. Only loopback is
loaded, and every wait has a deadline.

    scripts/profile.py [--subscribers 200] [--messages 500] BINARY [BINARY...]
"""
import argparse
import base64
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import free_port, wait_for_port  # noqa: E402


def subscribe(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?channels=trades HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("upgrade refused")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
    s.setblocking(False)
    return s, head.split(b"\r\n\r\n", 1)[1]


class Frames:
    """Counts server frames whose payload mentions TradeExecuted, from a raw byte stream."""

    def __init__(self, initial):
        self.buffer = bytearray(initial)
        self.trades = 0

    def feed(self, data):
        self.buffer += data
        while len(self.buffer) >= 2:
            length = self.buffer[1] & 0x7F
            header = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length = int.from_bytes(self.buffer[2:4], "big")
                header = 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length = int.from_bytes(self.buffer[2:10], "big")
                header = 10
            if len(self.buffer) < header + length:
                return
            if b"TradeExecuted" in self.buffer[header:header + length]:
                self.trades += 1
            del self.buffer[:header + length]


def publish(port, count):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    sent = 0
    while sent < count:
        n = min(20, count - sent)
        body = json.dumps([{"type": "TradeExecuted", "data": {"symbol": "BTCUSDT", "side": "BUY", "price": 42000.5 + i,
                                                              "quantity": 0.01, "pnl": 1.25, "id": f"t{sent + i}"}}
                           for i in range(n)]).encode()
        s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("publisher connection closed")
            response += chunk
        if not response.startswith(b"HTTP/1.1 202"):
            raise RuntimeError(response[:200])
        sent += n
    s.close()


def stripped(binary, workdir):
    """A copy without DWARF: valgrind 3.19 cannot read the DWARF 5 that Swift 6 writes.
    The symbol table stays, so callgrind_annotate still names every function."""
    copy = os.path.join(workdir, f"{os.path.basename(binary)}-{abs(hash(os.path.realpath(binary))) % 100000}")
    subprocess.run(["objcopy", "--strip-debug", binary, copy], check=True)
    return copy


def run(binary, subscribers, messages, workdir):
    port = free_port()
    out = os.path.join(workdir, f"callgrind.{port}")
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", stripped(binary, workdir),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-simulator",
                               "--log-level", "error", "--history", str(max(1000, messages * 2))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_port(port, seconds=120):
            raise RuntimeError(f"{binary} did not start under valgrind")
        selector = selectors.DefaultSelector()
        streams = []
        for _ in range(subscribers):
            s, rest = subscribe(port)
            f = Frames(rest)
            streams.append(f)
            selector.register(s, selectors.EVENT_READ, f)
        publish(port, messages)
        deadline = time.monotonic() + 600
        while any(f.trades < messages for f in streams):
            if time.monotonic() > deadline:
                raise RuntimeError("subscribers did not receive every message within 600 s")
            for key, _ in selector.select(timeout=1):
                data = key.fileobj.recv(1 << 20)
                if data:
                    key.data.feed(data)
        for key in list(selector.get_map().values()):
            key.fileobj.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = open(out).read()
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no instruction total in {out}")
    return int(m.group(1)), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--keep", help="folder to keep the callgrind files in (for callgrind_annotate)")
    opts = parser.parse_args()
    workdir = opts.keep or tempfile.mkdtemp(prefix="tickwire-profile-")
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for binary in opts.binaries:
        one, _ = run(binary, opts.subscribers, opts.messages, workdir)
        two, out = run(binary, opts.subscribers, opts.messages * 2, workdir)
        deliveries = opts.subscribers * opts.messages
        rows.append((binary, (two - one) / deliveries, one, two, out))
        print(f"profile: {binary}: {(two - one) / deliveries:.1f} instructions per delivery", flush=True)
    print()
    print(f"| binary | instructions per delivery | total, {opts.messages} msgs | total, {opts.messages * 2} msgs |")
    print("|---|---|---|---|")
    for binary, per, one, two, _ in rows:
        print(f"| {binary} | {per:,.1f} | {one:,} | {two:,} |")
    print(f"\n{opts.subscribers} subscribers; callgrind files in {workdir} (callgrind_annotate FILE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
