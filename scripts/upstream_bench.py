#!/usr/bin/env python3
"""Upstream feed numbers (issue 13), against the fake Binance-format upstream of
Tests/Upstream on loopback. Reports, never fails on a number.

  latency:  tickers at --rate events/s for --seconds; a /ws subscriber in another process
            timestamps each MarketData; latency = its receive time - the fake's send time
            (both CLOCK_REALTIME on this host), matched by event time. p50/p99/p99.9/max.
  cluster:  (--cluster) the latency through two nodes on one redis-server started here on a
            free loopback port (and stopped): node A ingests the upstream (--redis), the
            subscriber is on node B (--no-simulator), so each event goes A -> Redis -> B.
  capacity: --events tickers written as fast as the socket takes them on one upstream
            connection; capacity = events / time until tickwire_upstream_events_total
            counted them all (mapped and published, no subscriber).

  .venv/bin/python scripts/upstream_bench.py --bin .build/release/tickwire
  .venv/bin/python scripts/upstream_bench.py --bin .build/release/tickwire --cluster --only latency

On a machine busy with other work (compilers), the p99 measures the scheduler's wake-up delay of
the three processes, not tickwire: run it as `chrt -f 20 .venv/bin/python scripts/upstream_bench.py`
(the server, fake upstream, subscriber and redis-server inherit the real-time class) to see the
server's own path.
"""
import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "support"))
sys.path.insert(0, str(ROOT / "Tests" / "Upstream"))


def subscriber(port, seconds):
    """Child process: prints one line per MarketData: event time and receive time."""
    from wsharness import upgrade
    sock = socket.create_connection(("127.0.0.1", port), timeout=seconds + 10)
    frames, _ = upgrade(sock, "/ws?channels=prices")
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    out = []
    while time.monotonic() < deadline:
        try:
            opcode, payload = frames.read()
        except (socket.timeout, EOFError):
            break
        now = time.time_ns()
        if opcode == 1:
            m = json.loads(payload)
            if m["type"] == "MarketData":
                out.append(f"{m['data']['timestamp']} {now}")
    print("\n".join(out), flush=True)


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


@contextlib.contextmanager
def redis_server(tmp):
    """A redis-server on a free loopback port, without persistence; stopped on exit."""
    from wsharness import free_port, listening, wait_for
    binary = os.environ.get("REDIS_SERVER", shutil.which("redis-server") or "/usr/bin/redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port) or proc.poll() is not None, what="redis-server to listen")
        assert proc.poll() is None, f"{binary} exited with {proc.returncode}"
        yield f"redis://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def latency(binary, rate, seconds, workers, cluster=False):
    from fake_upstream import FakeUpstream
    from wsharness import Process, wait_for
    fake = FakeUpstream()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = pathlib.Path(tmp)
        upstream = ["--upstream", fake.url("btcusdt@ticker")]
        common = ["--workers", str(workers), "--log-level", "warning"]
        nodes = []
        if cluster:
            redis = stack.enter_context(redis_server(tmp))
            nodes.append(Process(tmp, *common, "--redis", redis, *upstream))
            srv = Process(tmp, *common, "--redis", redis, "--no-simulator")
            nodes.append(srv)
        else:
            srv = Process(tmp, *common, *upstream)
            nodes.append(srv)
        try:
            wait_for(lambda: fake.open_connections(), what="the upstream connection")
            child = subprocess.Popen([sys.executable, __file__, "--subscriber", str(srv.port), str(seconds + 2)],
                                     stdout=subprocess.PIPE, text=True)
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.2)   # the subscription is in force before the first event
            fake.start_feed(rate=rate)
            time.sleep(seconds)
            fake.stop_feed()
            lines = child.communicate(timeout=seconds + 20)[0].split()
        finally:
            for n in nodes:
                n.stop()
            fake.close()
    received = {int(lines[i]): int(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}
    lat = sorted((received[e] - fake.sent[e]) / 1e6 for e in received if e in fake.sent)
    sent = len(fake.sent)
    where = "two-node cluster (ingest on A, subscriber on B, one redis-server)" if cluster else "single node"
    print(f"latency ({where}): {rate}/s for {seconds}s, {workers} worker(s): sent {sent}, received {len(lat)}; "
          f"p50 {percentile(lat, 0.5):.3f} ms, p99 {percentile(lat, 0.99):.3f} ms, "
          f"p99.9 {percentile(lat, 0.999):.3f} ms, max {lat[-1]:.3f} ms")


def capacity(binary, events, workers):
    from fake_upstream import FakeUpstream, frame, ticker
    from wsharness import Process, wait_for
    fake = FakeUpstream()
    blob = b"".join(frame(1, ticker("btcusdt", 1_800_000_000_000 + i).encode()) for i in range(events))
    with tempfile.TemporaryDirectory() as tmp:
        srv = Process(pathlib.Path(tmp), "--workers", str(workers), "--upstream", fake.url("btcusdt@ticker"), "--log-level", "warning")
        try:
            wait_for(lambda: fake.open_connections(), what="the upstream connection")
            conn = fake.open_connections()[0]
            start = time.monotonic()
            conn.send(blob)
            written = time.monotonic()
            metric = 'tickwire_upstream_events_total{type="24hrTicker"}'
            def counted():
                # The scrape is answered by the edge loop that is busy mapping: a slow answer is no failure.
                try:
                    return srv.metric(metric) >= events
                except OSError:
                    return False
            wait_for(counted, timeout=600, what="every event counted")
            done = time.monotonic()
        finally:
            srv.stop()
            fake.close()
    print(f"capacity: {events} tickers ({len(blob) / events:.0f} bytes each) on one connection, {workers} worker(s), no subscriber: "
          f"{events / (done - start):,.0f} events/s (the fake finished writing after {written - start:.2f} s, tickwire counted all after {done - start:.2f} s)")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--subscriber":
        return subscriber(int(sys.argv[2]), float(sys.argv[3]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / ".build/release/tickwire"))
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", choices=["latency", "capacity"])
    ap.add_argument("--cluster", action="store_true", help="latency through two nodes and a redis-server on loopback")
    args = ap.parse_args()
    os.environ["TICKWIRE_BIN"] = args.bin
    import wsharness
    wsharness.BIN = args.bin
    if args.only != "capacity":
        latency(args.bin, args.rate, args.seconds, args.workers, cluster=args.cluster)
    if args.only != "latency":
        capacity(args.bin, args.events, args.workers)


if __name__ == "__main__":
    main()
