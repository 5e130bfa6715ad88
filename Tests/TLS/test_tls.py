"""Native TLS against a real tickwire binary, with Python's ssl and openssl s_client as
the peers (scripts/tls-test.sh runs this with TICKWIRE_BIN set).

Each test starts its own server on a free loopback port with a certificate made for it
(openssl req), so reload and failure tests cannot disturb each other."""
import json
import os
import pathlib
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
import wsharness  # noqa: E402
from wsharness import BIN, Frames, free_port, wait_for  # noqa: E402,F401


def make_certificate(directory, name, days=2):
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", str(days), "-subj", f"/CN={name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Server:
    def __init__(self, tmp, *extra):
        self.dir = tmp
        self.cert, self.key = make_certificate(tmp, "serving")
        # The served files are copies, so a test can replace them and send SIGHUP.
        self.served_cert, self.served_key = tmp / "server.crt", tmp / "server.key"
        self.served_cert.write_bytes(self.cert.read_bytes())
        self.served_key.write_bytes(self.key.read_bytes())
        self.port = free_port()
        self.log = open(tmp / "server.log", "wb")
        self.proc = subprocess.Popen([BIN, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2", "--echo",
                                      "--tls-cert", str(self.served_cert), "--tls-key", str(self.served_key), *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._listening, what="the server to listen")

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def context(self, cafile=None, minimum=None, maximum=None, alpn=None):
        ctx = ssl.create_default_context(cafile=str(cafile or self.cert))
        if minimum: ctx.minimum_version = minimum
        if maximum: ctx.maximum_version = maximum
        if alpn: ctx.set_alpn_protocols(alpn)
        return ctx

    def tls(self, **kw):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return self.context(**kw).wrap_socket(raw, server_hostname="localhost")

    def get(self, path):
        with urllib.request.urlopen(f"https://localhost:{self.port}{path}", context=self.context(), timeout=5) as r:
            return r.status, r.read()

    def metric(self, name):
        for line in self.get("/metrics")[1].decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
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


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()


def upgrade(sock, path="/ws"):
    return wsharness.upgrade(sock, path)[0]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_wss_stream_and_https_on_the_same_port(server, version):
    status, body = server.get("/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    s = server.tls(minimum=version, maximum=version, alpn=["http/1.1"])
    assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert s.selected_alpn_protocol() == "http/1.1"
    frames = upgrade(s)
    opcode, payload = frames.read()
    assert opcode == 1 and json.loads(payload)["type"] == "Connected"
    label = "TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
    assert server.metric(f'tickwire_tls_handshakes_total{{version="{label}"}}') >= 1


def test_large_echo_through_a_slow_reader(tmp_path):
    """4 MiB echoed back over TLS, through a 16 KiB server send buffer, to a peer that reads
    slowly: partial writes and held records must deliver every byte, in order."""
    server = Server(tmp_path, "--send-buffer", "16KiB")
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s = server.context().wrap_socket(raw, server_hostname="localhost")
    frames = upgrade(s, "/echo")
    payload = os.urandom(1 << 20) * 1
    for i in range(4):
        frames.send(2, payload[:-1] + bytes([i]))
    for i in range(4):
        time.sleep(0.05)   # a slow reader: the server's socket fills and its records are held
        opcode, echoed = frames.read()
        assert opcode == 2 and echoed == payload[:-1] + bytes([i])
    server.stop()


def test_plain_http_on_the_tls_port_gets_a_400_that_says_why(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert "https://" in body["message"] and "wss://" in body["message"]
    assert server.metric("tickwire_tls_plaintext_requests_total") == 1


def test_old_versions_and_h2_only_and_garbage_are_refused_and_counted(server):
    # TLS 1.1 (openssl s_client: the server must refuse it).
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_1", "-brief"],
                       input=b"", capture_output=True, timeout=10)
    assert r.returncode != 0
    # ALPN offering only h2: a fatal no_application_protocol alert.
    with pytest.raises(ssl.SSLError):
        server.tls(alpn=["h2"])
    # A handshake record header followed by garbage.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x10" + b"\xff" * 16)
        data = s.recv(4096)   # an alert, then EOF
        while data:
            data = s.recv(4096)
    wait_for(lambda: server.metric("tickwire_tls_handshake_failures_total") >= 3, what="three handshake failures counted")
    # The server still serves.
    assert server.get("/health")[0] == 200


def test_a_stalled_handshake_is_closed_at_the_handshake_timeout(tmp_path):
    server = Server(tmp_path, "--handshake-timeout", "500ms")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01")   # the first bytes of a ClientHello, then nothing
            started = time.monotonic()
            data = s.recv(4096)
            while data:
                data = s.recv(4096)
            assert time.monotonic() - started < 3
    finally:
        server.stop()


def test_a_forged_record_closes_only_that_connection(server):
    victim = server.tls()
    frames = upgrade(victim)
    frames.read()
    bystander = upgrade(server.tls())
    bystander.read()
    # An application-data record whose ciphertext was never made by the peer's keys.
    raw = socket.socket(fileno=os.dup(victim.fileno()))
    raw.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))
    raw.settimeout(5)
    wait_for(lambda: server.metric("tickwire_tls_record_failures_total") >= 1, what="the bad record counted")
    bystander.send(1, json.dumps({"type": "Ping"}).encode())
    assert bystander.read()[0] in (1, 9, 10)
    raw.close()


def test_server_close_sends_close_notify(server):
    s = server.tls()
    frames = upgrade(s, "/echo")
    frames.send(8, struct.pack(">H", 1000))
    opcode, payload = frames.read()
    assert opcode == 8 and payload[:2] == struct.pack(">H", 1000)
    # A clean TLS end (close_notify) reads as b"" in Python; an abrupt one raises.
    assert s.recv(4096) == b""


def test_sighup_reloads_the_certificate_without_dropping_connections(server):
    old = server.tls()
    frames = upgrade(old, "/echo")
    new_cert, new_key = make_certificate(server.dir, "renewed")
    server.served_cert.write_bytes(new_cert.read_bytes())
    server.served_key.write_bytes(new_key.read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    # New handshakes get the new certificate (trusted only through the new file)...
    wait_for(lambda: _handshakes_with(server, new_cert), what="new handshakes to use the renewed certificate")
    server.cert = new_cert
    # ...and the connection made before the reload still works.
    frames.send(1, b"still here")
    assert frames.read() == (1, b"still here")
    assert server.metric("tickwire_tls_reloads_total") == 1
    # A bad file is refused; the renewed certificate stays in use.
    server.served_key.write_bytes(b"not a key")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.metric("tickwire_tls_reload_failures_total") == 1, what="the failed reload counted")
    assert _handshakes_with(server, new_cert)


def _handshakes_with(server, cafile):
    try:
        server.tls(cafile=cafile).close()
        return True
    except ssl.SSLError:
        return False


def test_openssl_s_client_speaks_https(server):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
                        "-CAfile", str(server.cert), "-alpn", "http/1.1", "-quiet", "-verify_return_error"],
                       input=b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                       capture_output=True, timeout=10)
    assert b"HTTP/1.1 200" in r.stdout, r.stderr
    assert b'"status":"ok"' in r.stdout


def test_tls_flags_are_validated():
    r = subprocess.run([BIN, "--tls-cert", "/nonexistent.crt"], capture_output=True, timeout=10)
    assert r.returncode == 64 and b"--tls-key" in r.stderr
    r = subprocess.run([BIN, "--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"], capture_output=True, timeout=10)
    assert r.returncode == 64 and b"cannot be read" in r.stderr
