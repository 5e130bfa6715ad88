"""Upstream read passes are published as one batch (issue 13, ingestion capacity): over
real sockets, events that arrive in one TCP write map and reach a subscriber in arrival
order with consecutive seqs, and a malformed or unknown event inside the batch is counted
and skipped without dropping the events around it."""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "support"))
sys.path.insert(0, str(HERE))
from fake_upstream import frame, ticker  # noqa: E402
from test_upstream import Subscriber, events_metric  # noqa: E402
from wsharness import wait_for  # noqa: E402

STREAMS = "btcusdt@ticker/btcusdt@kline_1m/btcusdt@aggTrade/ethusdt@ticker"


def kline(event_time):
    return json.dumps({"stream": "btcusdt@kline_1m", "data": {
        "e": "kline", "E": event_time, "s": "BTCUSDT",
        "k": {"t": 1_700_000_040_000, "T": 1_700_000_099_999, "s": "BTCUSDT", "i": "1m", "o": "67000.0", "c": "67100.5",
              "h": "67200.0", "l": "66900.0", "v": "12.5", "x": False}}}, separators=(",", ":"))


def test_a_mixed_batch_maps_in_order_and_a_malformed_event_drops_nothing_else(upstream, tickwire):
    fake = upstream
    srv = tickwire(fake, streams=STREAMS)
    sub = Subscriber(srv)
    base = 1_700_000_100_000
    no_price = json.loads(ticker("btcusdt", base + 2))
    del no_price["data"]["c"]
    messages = [
        ticker("btcusdt", base + 1),
        '{"stream":"btcusdt@ticker","data":{"e":"24hrTicker"',            # not JSON
        kline(base + 3),
        json.dumps({"stream": "btcusdt@depth", "data": {"e": "depthUpdate", "E": base + 4, "s": "BTCUSDT"}}),
        json.dumps(no_price),                                               # a ticker without 'c'
        json.dumps({"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade", "E": base + 5, "s": "BTCUSDT", "a": 77,
                                                           "p": "67100.0", "q": "0.1", "T": base + 5, "m": False}}),
        ticker("ethusdt", base + 6, price="3500.00", open_price="3400.00"),
        ticker("btcusdt", base + 7, price="67300.00"),
    ]
    # One write: the events share a read pass, so they are published as one batch.
    fake.broadcast_raw(b"".join(frame(1, m.encode()) for m in messages))
    got = sub.until(lambda m: m["type"] == "MarketData" and m["data"]["timestamp"] == base + 7, what="the last ticker")
    data = [m for m in got if m["type"] in ("MarketData", "ChartUpdate")]
    assert [(m["type"], m["data"]["symbol"], m["data"]["timestamp"]) for m in data] == [
        ("MarketData", "BTCUSDT", base + 1),
        ("ChartUpdate", "BTCUSDT", base + 3),
        ("MarketData", "ETHUSDT", base + 6),
        ("MarketData", "BTCUSDT", base + 7),
    ]
    seqs = [m["seq"] for m in data]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert data[3]["data"]["price"] == 67300.0
    wait_for(lambda: events_metric(srv, "malformed") == 2, what="two malformed events counted")
    assert events_metric(srv, "unknown") == 1
    assert events_metric(srv, "aggTrade") == 1
    assert events_metric(srv, "24hrTicker") == 3
    assert events_metric(srv, "kline") == 1
    sub.close()


def test_a_burst_spanning_many_read_passes_arrives_in_order(upstream, tickwire):
    fake = upstream
    srv = tickwire(fake, streams=STREAMS)
    sub = Subscriber(srv)
    base = 1_700_000_200_000
    count = 3000   # ~1 MB: several 1 MiB-bounded read passes, each one batch
    fake.broadcast_raw(b"".join(frame(1, ticker("btcusdt", base + i).encode()) for i in range(count)))
    got = sub.until(lambda m: m["type"] == "MarketData" and m["data"]["timestamp"] == base + count - 1,
                    timeout=60, what="the last ticker of the burst")
    market = [m for m in got if m["type"] == "MarketData"]
    times = [m["data"]["timestamp"] for m in market]
    seqs = [m["seq"] for m in market]
    # Conflation may merge tickers for a slow reader, never reorder them.
    assert times == sorted(set(times)) and seqs == sorted(set(seqs))
    wait_for(lambda: events_metric(srv, "24hrTicker") == count, what="every ticker counted")
    assert events_metric(srv, "malformed") == 0
    sub.close()
