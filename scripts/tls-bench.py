#!/usr/bin/env python3
"""TLS against plain on one release binary: idle memory per /ws connection and server CPU
per echo round trip. Reports, never fails on a number (performance targets live here,
not in tests).

    scripts/tls-bench.py [--binary .build/release/tickwire] [--idle 3000] [--echo 30000]
"""
import argparse, base64, os, socket, ssl, subprocess, tempfile, time

parser = argparse.ArgumentParser()
parser.add_argument("--binary", default=".build/release/tickwire")
parser.add_argument("--idle", type=int, default=3000, help="idle connections to hold")
parser.add_argument("--echo", type=int, default=30000, help="echo round trips (64-byte messages)")
args = parser.parse_args()

work = tempfile.mkdtemp(prefix="tickwire-tls-bench-")
cert, key = os.path.join(work, "c.pem"), os.path.join(work, "k.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
               check=True, capture_output=True)
client = ssl.create_default_context(cafile=cert)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tls, workers, *extra):
    port = free_port()
    argv = [args.binary, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-simulator", *extra]
    if tls:
        argv += ["--tls-cert", cert, "--tls-key", key]
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def connect(port, tls, path):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        s = client.wrap_socket(s, server_hostname="localhost")
    k = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    data = b""
    want = b"Connected" if path == "/ws" else b"\r\n\r\n"
    while want not in data:
        data += s.recv(65536)
    return s


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def idle(tls):
    proc, port = start(tls, 2)
    warm = [connect(port, tls, "/ws") for _ in range(200)]   # allocator caches settle first
    for s in warm:
        s.close()
    time.sleep(1.5)
    before = rss(proc.pid)
    held = [connect(port, tls, "/ws") for _ in range(args.idle)]
    time.sleep(2.5)
    grown = (rss(proc.pid) - before) / args.idle
    for s in held:
        s.close()
    proc.terminate(); proc.wait()
    return grown


def echo(tls):
    proc, port = start(tls, 1, "--echo")
    s = connect(port, tls, "/echo")
    frame = bytes([0x81, 0x80 | 64]) + b"\0\0\0\0" + b"x" * 64
    c0 = cpu(proc.pid)
    for _ in range(args.echo):
        s.sendall(frame)
        got = 0
        while got < 66:
            got += len(s.recv(4096))
    used = (cpu(proc.pid) - c0) / args.echo
    proc.terminate(); proc.wait()
    return used * 1e6


plain_idle, tls_idle = idle(False), idle(True)
print(f"idle /ws connections ({args.idle}): RSS per connection plain {plain_idle:.0f} B, TLS {tls_idle:.0f} B")
plain_echo, tls_echo = echo(False), echo(True)
print(f"echo 64 B x {args.echo}: server CPU per round trip plain {plain_echo:.2f} us, TLS {tls_echo:.2f} us ({tls_echo / plain_echo:.2f}x)")
