"""max_frequency per subscription (PROTOCOL.md "Maximum frequency"), over real sockets
against a real tickwire binary fed through POST /api/publish: the rate honoured (frames
counted over a window, with a generous bound), the last value always delivered, events
never throttled, the stream kept in seq order, invalid values refused with the
subscription unchanged, the frequency echoed, compressed subscribers, and resume."""
import json
import math
import os
import pathlib
import socket
import sys
import threading
import time
import zlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import Process, upgrade, wait_for  # noqa: E402


@pytest.fixture
def make(tmp_path):
    started = []

    def start(*args):
        s = Process(tmp_path, "--no-simulator", "--workers", "2", *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


class Client:
    """A /ws connection that keeps every message it reads (in order)."""

    def __init__(self, srv, path="/ws", headers=()):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        self.frames, self.response = upgrade(self.sock, path, headers)
        self.deflate = "permessage-deflate" in self.response.get("sec-websocket-extensions", "")
        self.seen = []
        self.compressed = 0

    def next(self, timeout=10):
        self.sock.settimeout(timeout)
        f = self.frames
        while True:
            f._need(2)
            rsv1 = bool(f.buf[0] & 0x40)
            opcode, payload = f.read()
            if opcode == 9:
                f.send(10, payload)
                continue
            if opcode == 8:
                raise EOFError("closed")
            if opcode == 1:
                if rsv1:
                    self.compressed += 1
                    payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
                msg = json.loads(payload)
                self.seen.append(msg)
                return msg

    def until(self, kind, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.next(timeout=max(0.05, deadline - time.monotonic()))
            if m["type"] == kind:
                return m
        raise AssertionError(f"no {kind} within {timeout}s")

    def drain_until(self, condition, timeout=10, what="condition"):
        """Reads until `condition(self)` holds (checked after each message)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                self.next(timeout=min(left, 0.5))
            except socket.timeout:
                pass

    def subscribe(self, **data):
        self.frames.send_json({"type": "Subscribe", "data": data})
        return self.until("SubscriptionConfirmed")

    def of(self, kind):
        return [m for m in self.seen if m["type"] == kind]

    def close(self):
        self.sock.close()


def market(symbol, price):
    return {"type": "MarketData", "data": {"symbol": symbol, "price": price, "price_change_24h": 1.0,
                                           "price_change_percent_24h": 0.1, "volume_24h": 10.0, "timestamp": 1764547200000}}


def candle(symbol, timeframe, close):
    return {"type": "ChartUpdate", "data": {"symbol": symbol, "timeframe": timeframe, "latest_price": close, "timestamp": 1764547200000,
                                            "candle": {"timestamp": 1764547200000, "open": close, "high": close, "low": close,
                                                       "close": close, "volume": 1.0, "is_closed": False}}}


def trade(symbol, n):
    return {"type": "TradeExecuted", "data": {"symbol": symbol, "side": "BUY", "quantity": 1.0, "price": float(n), "timestamp": 1764547200000}}


def feed(srv, seconds, per_batch=10, period=0.02, symbols=("BTCUSDT",), extra=None):
    """Publishes `per_batch` price updates per symbol every `period` s for `seconds` s
    (500/s per symbol by default): returns the last price published per symbol, and the
    number of batches."""
    last = {}
    batches = 0
    price = 1000.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = []
        for _ in range(per_batch):
            for s in symbols:
                price += 0.5
                batch.append(market(s, price))
                last[s] = price
        if extra:
            batch += extra(batches)
        srv.publish(batch)
        batches += 1
        time.sleep(period)
    return last, batches


def assert_seq_ordered(client):
    seqs = [m["seq"] for m in client.seen if m["type"] in ("MarketData", "ChartUpdate", "TradeExecuted", "PositionUpdate")]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), f"broadcast seqs not increasing: {seqs[:50]}"


def test_frequency_is_echoed_and_invalid_values_are_refused(make):
    srv = make("--max-frequency-limit", "50")
    c = Client(srv)
    c.until("Connected")
    confirmed = c.subscribe(channels=["prices", "trades"], symbols=["BTCUSDT"], max_frequency=4)
    assert confirmed["data"]["max_frequency"] == 4
    assert confirmed["data"]["symbols"] == ["BTCUSDT"]
    for bad in (0, -3, 2.5, "4", 51, True, {"n": 1}):
        c.frames.send_json({"type": "Subscribe", "data": {"channels": ["prices"], "max_frequency": bad}})
        err = c.until("Error")
        assert err["data"]["code"] == "INVALID_SUBSCRIPTION", (bad, err)
        assert err["data"]["details"]["max_frequency_limit"] == 50
    # Unchanged: an empty Unsubscribe confirms what is in force.
    c.frames.send_json({"type": "Unsubscribe", "data": {"channels": []}})
    now = c.until("SubscriptionConfirmed")["data"]
    assert now["max_frequency"] == 4 and now["symbols"] == ["BTCUSDT"] and set(now["channels"]) == {"MarketData", "TradeExecuted"}
    # Unsubscribe keeps the frequency; a Subscribe without one returns to every update.
    c.frames.send_json({"type": "Unsubscribe", "data": {"channels": ["trades"]}})
    assert c.until("SubscriptionConfirmed")["data"]["max_frequency"] == 4
    assert "max_frequency" not in c.subscribe(channels=["prices"])["data"]
    assert c.subscribe(max_frequency=None)["data"]["channels"]
    c.close()


def test_bad_limit_is_refused_at_start_up(tmp_path):
    import subprocess
    from wsharness import BIN
    r = subprocess.run([BIN, "--no-simulator", "--max-frequency-limit", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "--max-frequency-limit" in (r.stdout + r.stderr)
    # The same check through the environment (deploy/systemd/tickwire.env).
    for name, value, flag in (("TICKWIRE_MAX_FREQUENCY_LIMIT", "0", "--max-frequency-limit"), ("TICKWIRE_MAX_BANDWIDTH", "100", "--max-bandwidth")):
        r = subprocess.run([BIN, "--no-simulator"], capture_output=True, text=True, timeout=30, env={**os.environ, name: value})
        assert r.returncode != 0 and flag in (r.stdout + r.stderr), (name, r.stderr)


def test_rate_honoured_last_value_delivered_trades_never_throttled(make):
    srv = make()
    slow = [Client(srv) for _ in range(3)]
    full = Client(srv)
    for c in slow:
        c.until("Connected")
        c.subscribe(channels=["prices", "trades"], symbols=["BTCUSDT", "ETHUSDT"], max_frequency=4)
    full.until("Connected")
    full.subscribe(channels=["prices", "trades"], symbols=["BTCUSDT", "ETHUSDT"])

    readers = []
    stop = threading.Event()

    def read_all(c):
        while not stop.is_set():
            try:
                c.next(timeout=0.2)
            except socket.timeout:
                pass
            except (EOFError, OSError):
                return

    for c in slow + [full]:
        t = threading.Thread(target=read_all, args=(c,), daemon=True)
        t.start()
        readers.append(t)

    trades_sent = []

    def with_trades(batch):
        if batch % 5 == 0:
            trades_sent.append(len(trades_sent))
            return [trade("BTCUSDT", trades_sent[-1])]
        return []

    started = time.monotonic()
    last, _ = feed(srv, 2.0, symbols=("BTCUSDT", "ETHUSDT"), extra=with_trades)
    window = time.monotonic() - started

    def caught_up(c):
        got = {}
        for m in c.of("MarketData"):
            got[m["data"]["symbol"]] = m["data"]["price"]
        return got == last and len(c.of("TradeExecuted")) == len(trades_sent)

    wait_for(lambda: all(caught_up(c) for c in slow + [full]), timeout=15, what="every client to end on the feed's last values")
    stop.set()
    for t in readers:
        t.join(2)

    published = sum(1 for _ in full.of("MarketData"))
    assert published >= 500, f"the full-rate client got only {published} updates"
    for c in slow:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            n = sum(1 for m in c.of("MarketData") if m["data"]["symbol"] == symbol)
            # 4/s over the window, plus the tick after it, plus the updates that go out early
            # ahead of a trade (one per trade at most): a generous bound far below the feed.
            bound = 4 * (window + 1) + len(trades_sent) + 2
            assert 2 <= n <= bound, f"{symbol}: {n} updates at max_frequency 4 over {window:.1f}s (bound {bound:.0f})"
        assert [m["data"]["price"] for m in c.of("TradeExecuted")] == [float(i) for i in trades_sent]
        assert_seq_ordered(c)
    assert_seq_ordered(full)
    assert srv.metric("tickwire_conflated_updates_total") > 0
    assert srv.metric("tickwire_max_frequency_releases_total") > 0
    assert srv.metric("tickwire_max_frequency_deliveries_total") > 0
    for c in slow + [full]:
        c.close()


def test_candles_are_throttled_per_timeframe(make):
    srv = make()
    c = Client(srv)
    c.until("Connected")
    c.subscribe(channels=["charts"], max_frequency=2)
    batch = []
    for i in range(200):
        batch.append(candle("BTCUSDT", "1m", 100.0 + i))
        batch.append(candle("BTCUSDT", "5m", 500.0 + i))
    srv.publish(batch)
    c.drain_until(lambda c: {(m["data"]["timeframe"], m["data"]["latest_price"]) for m in c.of("ChartUpdate")} >= {("1m", 299.0), ("5m", 699.0)},
                  what="the last candle of each timeframe")
    assert len(c.of("ChartUpdate")) <= 6, [m["data"]["latest_price"] for m in c.of("ChartUpdate")]
    assert_seq_ordered(c)
    c.close()


def test_symbol_filter_and_unthrottled_channels(make):
    srv = make()
    c = Client(srv)
    c.until("Connected")
    c.subscribe(channels=["prices", "status"], symbols=["ETHUSDT"], max_frequency=5)
    srv.publish([market("BTCUSDT", 1.0)] + [market("ETHUSDT", float(i)) for i in range(50)]
                + [{"type": "BotStatusUpdate", "data": {"status": "running", "active_positions": i, "total_pnl": 0.0,
                                                        "total_trades": 0, "uptime": 1}} for i in range(5)])
    c.drain_until(lambda c: any(m["data"]["price"] == 49.0 for m in c.of("MarketData")) and len(c.of("BotStatusUpdate")) == 5,
                  what="the last ETH price and every bot status")
    assert {m["data"]["symbol"] for m in c.of("MarketData")} == {"ETHUSDT"}
    assert [m["data"]["active_positions"] for m in c.of("BotStatusUpdate")] == list(range(5))
    assert_seq_ordered(c)
    c.close()


def test_compressed_subscriber_gets_the_shared_compressed_update(make):
    srv = make()
    c = Client(srv, headers=(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),))
    assert c.deflate
    c.until("Connected")
    c.subscribe(channels=["prices"], max_frequency=10)
    pad = "x" * 600
    batch = [market("BTCUSDT", float(i)) for i in range(100)]
    for m in batch:
        m["data"]["note"] = pad
    srv.publish(batch)
    c.drain_until(lambda c: any(m["data"]["price"] == 99.0 for m in c.of("MarketData")), what="the last price")
    assert c.compressed >= 1
    assert len(c.of("MarketData")) <= 4
    c.close()


def test_resume_replays_the_newest_update_per_key(make):
    srv = make()
    c = Client(srv)
    hello = c.until("Connected")
    epoch, since = hello["data"]["epoch"], hello["data"]["seq"]
    c.close()
    srv.publish([market("BTCUSDT", float(i)) for i in range(30)] + [trade("BTCUSDT", 7)] + [market("ETHUSDT", float(i)) for i in range(30)])
    r = Client(srv, path=f"/ws?epoch={epoch}&since={since}&channels=prices,trades&max_frequency=2")
    r.until("Connected")
    confirmed = r.until("SubscriptionConfirmed")["data"]
    assert confirmed["recovered"] is True and confirmed["max_frequency"] == 2
    r.drain_until(lambda r: {m["data"]["symbol"]: m["data"]["price"] for m in r.of("MarketData")} == {"BTCUSDT": 29.0, "ETHUSDT": 29.0}
                  and len(r.of("TradeExecuted")) == 1, what="the newest price per symbol and the trade")
    assert len(r.of("MarketData")) <= 4
    assert_seq_ordered(r)
    r.close()


def test_many_subscribers_all_end_on_the_last_value(make):
    srv = make()
    clients = [Client(srv) for _ in range(40)]
    for c in clients:
        c.until("Connected")
        c.subscribe(channels=["prices"], max_frequency=4)
    started = time.monotonic()
    last, _ = feed(srv, 1.0, per_batch=10, period=0.02)
    # 4/s over however long the feed really took (a loaded machine stretches it), doubled,
    # plus the last value: far below the ~500 updates the feed carried.
    allowed = 4 * 2 * math.ceil(time.monotonic() - started) + 2
    for c in clients:
        c.drain_until(lambda c: bool(c.of("MarketData")) and c.of("MarketData")[-1]["data"]["price"] == last["BTCUSDT"],
                      what="the last price")
        assert len(c.of("MarketData")) <= allowed
    # Released once per group per tick, not once per subscriber.
    assert srv.metric("tickwire_max_frequency_releases_total") <= 2 * allowed
    for c in clients:
        c.close()


def padded_prices_with_trades():
    """1,500 padded prices (~450 KB, a minute at 8 KiB/s) with a trade every 100."""
    pad = "p" * 200
    batch = []
    for i in range(1500):
        m = market("BTCUSDT", float(i))
        m["data"]["note"] = pad
        batch.append(m)
        if i % 100 == 0:
            batch.append(trade("BTCUSDT", i))
    return batch


def test_bandwidth_cap_conflates_prices_and_keeps_every_trade(make):
    srv = make("--max-bandwidth", "8KiB")
    c = Client(srv)
    c.until("Connected")
    c.subscribe(channels=["prices", "trades"])
    batch = padded_prices_with_trades()
    started = time.monotonic()
    srv.publish(batch)   # ~450 KB: a minute of this cap without conflation
    c.drain_until(lambda c: any(m["data"]["price"] == 1499.0 for m in c.of("MarketData")) and len(c.of("TradeExecuted")) == 15,
                  timeout=20, what="the last price and every trade")
    elapsed = time.monotonic() - started
    prices = [m["data"]["price"] for m in c.of("MarketData")]
    assert [m["data"]["price"] for m in c.of("TradeExecuted")] == [float(i) for i in range(0, 1500, 100)]
    assert prices == sorted(prices), "an older price after a newer one"
    assert len(prices) < 300, f"{len(prices)} of 1500 prices: nothing was conflated"
    assert elapsed < 15
    assert_seq_ordered(c)
    assert srv.metric("tickwire_bandwidth_limited_total") > 0
    assert srv.metric("tickwire_slow_consumer_conflated_total") > 0
    c.close()


def test_bandwidth_cap_bounds_the_rate_of_a_full_feed(make):
    srv = make("--max-bandwidth", "16KiB")
    c = Client(srv)
    c.until("Connected")
    c.subscribe(channels=["prices"])
    received = [0]
    stop = threading.Event()

    def read_all():
        while not stop.is_set():
            try:
                m = c.next(timeout=0.2)
                received[0] += len(json.dumps(m))
            except socket.timeout:
                pass
            except (EOFError, OSError):
                return

    t = threading.Thread(target=read_all, daemon=True)
    t.start()
    started = time.monotonic()
    last, _ = feed(srv, 2.0, per_batch=20, period=0.02)
    wait_for(lambda: any(m["type"] == "MarketData" and m["data"]["price"] == last["BTCUSDT"] for m in list(c.seen)), timeout=10,
             what="the last price")
    elapsed = time.monotonic() - started
    stop.set()
    t.join(2)
    # One second of burst plus 16 KiB/s, with room for frame headers and timing.
    assert received[0] <= 16384 * (elapsed + 1) * 1.2, f"{received[0]} bytes in {elapsed:.1f}s"
    c.close()
