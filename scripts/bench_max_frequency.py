#!/usr/bin/env python3
"""Server CPU for a 500 updates/s MarketData feed to many subscribers, at full rate and at
max_frequency 4 (issue 12, "Measure"), and whether every subscriber ends on the feed's
last value. Subscribers read and discard bytes (one selector loop), so the generator
stays cheap; the server's CPU comes from /proc/PID/stat over the measured window.

  scripts/bench_max_frequency.py BIN [--subscribers 200] [--seconds 8] [--rate 500]
"""
import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "support"))
from wsharness import free_port, listening, upgrade, wait_for  # noqa: E402


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(binary, subscribers, seconds, rate, query):
    port = free_port()
    server = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--no-simulator", "--workers", "2",
                               "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), what="the server")
        sel = selectors.DefaultSelector()
        socks = []
        for _ in range(subscribers):
            s = socket.create_connection(("127.0.0.1", port))
            frames, _ = upgrade(s, "/ws?" + query)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, frames)
            socks.append(s)
        received = [0]
        tail = {}
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                for key, _ in sel.select(0.1):
                    try:
                        data = key.fileobj.recv(1 << 18)
                    except BlockingIOError:
                        continue
                    received[0] += len(data)
                    tail[key.fileobj] = (tail.get(key.fileobj, b"") + data)[-400:]

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        time.sleep(1)
        period, per_batch = 0.02, max(1, int(rate * 0.02))
        price = 0
        start_cpu, start = cpu_seconds(server.pid), time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            batch = []
            for _ in range(per_batch):
                price += 1
                batch.append({"type": "MarketData", "data": {"symbol": "BTCUSDT", "price": float(price), "price_change_24h": 1.0,
                                                             "price_change_percent_24h": 0.1, "volume_24h": 10.0, "timestamp": 1764547200000}})
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/publish", json.dumps(batch, separators=(",", ":")).encode(), {"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
            next_at += period
            time.sleep(max(0, next_at - time.monotonic()))
        window = time.monotonic() - start
        cpu = cpu_seconds(server.pid) - start_cpu
        needle = f'"price":{float(price)}'.encode()
        try:
            wait_for(lambda: all(needle in tail.get(s, b"") for s in socks), timeout=20, what="every subscriber's last value")
            last_ok = True
        except AssertionError:
            last_ok = False
        stop.set()
        t.join(2)
        for s in socks:
            s.close()
        return {"query": query, "subscribers": subscribers, "feed_per_s": price / window, "window_s": round(window, 2),
                "server_cpu_percent": round(100 * cpu / window, 1), "bytes_received_per_s": int(received[0] / window),
                "every_subscriber_ends_on_last_value": last_ok}
    finally:
        server.terminate()
        server.wait(10)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("--subscribers", type=int, default=200)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rate", type=float, default=500)
    a = p.parse_args()
    for query in ("channels=prices", "channels=prices&max_frequency=4"):
        print(json.dumps(run(a.binary, a.subscribers, a.seconds, a.rate, query)), flush=True)


if __name__ == "__main__":
    main()
