"""What the cluster tests share: the redis-server binary, a test trade, a `/ws` session on a
node, and reading the next messages of a kind."""
import contextlib
import os
import pathlib
import shutil
import socket
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import Process, upgrade  # noqa: E402

REDIS = os.environ.get("REDIS_SERVER", shutil.which("redis-server") or "/usr/bin/redis-server")


def trade(i):
    return {"type": "TradeExecuted", "data": {"symbol": "BTCUSDT", "price": i, "quantity": 1}}


def connect(node, query=""):
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    frames, _ = upgrade(sock, "/ws" + query)
    hello = frames.message()
    assert hello["type"] == "Connected"
    return sock, frames, hello


def collect(frames, count, wanted):
    """The next `count` messages for which `wanted(message)` holds (the others skipped)."""
    got = []
    while len(got) < count:
        m = frames.message()
        if wanted(m):
            got.append(m)
    return got


@contextlib.contextmanager
def processes(tmp_path):
    """`start(*args)` runs a tickwire node in `tmp_path`; every node started is stopped on exit."""
    started = []

    def start(*args):
        n = Process(tmp_path, *args)
        started.append(n)
        return n

    try:
        yield start
    finally:
        for n in started:
            n.stop()
