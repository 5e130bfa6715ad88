#!/usr/bin/env python3
"""Server CPU and bytes on the wire per broadcast with permessage-deflate against plain, in
the same run (issue 12, "Measure"): N subscribers (1,000 and 10,000 by default) each get
every MarketData broadcast; the server's CPU comes from /proc/PID/stat from the first
publish until every subscriber's bytes stop growing. Subscribers live in child processes
(at most 8,000 sockets each: 20,000 open files per process), read and discard bytes.

  scripts/bench_deflate.py BIN [--subscribers 1000,10000] [--broadcasts 1000] [--rate 500]

First, server memory per idle connection with and without permessage-deflate (--idle N).
Then one line per (subscribers, mode): CPU per delivery (deliveries as /metrics counts
them), bytes per delivery, and the deflate/plain ratios; "conflated" > 0 means subscribers
fell behind and the run understates the work. The rate is capped so that Python
subscribers can read every delivery (--deliveries-per-s). Every step has a deadline.
"""
import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "support"))
from wsharness import free_port, listening, upgrade, wait_for  # noqa: E402

PER_PROCESS = 8000
OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover; client_no_context_takeover")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscriber(port, count, deflate, limit, source):
    """Child: opens `count` /ws connections from the loopback address `source` (each child its
    own, so that runs one after another never run out of ephemeral ports: the previous run's
    sockets sit in TIME_WAIT), then prints its received byte count every 0.2 s until stdin
    closes or `limit` seconds pass."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
        _, response = upgrade(s, "/ws?channels=prices", [OFFER] if deflate else [])
        if deflate and "permessage-deflate" not in response.get("sec-websocket-extensions", ""):
            print(json.dumps({"error": "deflate not negotiated"}), flush=True)
            return
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    sel.register(sys.stdin, selectors.EVENT_READ)
    print(json.dumps({"connected": len(socks)}), flush=True)
    received, last_report, deadline = 0, 0.0, time.monotonic() + limit
    while time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            if key.fileobj is sys.stdin:
                return
            try:
                data = key.fileobj.recv(1 << 18)
            except BlockingIOError:
                continue
            received += len(data)
        if time.monotonic() - last_report >= 0.2:
            print(json.dumps({"bytes": received}), flush=True)
            last_report = time.monotonic()


def market(i):
    return {"type": "MarketData", "data": {"symbol": "BTCUSDT", "price": 43000.0 + (i % 977) * 0.25, "price_change_24h": 812.5,
                                           "price_change_percent_24h": 1.93, "volume_24h": 18234.772, "high_24h": 43950.0,
                                           "low_24h": 41870.5, "timestamp": 1764547200000 + i}}


def rss(pid):
    """(VmRSS, RssAnon) of a process, in bytes."""
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0]) * 1024
    return out["VmRSS"], out["RssAnon"]


def start_server(binary, compression):
    port = free_port()
    server = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--no-simulator", "--workers", "2",
                               "--log-level", "warning", "--compression", "on" if compression else "off"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return port, server


def spawn_subscribers(port, count, deflate, limit):
    """Child processes holding `count` /ws connections between them, each from its own address."""
    children = []
    while count > 0:
        n = min(count, PER_PROCESS)
        children.append(subprocess.Popen([sys.executable, __file__, "--child", str(port), str(n), "1" if deflate else "0", str(limit),
                                          f"127.0.0.{next(SOURCES)}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        count -= n
    return children


def stop(children, server):
    """Children first (closing stdin ends them), then the server; each bounded."""
    for child in children:
        try:
            child.stdin.close()
            child.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()


def idle(binary, count, deflate, limit):
    """Server memory per idle /ws connection that negotiated permessage-deflate, or plain:
    RSS after `count` connections are open and quiet, less RSS before."""
    port, server = start_server(binary, compression=True)
    children = []
    try:
        wait_for(lambda: listening(port), what="the server")
        time.sleep(0.5)
        before = rss(server.pid)
        children = spawn_subscribers(port, count, deflate, limit)
        for child in children:
            sel = selectors.DefaultSelector()
            sel.register(child.stdout, selectors.EVENT_READ)
            if not sel.select(limit):
                raise TimeoutError("a subscriber process went quiet")
            report = json.loads(child.stdout.readline() or "{}")
            if "connected" not in report:
                raise RuntimeError(f"a subscriber process failed: {report}")
        time.sleep(1.0)
        after = rss(server.pid)
        return {"idle_connections": count, "mode": "deflate" if deflate else "plain",
                "rss_bytes_per_connection": round((after[0] - before[0]) / count, 1),
                "anon_bytes_per_connection": round((after[1] - before[1]) / count, 1)}
    finally:
        stop(children, server)


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


SOURCES = iter(range(2, 250))   # 127.0.0.N for the children, a fresh one per child


def measure(binary, subscribers, deflate, broadcasts, rate, limit):
    port, server = start_server(binary, compression=deflate)
    children = []
    try:
        wait_for(lambda: listening(port), what="the server")
        children = spawn_subscribers(port, subscribers, deflate, limit)
        latest = [0] * len(children)

        def poll(child_index, timeout):
            """Reads the child's next line (bounded); returns the decoded report."""
            child = children[child_index]
            sel = selectors.DefaultSelector()
            sel.register(child.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError("a subscriber process went quiet")
            line = child.stdout.readline()
            if not line:
                raise RuntimeError("a subscriber process exited")
            return json.loads(line)

        for k in range(len(children)):
            report = poll(k, limit)
            if "error" in report:
                raise RuntimeError(report["error"])
        sent_before = metric(port, "websocket_messages_sent_total")
        publish_url = f"http://127.0.0.1:{port}/api/publish"
        batch = max(1, rate // 50)
        before = cpu_seconds(server.pid)
        started = time.monotonic()
        sent = 0
        while sent < broadcasts and time.monotonic() - started < limit:
            body = json.dumps([market(sent + j) for j in range(min(batch, broadcasts - sent))]).encode()
            urllib.request.urlopen(urllib.request.Request(publish_url, body, {"Content-Type": "application/json"}), timeout=10).read()
            sent += min(batch, broadcasts - sent)
            time.sleep(max(0.0, started + sent / rate - time.monotonic()))
        # Delivered: every child's byte count unchanged for a second (bounded by `limit`).
        stable_since, totals = time.monotonic(), None
        while time.monotonic() - stable_since < 1.0 and time.monotonic() - started < limit:
            for k in range(len(children)):
                report = poll(k, 5)
                if "bytes" in report:
                    latest[k] = report["bytes"]
            if latest != totals:
                totals, stable_since = list(latest), time.monotonic()
        cpu = cpu_seconds(server.pid) - before
        wire = sum(latest)
        # Deliveries as the server counts them: a subscriber too slow for the rate is conflated
        # (market data), and its deliveries then fall short of broadcasts x subscribers.
        delivered = metric(port, "websocket_messages_sent_total") - sent_before
        conflated = metric(port, "tickwire_slow_consumer_conflated_total")
        return {"subscribers": subscribers, "mode": "deflate" if deflate else "plain", "broadcasts": sent, "rate": rate,
                "deliveries": int(delivered), "conflated": int(conflated),
                "cpu_s_per_1000_broadcasts": round(cpu * 1000 / sent, 4),
                "cpu_us_per_delivery": round(cpu * 1e6 / max(delivered, 1), 3),
                "bytes_per_delivery": round(wire / max(delivered, 1), 1)}
    finally:
        stop(children, server)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        subscriber(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", float(sys.argv[5]), sys.argv[6])
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("--subscribers", default="1000,10000")
    p.add_argument("--broadcasts", type=int, default=1000)
    p.add_argument("--rate", type=int, default=500, help="broadcasts per second (lowered for many subscribers, see --deliveries-per-s)")
    p.add_argument("--deliveries-per-s", type=int, default=200_000,
                   help="most deliveries per second the Python subscribers are asked to read: the rate is capped at this / subscribers")
    p.add_argument("--limit", type=float, default=120, help="seconds any one run may take")
    p.add_argument("--idle", type=int, default=16000, help="idle connections for the memory rows (0: skip)")
    a = p.parse_args()
    if a.idle:
        for deflate in (False, True):
            print(json.dumps(idle(a.binary, a.idle, deflate, a.limit)), flush=True)
    for n in (int(x) for x in a.subscribers.split(",")):
        rate = max(1, min(a.rate, a.deliveries_per_s // n))
        broadcasts = max(50, min(a.broadcasts, rate * 20))   # at most about 20 s per run
        plain = measure(a.binary, n, False, broadcasts, rate, a.limit)
        deflate = measure(a.binary, n, True, broadcasts, rate, a.limit)
        for r in (plain, deflate):
            print(json.dumps(r))
        print(json.dumps({"subscribers": n,
                          "cpu_ratio_deflate_vs_plain": round(deflate["cpu_us_per_delivery"] / max(plain["cpu_us_per_delivery"], 1e-9), 3),
                          "wire_ratio_deflate_vs_plain": round(deflate["bytes_per_delivery"] / plain["bytes_per_delivery"], 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
