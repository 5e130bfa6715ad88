#!/usr/bin/env python3
"""Security benches (issue 11), each comparing runs made in the same invocation:

  upgrades  WebSocket upgrades with --auth off vs HS256 / ES256 / RS256 tokens (one token per mode,
            so after the first the server's verified-token cache answers; HS256-new: a new
            token every upgrade, each parsed and its signature checked): upgrades/s and
            server CPU per upgrade, each server pinned to the same CPU, the modes alternating
            in rounds;
  fanout    broadcast to N idle subscribers over TLS vs plain: server CPU per delivery and the
            subscribers' p99 delivery latency (the subscribers run in their own process);
  flood     one connection flooding past --max-messages-per-second while N subscribers receive
            a broadcast: their p99 latency with and without the flood.

Writes <out>/security.json and prints a summary. Reports, never fails on a number. Only
loopback is used; every phase is bounded in count and time.

    scripts/bench_security.py [--binary .build/release/tickwire] [--out .build/bench] [--quick]
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import free_port, stop_process, wait_for_port  # noqa: E402

OPEN_FILES = 20_000   # the per-process ceiling on this machine
SECRET = b"bench-secret-0123456789abcdef0123456789"


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(OPEN_FILES, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def p99(values):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


class Server:
    """tickwire pinned to one CPU, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, binary, cpu, *extra):
        self.port = free_port()
        argv = ["taskset", "-c", str(cpu), binary, "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--no-simulator", "--log-level", "error", *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_open_files)
        if not wait_for_port(self.port, 20):
            self.stop()
            raise RuntimeError("tickwire did not start: " + " ".join(argv))

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        stop_process(self.proc)


# --- tokens (minted here, as Tests/Auth does) ---

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der):
    """An ECDSA DER signature as JWS's 64-byte r || s."""
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(32, b"\0")
        i += 2 + n
    return out


def tokens(work):
    """{mode: (server flags, token or None)} for off, HS256, ES256 and RS256."""
    secret = os.path.join(work, "secret")
    open(secret, "wb").write(SECRET)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", os.path.join(work, "ec.key"))
    run("openssl", "pkey", "-in", os.path.join(work, "ec.key"), "-pubout", "-out", os.path.join(work, "ec.pub"))
    run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", os.path.join(work, "rsa.key"))
    run("openssl", "pkey", "-in", os.path.join(work, "rsa.key"), "-pubout", "-out", os.path.join(work, "rsa.pub"))
    claims = b64(json.dumps({"sub": "acc-bench", "exp": int(time.time()) + 3600}).encode())

    def fresh_hs256(i):
        c = b64(json.dumps({"sub": "acc-bench", "exp": int(time.time()) + 3600, "jti": i}).encode())
        body = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + c
        return body + "." + b64(hmac.new(SECRET, body.encode(), hashlib.sha256).digest())

    def signed(alg, sign):
        body = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + claims
        return body + "." + b64(sign(body.encode()))

    def openssl_sign(key):
        return lambda data: subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data, capture_output=True, check=True).stdout

    return {
        "off": ([], None),
        "HS256": (["--auth", "required", "--jwt-secret-file", secret], signed("HS256", lambda d: hmac.new(SECRET, d, hashlib.sha256).digest())),
        # Every upgrade with a token the server has not seen (a reconnect storm after another
        # node failed): no help from the server's cache of verified tokens.
        "HS256-new": (["--auth", "required", "--jwt-secret-file", secret], fresh_hs256),
        "ES256": (["--auth", "required", "--jwt-public-key-file", os.path.join(work, "ec.pub")],
                  signed("ES256", lambda d: der_to_raw(openssl_sign(os.path.join(work, "ec.key"))(d)))),
        "RS256": (["--auth", "required", "--jwt-public-key-file", os.path.join(work, "rsa.pub")],
                  signed("RS256", openssl_sign(os.path.join(work, "rsa.key")))),
    }


def upgrade_request(token, path="/ws"):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{auth}"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def upgrades(binary, cpu, modes, count, seconds, rounds=5):
    """Serial upgrades (connect, upgrade, read the 101 and Connected, close) per auth mode.
    Every mode's server runs at once, all pinned to the same CPU, and the modes take turns
    in `rounds` batches, so a change in the machine's load falls on every mode alike."""
    servers = {}
    try:
        for mode, (flags, _) in modes.items():
            servers[mode] = Server(binary, cpu, *flags)
        totals = {mode: {"done": 0, "refused": 0, "wall": 0.0, "cpu": 0.0} for mode in modes}
        deadline = time.monotonic() + seconds * len(modes)
        for _ in range(rounds):
            for mode, (_, token) in modes.items():
                server, t = servers[mode], totals[mode]
                batch = count // rounds
                # A callable mints a new token per upgrade, before the clock starts.
                requests = [upgrade_request(token(t["done"] + i)) for i in range(batch)] if callable(token) else None
                request = None if requests else upgrade_request(token)
                c0, t0 = server.cpu(), time.monotonic()
                for i in range(batch):
                    if time.monotonic() > deadline:
                        break
                    if requests:
                        request = requests[i]
                    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    s.sendall(request)
                    data = b""
                    # An upgrade is done at Connected; a refusal at the end of its answer's head.
                    while b"Connected" not in data and not (b"\r\n\r\n" in data and not data.startswith(b"HTTP/1.1 101")):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if not data.startswith(b"HTTP/1.1 101"):
                        t["refused"] += 1
                    s.close()
                    t["done"] += 1
                t["wall"] += time.monotonic() - t0
                t["cpu"] += server.cpu() - c0
    finally:
        for server in servers.values():
            server.stop()
    out = {}
    for mode, t in totals.items():
        done = max(1, t["done"])
        out[mode] = {"upgrades": t["done"], "refused": t["refused"], "per_second": t["done"] / max(t["wall"], 1e-9),
                     "server_cpu_us_per_upgrade": t["cpu"] / done * 1e6}
        print(f"  upgrades {mode}: {out[mode]['per_second']:.0f}/s, server CPU {out[mode]['server_cpu_us_per_upgrade']:.1f} us per upgrade, "
              f"refused {t['refused']}", flush=True)
    return out


# --- subscribers: a separate process (its own 20,000 open files), asyncio protocols ---

class Subscriber(asyncio.Protocol):
    """Reads server frames; records each MarketData's latency from its `t` (ns, CLOCK_MONOTONIC)."""

    def __init__(self, shared):
        self.shared = shared
        self.buffer = bytearray()
        self.upgraded = False
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(upgrade_request(None))

    def data_received(self, data):
        now = time.monotonic_ns()
        b = self.buffer
        b += data
        if not self.upgraded:
            end = b.find(b"\r\n\r\n")
            if end < 0:
                return
            del b[:end + 4]
            self.upgraded = True
        while len(b) >= 2:
            n, h = b[1] & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    return
                n, h = int.from_bytes(b[2:4], "big"), 4
            elif n == 127:
                if len(b) < 10:
                    return
                n, h = int.from_bytes(b[2:10], "big"), 10
            if len(b) < h + n:
                return
            payload = bytes(b[h:h + n])
            del b[:h + n]
            if not self.ready.done() and b'"Connected"' in payload:
                self.ready.set_result(True)
            i = payload.find(b'"t":')
            if i >= 0 and b'"BENCH' in payload:
                j = i + 4
                while payload[j:j + 1] == b" ":
                    j += 1
                k = j
                while k < len(payload) and payload[k:k + 1].isdigit():
                    k += 1
                if k > j:
                    self.shared["latencies"].append((now - int(payload[j:k])) / 1e3)
                    self.shared["deliveries"] += 1

    def connection_lost(self, exc):
        self.shared["lost"] += 1
        if not self.ready.done():
            self.ready.set_result(False)


async def hold_subscribers(port, count, tls_ca, seconds, status):
    """Opens `count` subscribers, prints READY, collects for `seconds`, prints the results as JSON."""
    shared = {"latencies": [], "deliveries": 0, "lost": 0}
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
    gate = asyncio.Semaphore(64)
    opened = []

    async def one():
        async with gate:
            try:
                _, p = await asyncio.wait_for(loop.create_connection(lambda: Subscriber(shared), "127.0.0.1", port,
                                                                     ssl=context, server_hostname="localhost" if context else None), 20)
                if await asyncio.wait_for(p.ready, 20):
                    opened.append(p)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 300)
    print(json.dumps({"ready": len(opened)}), flush=True)
    # The parent publishes now; it says when it has stopped (a line on stdin), bounded by `seconds`.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await asyncio.wait_for(reader.readline(), seconds)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(1.0)   # the last messages' deliveries
    lat = shared["latencies"]
    print(json.dumps({"deliveries": shared["deliveries"], "lost": shared["lost"], "p50_us": statistics.median(lat) if lat else None,
                      "p99_us": p99(lat)}), flush=True)
    for p in opened:
        p.transport.abort()


class SubscriberProcess:
    def __init__(self, cpu, port, count, tls_ca, seconds):
        argv = ["taskset", "-c", str(cpu), sys.executable, os.path.abspath(__file__), "--subscribers-role",
                "--port", str(port), "--count", str(count), "--seconds", str(seconds)] + (["--ca", tls_ca] if tls_ca else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.ready = json.loads(line)["ready"] if line else 0

    def finish(self, timeout):
        try:
            self.proc.stdin.write("done\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.proc.stdout.readline()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return json.loads(line) if line else {}


def publish(port, rate, seconds, tls_ca=None):
    """POST /api/publish at `rate` messages/s for `seconds` on one keep-alive connection
    (TLS on a TLS port: it takes no plain HTTP)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_ca:
        s = ssl.create_default_context(cafile=tls_ca).wrap_socket(s, server_hostname="localhost")
    sent, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        due = int(rate * (time.monotonic() - t0)) - sent
        if due <= 0:
            time.sleep(0.001)
            continue
        body = json.dumps({"type": "MarketData", "data": {"symbol": "BENCH", "price": 1.0, "t": time.monotonic_ns(), "n": sent}}, separators=(",", ":")).encode()
        s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("publish connection closed")
            data += chunk
        sent += 1
    s.close()
    return sent


def broadcast(binary, cpus, subscribers, rate, seconds, tls=None, flood=False, extra=()):
    """One server, `subscribers` in their own process, a publisher (and maybe a flooder) here."""
    flags = list(extra) + (["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else [])
    server = Server(binary, cpus[0], *flags)
    flood_stats = {}
    try:
        subs = SubscriberProcess(cpus[1], server.port, subscribers, tls[0] if tls else None, seconds + 30)
        # The flooder is its own process: in this one it would starve the publisher (the GIL).
        flooder = subprocess.Popen(["taskset", "-c", str(cpus[1]), sys.executable, os.path.abspath(__file__), "--flood-role",
                                    "--port", str(server.port), "--seconds", str(seconds + 5)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) if flood else None
        if flooder:
            time.sleep(0.5)
        c0 = server.cpu()
        published = publish(server.port, rate, seconds, tls[0] if tls else None)
        used = server.cpu() - c0
        if flooder:
            flooder.stdin.close()   # its signal to stop
            try:
                flood_stats.update(json.loads(flooder.stdout.readline() or "{}"))
                flooder.wait(15)
            except subprocess.TimeoutExpired:
                flooder.kill()
                flooder.wait()
        got = subs.finish(30)
    finally:
        server.stop()
    deliveries = got.get("deliveries", 0)
    r = {"subscribers": subs.ready, "published": published, "deliveries": deliveries, "expected": published * subs.ready,
         "server_cpu_s": used, "server_cpu_us_per_delivery": used / deliveries * 1e6 if deliveries else None,
         "p50_us": got.get("p50_us"), "p99_us": got.get("p99_us"), "lost": got.get("lost")}
    if flood:
        r["flood"] = flood_stats
    return r


FLOOD_RATE = 50_000   # Ping frames/s: 500x the default --max-messages-per-second (100)


def flood_loop(port, seconds):
    """One abusive /ws connection sending Ping frames at FLOOD_RATE (paced in 10 ms batches,
    so the flooder does not take a whole CPU and push other load onto the server's); it
    reconnects when closed (1008). Bounded by `seconds`, or until stdin closes. Prints its
    counts as JSON."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    frame = bytes([0x81, 0x80 | 15]) + b"\0\0\0\0" + b'{"type":"Ping"}'
    batch = frame * (FLOOD_RATE // 100)
    stats = {"rate": FLOOD_RATE, "sent": 0, "connections": 0, "closed_by_server": 0}
    t0 = time.monotonic()
    while not stop.is_set() and time.monotonic() - t0 < seconds:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(upgrade_request(None))
            s.setblocking(False)
            stats["connections"] += 1
            pending = b""
            while not stop.is_set() and time.monotonic() - t0 < seconds:
                tick = time.monotonic()
                pending += batch
                try:
                    n = s.send(pending)
                    pending = pending[n:]
                    stats["sent"] += n // len(frame)
                except BlockingIOError:
                    pending = pending[-len(batch):]   # a full socket drops the backlog, as a flooder would
                try:
                    if s.recv(65536) == b"":
                        stats["closed_by_server"] += 1
                        break
                except BlockingIOError:
                    pass
                time.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))
            s.close()
        except (OSError, ConnectionError):
            stats["closed_by_server"] += 1
            time.sleep(0.01)
    stats["achieved_per_second"] = stats["sent"] / (time.monotonic() - t0)
    print(json.dumps(stats), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=".build/release/tickwire")
    parser.add_argument("--out", default=".build/bench")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke test of the harness)")
    parser.add_argument("--only", default="upgrades,fanout,flood")
    # /proc CPU time counts 10 ms ticks: 20,000 upgrades of ~100 us make 200 ticks per mode.
    parser.add_argument("--upgrades", type=int, default=20_000, help="upgrades per auth mode (default 20000)")
    parser.add_argument("--fanout", default="", help="subscribers:rate pairs, comma-separated (default 1000:20,10000:2)")
    parser.add_argument("--subscribers-role", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flood-role", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--count", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--ca")
    opts = parser.parse_args()
    if opts.subscribers_role:
        raise_open_files()
        asyncio.run(hold_subscribers(opts.port, opts.count, opts.ca, opts.seconds, None))
        return 0
    if opts.flood_role:
        flood_loop(opts.port, opts.seconds)
        return 0

    raise_open_files()
    cpus = (0, 1) if (os.cpu_count() or 1) > 1 else (0, 0)
    work = tempfile.mkdtemp(prefix="tickwire-sec-bench-")
    cert, key = os.path.join(work, "c.pem"), os.path.join(work, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    only = set(opts.only.split(","))
    result = {"binary": opts.binary, "load_average_before": os.getloadavg()}

    if "upgrades" in only:
        print("bench_security: upgrades", flush=True)
        up = upgrades(opts.binary, cpus[0], tokens(work), 300 if opts.quick else opts.upgrades, 30 if opts.quick else 60)
        base = up["off"]["server_cpu_us_per_upgrade"]
        for mode in up:
            up[mode]["cpu_vs_off"] = up[mode]["server_cpu_us_per_upgrade"] / base
        result["upgrades"] = up

    if "fanout" in only:
        sizes = [(200, 20)] if opts.quick else [(1_000, 20), (10_000, 2)]
        if opts.fanout:
            sizes = [tuple(int(x) for x in pair.split(":")) for pair in opts.fanout.split(",")]
        result["fanout"] = {}
        for n, rate in sizes:
            for label, tls in (("plain", None), ("tls", (cert, key))):
                print(f"bench_security: fanout {n} subscribers x {rate} msg/s, {label}", flush=True)
                r = broadcast(opts.binary, cpus, n, rate, 5 if opts.quick else 15, tls=tls)
                result["fanout"][f"{n}-{label}"] = r
                print(f"  {json.dumps(r)}", flush=True)
            p, t = result["fanout"][f"{n}-plain"], result["fanout"][f"{n}-tls"]
            if p["server_cpu_us_per_delivery"] and t["server_cpu_us_per_delivery"]:
                result["fanout"][f"{n}-tls-vs-plain-cpu"] = t["server_cpu_us_per_delivery"] / p["server_cpu_us_per_delivery"]

    if "flood" in only:
        n, rate = (100, 50) if opts.quick else (500, 50)
        result["flood"] = {}
        for label, flood in (("quiet", False), ("flooded", True)):
            print(f"bench_security: flood isolation, {n} subscribers x {rate} msg/s, {label}", flush=True)
            r = broadcast(opts.binary, cpus, n, rate, 5 if opts.quick else 15, flood=flood)
            result["flood"][label] = r
            print(f"  {json.dumps(r)}", flush=True)

    if "flooded" in result.get("flood", {}):
        q, f = result["flood"]["quiet"], result["flood"]["flooded"]
        if q["p99_us"] and f["p99_us"]:
            result["flood"]["p99_flooded_vs_quiet"] = f["p99_us"] / q["p99_us"]
    result["load_average_after"] = os.getloadavg()
    lines = [f"load average before {result['load_average_before']}, after {result['load_average_after']}"]
    for mode, r in result.get("upgrades", {}).items():
        lines.append(f"upgrades {mode}: {r['per_second']:.0f}/s, {r['server_cpu_us_per_upgrade']:.1f} us server CPU each ({r['cpu_vs_off']:.2f}x off)")
    for name, r in result.get("fanout", {}).items():
        if isinstance(r, dict):
            lines.append(f"fanout {name}: {r['deliveries']}/{r['expected']} delivered, {r['server_cpu_us_per_delivery'] or 0:.2f} us server CPU per delivery, "
                         f"p99 {(r['p99_us'] or 0) / 1e3:.1f} ms")
        else:
            lines.append(f"fanout {name}: {r:.2f}x")
    for name, r in result.get("flood", {}).items():
        if isinstance(r, dict):
            lines.append(f"flood {name}: {r['deliveries']}/{r['expected']} delivered, p50 {(r['p50_us'] or 0) / 1e3:.1f} ms, p99 {(r['p99_us'] or 0) / 1e3:.1f} ms"
                         + (f", flooder {r['flood']}" if "flood" in r else ""))
        else:
            lines.append(f"flood {name}: {r:.2f}x")
    print("\n".join(lines))
    os.makedirs(opts.out, exist_ok=True)
    open(os.path.join(opts.out, "security.md"), "w").write("\n".join(lines) + "\n")
    os.makedirs(opts.out, exist_ok=True)
    path = os.path.join(opts.out, "security.json")
    json.dump(result, open(path, "w"), indent=2)
    print(f"bench_security: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
