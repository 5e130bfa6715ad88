"""What the Python tests of a real tickwire binary share: condition waits, free loopback
ports, a server process, and a minimal WebSocket client over any socket (plain or TLS)."""
import base64
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess
import time
import urllib.request

BIN = os.environ.get("TICKWIRE_BIN", str(pathlib.Path(__file__).resolve().parents[2] / ".build/debug/tickwire"))


def wait_for(condition, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Process:
    """A tickwire on a free loopback port; its output goes to `log_path`."""

    def __init__(self, tmp, *args):
        self.port = free_port()
        self.log_path = tmp / f"server-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN, "--host", "127.0.0.1", "--port", str(self.port), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: listening(self.port) or self.proc.poll() is not None, what="the server to listen")
        assert self.proc.poll() is None, self.log_path.read_text()

    def request(self, method, path, body=None, headers=None):
        """(status, headers, parsed JSON or bytes), for any status."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                status, hdrs, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, raw = e.code, dict(e.headers), e.read()
        try:
            return status, hdrs, json.loads(raw)
        except ValueError:
            return status, hdrs, raw

    def publish(self, messages):
        status, _, body = self.request("POST", "/api/publish", json.dumps(messages).encode(), {"Content-Type": "application/json"})
        assert status == 202, body
        return body

    def metric(self, name):
        _, _, raw = self.request("GET", "/metrics")
        for line in raw.decode().splitlines():
            if line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class UpgradeRefused(Exception):
    def __init__(self, status, headers, body):
        super().__init__(f"HTTP {status}: {body!r}")
        self.status, self.headers, self.body = status, headers, body


def upgrade(sock, path="/ws", headers=()):
    """Upgrades `sock`; returns (Frames, response headers) or raises UpgradeRefused."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the upgrade"
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    response = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if status != 101:
        length = int(response.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        raise UpgradeRefused(status, response, json.loads(rest[:length]) if length else b"")
    return Frames(sock, rest), response


class Frames:
    def __init__(self, sock, buffered=b""):
        self.sock, self.buf = sock, bytearray(buffered)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def read(self):
        self._need(2)
        opcode, length = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        offset = 2
        if length == 126:
            self._need(4); length = struct.unpack(">H", self.buf[2:4])[0]; offset = 4
        elif length == 127:
            self._need(10); length = struct.unpack(">Q", self.buf[2:10])[0]; offset = 10
        self._need(offset + length)
        payload = bytes(self.buf[offset:offset + length])
        del self.buf[:offset + length]
        return opcode, payload

    def message(self):
        """The next text message as JSON (pings are answered, pongs skipped); raises
        `Closed` with the code when a Close arrives."""
        while True:
            opcode, payload = self.read()
            if opcode == 1:
                return json.loads(payload)
            if opcode == 8:
                raise Closed(struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005)
            if opcode == 9:
                self.send(10, payload)

    def send_json(self, value):
        self.send(1, json.dumps(value).encode())

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        head += bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        keystream = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + mask + masked)


class Closed(Exception):
    def __init__(self, code):
        super().__init__(f"closed with {code}")
        self.code = code
