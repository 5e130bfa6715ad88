"""Two tickwire nodes on one real redis-server (started and stopped here, on a free
loopback port): one seq across nodes, resume on any node, a killed node, a stopped Redis."""
import json
import pathlib
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import free_port, listening, wait_for  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cluster_harness import REDIS, collect, connect, processes, trade  # noqa: E402



@pytest.fixture
def redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: listening(port), what="redis-server to listen")
    yield proc, f"redis://127.0.0.1:{port}"
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(5)


@pytest.fixture
def nodes(tmp_path, redis):
    with processes(tmp_path) as start:
        yield lambda *args: start("--no-simulator", "--workers", "2", "--redis", redis[1], *args)


def trades(frames, count):
    """The next `count` TradeExecuted messages (skipping confirmations)."""
    return collect(frames, count, lambda m: m["type"] == "TradeExecuted")


def test_publish_on_one_node_reaches_the_other_in_order(nodes):
    a, b = nodes(), nodes()
    _, frames, hello_b = connect(b)
    assert hello_b["data"]["epoch"] == connect(a)[2]["data"]["epoch"], "one epoch: the cluster's"
    seqs = []
    for i in range(20):
        seqs += a.publish(trade(i))["seqs"]
    assert seqs == list(range(seqs[0], seqs[0] + 20))
    got = trades(frames, 20)
    assert [m["seq"] for m in got] == seqs
    assert [m["data"]["price"] for m in got] == list(range(20))


def test_resume_on_another_node_has_no_gap_and_no_duplicate(nodes):
    a, b = nodes(), nodes()
    sock, frames, hello = connect(a)
    first = a.publish([trade(i) for i in range(5)])["seqs"]
    last_seen = trades(frames, 5)[-1]["seq"]
    sock.close()
    missed = b.publish([trade(i) for i in range(5, 12)])["seqs"]
    _, frames_b, _ = connect(b, f"?epoch={hello['data']['epoch']}&since={last_seen}")
    confirmed = frames_b.message()
    while confirmed["type"] != "SubscriptionConfirmed":
        confirmed = frames_b.message()
    assert confirmed["data"]["recovered"] is True
    got = trades(frames_b, len(missed))
    assert [m["seq"] for m in got] == missed
    assert first[-1] == last_seen and missed[0] == last_seen + 1


def test_a_node_started_later_serves_resumes_from_the_history(nodes):
    a = nodes()
    sock, frames, hello = connect(a)
    a.publish([trade(i) for i in range(3)])
    seen = trades(frames, 3)[-1]["seq"]
    missed = a.publish([trade(i) for i in range(3, 8)])["seqs"]
    c = nodes()
    _, frames_c, _ = connect(c, f"?epoch={hello['data']['epoch']}&since={seen}")
    assert [m["seq"] for m in trades(frames_c, 5)] == missed


def test_sigkill_a_node_clients_resume_on_the_other(nodes):
    a, b = nodes(), nodes()
    _, frames, hello = connect(a)
    a.publish([trade(i) for i in range(4)])
    seen = trades(frames, 4)[-1]["seq"]
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(5)
    after = b.publish([trade(i) for i in range(4, 9)])["seqs"]
    _, frames_b, _ = connect(b, f"?epoch={hello['data']['epoch']}&since={seen}")
    assert [m["seq"] for m in trades(frames_b, 5)] == after


def test_redis_stopped_publishes_503_clients_stay_and_nothing_acknowledged_is_lost(nodes, redis):
    a, b = nodes(), nodes()
    _, frames, _ = connect(b)
    acked = a.publish([trade(i) for i in range(3)])["seqs"]
    redis[0].send_signal(signal.SIGSTOP)
    try:
        def refused():
            status, headers, body = a.request("POST", "/api/publish", json.dumps(trade(99)).encode(),
                                              {"Content-Type": "application/json"})
            return status == 503 and "Retry-After" in headers and body["cluster"] == "down"
        wait_for(refused, timeout=10, what="publish refused with 503")
        wait_for(lambda: a.request("GET", "/health")[2]["cluster"]["link"] == "down", what="/health to say down")
        status, _, health = a.request("GET", "/health")
        assert status == 200 and health["status"] == "degraded"
    finally:
        redis[0].send_signal(signal.SIGCONT)
    wait_for(lambda: a.request("GET", "/health")[2]["cluster"]["link"] == "up", timeout=15, what="the link back up")
    acked += a.publish([trade(i) for i in range(3, 6)])["seqs"]
    got = []
    wait_seq = acked[-1]
    while not got or got[-1]["seq"] < wait_seq:
        got += trades(frames, 1)
    got_seqs = [m["seq"] for m in got]
    assert set(acked) <= set(got_seqs), "every acknowledged message reached the client on the other node"
    assert got_seqs == sorted(set(got_seqs)), "in order, no duplicate"
    # The snapshots agree with each other and with the stream's head.
    wait_for(lambda: a.request("GET", "/api/snapshot")[2]["seq"] == b.request("GET", "/api/snapshot")[2]["seq"] >= wait_seq,
             what="the snapshots to agree")
