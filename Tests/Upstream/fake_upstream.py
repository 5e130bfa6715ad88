"""A fake Binance-format upstream for the tests: a minimal RFC 6455 server on loopback
(plain sockets and threads, no dependencies) that speaks the combined-stream format
`{"stream":"btcusdt@ticker","data":{...}}`.

It can replay the invented fixture (fixture.jsonl), generate a steady ticker feed whose
event times increase by one per event (so a subscriber can check for gaps and
duplicates), stall (stop sending, keep the connections), drop every connection, send
malformed events, and ping and record the pongs it gets back."""
import base64
import hashlib
import json
import os
import pathlib
import socket
import struct
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FIXTURE = pathlib.Path(__file__).with_name("fixture.jsonl")


def frame(opcode, payload):
    """An unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


def fixture_messages():
    return [line for line in FIXTURE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def ticker(symbol, event_time, price="67250.10", open_price="66000.00", volume="1234.5"):
    change = float(price) - float(open_price)
    data = {"e": "24hrTicker", "E": event_time, "s": symbol.upper(), "p": f"{change:.2f}",
            "P": f"{change / float(open_price) * 100:.3f}", "w": price, "c": price, "Q": "0.01", "o": open_price,
            "h": price, "l": open_price, "v": volume, "q": "1.0", "O": 0, "C": event_time, "F": 1, "L": 2, "n": 2}
    return json.dumps({"stream": f"{symbol.lower()}@ticker", "data": data}, separators=(",", ":"))


class Connection:
    def __init__(self, sock, number):
        self.sock, self.number = sock, number
        self.lock = threading.Lock()
        self.open = True
        self.path = None
        self.closed_by_client = None   # the close code the client sent, if any

    def send(self, data):
        with self.lock:
            if not self.open:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                self.open = False
                return False


class FakeUpstream:
    def __init__(self, tls=None):
        """`tls`: an ssl.SSLContext (server side) for a wss:// upstream, listening on both
        loopbacks (::1 and 127.0.0.1) so that `localhost` reaches it whichever comes first."""
        self.tls = tls
        if tls:
            self.listener = socket.socket(socket.AF_INET6)
            self.listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("::", 0))
        else:
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.tls_failures = 0
        self.connections = []
        self.pongs = []
        self.unmasked_frames = 0
        self.lock = threading.Lock()
        self.running = True
        self.feed_thread = None
        self.feed_paused = threading.Event()
        self.sent = {}                 # event time -> time.time_ns() when sent (feed)
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, streams="btcusdt@ticker/btcusdt@kline_1m/btcusdt@aggTrade/ethusdt@ticker", host=None):
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{host or ('localhost' if self.tls else '127.0.0.1')}:{self.port}/stream?streams={streams}"

    # --- server side

    def _accept(self):
        while self.running:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        if self.tls:
            try:
                sock.settimeout(5)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            except (OSError, ValueError):
                self.tls_failures += 1
                sock.close()
                return
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                return
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        with self.lock:
            c = Connection(sock, len(self.connections) + 1)
            c.path = lines[0].split(" ")[1]
            self.connections.append(c)
        buf = bytearray(rest)
        try:
            while True:
                while True:
                    parsed = self._parse(buf)
                    if parsed is None:
                        break
                    opcode, payload = parsed
                    if opcode == 10:
                        self.pongs.append(payload)
                    elif opcode == 8:
                        c.closed_by_client = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                        c.send(frame(8, payload[:2]))
                        raise EOFError
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError
                buf += chunk
        except (EOFError, OSError):
            pass
        with c.lock:
            c.open = False
        sock.close()

    def _parse(self, buf):
        if len(buf) < 2:
            return None
        opcode, masked, n = buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F
        offset = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, offset = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, offset = struct.unpack(">Q", buf[2:10])[0], 10
        if not masked:
            self.unmasked_frames += 1
        key = b""
        if masked:
            if len(buf) < offset + 4:
                return None
            key = bytes(buf[offset:offset + 4])
            offset += 4
        if len(buf) < offset + n:
            return None
        payload = bytes(buf[offset:offset + n])
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        del buf[:offset + n]
        return opcode, payload

    # --- controls

    def open_connections(self):
        with self.lock:
            return [c for c in self.connections if c.open]

    def broadcast_text(self, text):
        data = frame(1, text.encode() if isinstance(text, str) else text)
        return sum(1 for c in self.open_connections() if c.send(data))

    def broadcast_raw(self, data):
        for c in self.open_connections():
            c.send(data)

    def replay_fixture(self):
        for m in fixture_messages():
            self.broadcast_text(m)

    def ping(self, payload):
        for c in self.open_connections():
            c.send(frame(9, payload))

    def drop_all(self):
        """Every connection cut at once, without a Close (a network failure)."""
        for c in self.open_connections():
            with c.lock:
                c.open = False
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close_all(self, code=1001):
        for c in self.open_connections():
            c.send(frame(8, struct.pack(">H", code)))

    def start_feed(self, symbol="btcusdt", rate=50.0, first_event_time=1_700_000_000_000):
        """Tickers at `rate` per second to every open connection, event time +1 each."""
        self.feed_next = first_event_time
        self.feed_stop = False

        def run():
            interval = 1.0 / rate
            next_at = time.monotonic()
            while not self.feed_stop and self.running:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if self.feed_paused.is_set():
                    continue
                e = self.feed_next
                self.feed_next += 1
                data = frame(1, ticker(symbol, e).encode())
                self.sent[e] = time.time_ns()
                for c in self.open_connections():
                    c.send(data)

        self.feed_thread = threading.Thread(target=run, daemon=True)
        self.feed_thread.start()

    def stall(self):
        self.feed_paused.set()

    def resume(self):
        self.feed_paused.clear()

    def stop_feed(self):
        self.feed_stop = True
        if self.feed_thread:
            self.feed_thread.join(5)

    def close(self):
        self.running = False
        self.stop_feed()
        self.listener.close()
        for c in self.open_connections():
            with c.lock:
                c.open = False
                try:
                    c.sock.close()
                except OSError:
                    pass
