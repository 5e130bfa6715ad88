"""Cluster operations on a real redis-server (started and stopped here, on a free loopback
port): the simulator's leader lease and its takeover after SIGKILL, a new epoch when Redis
loses the stream, a restart of a persistent Redis that loses nothing, and the cluster's
metrics under promtool."""
import json
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import Closed, free_port, listening, wait_for  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cluster_harness import REDIS, collect, connect, processes, trade  # noqa: E402

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Per-connection messages repeat the head's seq; every other type takes a fresh one.
PER_CONNECTION = {"Connected", "Pong", "SubscriptionConfirmed", "RefreshToken", "TokenRefreshed"}
LEASE_TTL = 1.0


class Redis:
    """A redis-server on a fixed loopback port and directory, so it can be restarted."""

    def __init__(self, tmp, *args):
        self.port, self.dir, self.args, self.proc = free_port(), tmp / "redis", args, None
        self.dir.mkdir()
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir),
                                      *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: listening(self.port), what="redis-server to listen")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def command(self, *args):
        """One command over RESP; the reply's first line (enough for status and integers)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in map(str, args))
            s.sendall(out)
            return s.recv(65536).split(b"\r\n")[0].decode()


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path, "--appendonly", "no")
    yield r
    r.stop(signal.SIGKILL)


@pytest.fixture
def started(tmp_path):
    with processes(tmp_path) as start:
        yield lambda redis_url, *args: start("--workers", "1", "--redis", redis_url, "--leader-lease-ttl", f"{LEASE_TTL}s", *args)


def broadcasts(frames, count):
    """The next `count` broadcast messages (per-connection ones skipped)."""
    return collect(frames, count, lambda m: m["type"] not in PER_CONNECTION)


def confirmation(frames):
    while True:
        m = frames.message()
        if m["type"] == "SubscriptionConfirmed":
            return m["data"]


def leader(node):
    return node.metric('tickwire_cluster_leader{role="simulator"}')


def metric_or_none(node, name):
    """The metric, or None while it is not exported yet (a sampled one before its first sample)."""
    try:
        return node.metric(name)
    except AssertionError:
        return None


def health(node):
    return node.request("GET", "/health")[2]


def test_one_leader_simulates_and_a_survivor_takes_over_after_sigkill(started, redis):
    a = started(redis.url, "--sim-rate", "40")
    b = started(redis.url, "--sim-rate", "40")
    wait_for(lambda: leader(a) + leader(b) == 1, timeout=LEASE_TTL + 3, what="one leader")
    # Exactly one, sampled over more than a lease's ttl (renewals in between).
    until = time.monotonic() + 2 * LEASE_TTL
    while time.monotonic() < until:
        assert leader(a) + leader(b) == 1, "never two leaders, never none while both run"
    first, survivor = (a, b) if leader(a) == 1 else (b, a)
    sock, frames, _ = connect(survivor)
    sock.settimeout(LEASE_TTL + 5)
    seen = [m["seq"] for m in broadcasts(frames, 20)]

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(5)
    killed_at = time.monotonic()
    head_at_kill = health(survivor)["cluster"]["head"]
    # The lease expires at most ttl after the dead leader's last renew; the survivor
    # tries every ttl/3.
    wait_for(lambda: leader(survivor) == 1, timeout=LEASE_TTL + 2, what="the survivor to take the lease")
    took_over = time.monotonic() - killed_at
    assert took_over <= LEASE_TTL + 2
    # The new leader's simulator continues the same stream: read until well past the kill.
    while seen[-1] < head_at_kill + 40:
        seen += [m["seq"] for m in broadcasts(frames, 1)]
    assert seen == list(range(seen[0], seen[-1] + 1)), "one stream: no gap, no duplicate across the takeover"
    assert survivor.metric('tickwire_cluster_leader_acquired_total{role="simulator"}') >= 1


def test_a_clean_shutdown_releases_the_lease_at_once(started, redis):
    a = started(redis.url, "--sim-rate", "10", "--leader-lease-ttl", "30s")
    wait_for(lambda: leader(a) == 1, timeout=5, what="the only node to lead")
    b = started(redis.url, "--sim-rate", "10", "--leader-lease-ttl", "30s")
    assert leader(b) == 0
    a.stop()
    a.proc.wait(10)
    # Far sooner than the 30 s ttl: the key was deleted, b's next try (every 10 s) wins.
    wait_for(lambda: leader(b) == 1, timeout=12, what="b to take the released lease")
    ttl_left = int(redis.command("PTTL", "tickwire:lease:simulator")[1:])
    assert 0 < ttl_left <= 30_000, "held by b, with b's ttl"


def test_redis_losing_the_stream_starts_a_new_epoch_on_every_node(started, redis):
    a = started(redis.url, "--no-simulator")
    b = started(redis.url, "--no-simulator")
    sock, frames, hello = connect(b)
    old_epoch = hello["data"]["epoch"]
    a.publish([trade(i) for i in range(3)])
    last = broadcasts(frames, 3)[-1]["seq"]

    assert redis.command("FLUSHALL") == "+OK"
    # Nothing is published: each node notices on its own (the head sampled every second).
    for n in (a, b):
        wait_for(lambda: health(n)["cluster"]["epoch"] != old_epoch, timeout=10, what="the node to adopt a new epoch")
        assert n.metric("tickwire_cluster_epoch_changes_total") >= 1
    new_epoch = health(a)["cluster"]["epoch"]
    assert health(b)["cluster"]["epoch"] == new_epoch
    # A subscriber of the old epoch is closed (1012) so that it reconnects into the new one.
    with pytest.raises(Closed) as closed:
        while True:
            frames.message()
    assert closed.value.code == 1012

    for n in (a, b):
        _, f, hello = connect(n, f"?epoch={old_epoch}&since={last}")
        assert hello["data"]["epoch"] == new_epoch
        answer = confirmation(f)
        assert answer["recovered"] is False, "no resume across a lost stream"
        assert answer["epoch"] == new_epoch
    # The new epoch's stream starts again at 1, and resumes within it work.
    _, f, _ = connect(b, f"?epoch={new_epoch}&since=0")
    assert confirmation(f)["recovered"] is True
    seqs = a.publish([trade(i) for i in range(3)])["seqs"]
    assert seqs == [1, 2, 3]
    assert [m["seq"] for m in broadcasts(f, 3)] == seqs
    snapshot = b.request("GET", "/api/snapshot")[2]
    assert snapshot["epoch"] == new_epoch


def test_a_persistent_redis_restart_loses_nothing_and_keeps_the_epoch(started, tmp_path):
    redis = Redis(tmp_path, "--appendonly", "yes", "--appendfsync", "everysec")
    try:
        a = started(redis.url, "--no-simulator")
        b = started(redis.url, "--no-simulator")
        live_sock, live, hello = connect(a)  # stays connected through the restart
        epoch = hello["data"]["epoch"]
        sock, frames, _ = connect(b)
        acked = a.publish([trade(i) for i in range(5)])["seqs"]
        last = broadcasts(frames, 5)[-1]["seq"]
        sock.close()
        acked += b.publish([trade(i) for i in range(5, 10)])["seqs"]

        redis.stop(signal.SIGTERM)  # a clean shutdown writes the AOF out
        for n in (a, b):
            wait_for(lambda: health(n)["cluster"]["link"] == "down", timeout=10, what="the link down")
        restarted = time.monotonic()
        redis.start()
        for n in (a, b):
            wait_for(lambda: health(n)["cluster"]["link"] == "up", timeout=15, what="the link back up")
        relinked_ms = round((time.monotonic() - restarted) * 1000)
        acked += a.publish([trade(i) for i in range(10, 15)])["seqs"]
        assert acked == list(range(acked[0], acked[0] + 15)), "the seq continues after the restart"

        for n in (a, b):
            assert health(n)["cluster"]["epoch"] == epoch
            assert n.metric("tickwire_cluster_epoch_changes_total") == 0
        # A resume on the other node, across the restart: exactly what was missed.
        _, f, _ = connect(a, f"?epoch={epoch}&since={last}")
        answer = confirmation(f)
        assert answer["recovered"] is True and answer["epoch"] == epoch
        assert [m["seq"] for m in broadcasts(f, 10)] == acked[5:]
        # The subscriber that stayed connected lost nothing and saw nothing twice.
        kept = [m["seq"] for m in broadcasts(live, 15)]
        print(f"\nredis restart: {len(acked)} acknowledged, {len(kept)} delivered to the client that stayed, "
              f"{len(acked) - len(set(acked) & set(kept))} lost, {len(kept) - len(set(kept))} doubled, both links up "
              f"{relinked_ms} ms after redis-server was started again")
        assert kept == acked
    finally:
        redis.stop(signal.SIGKILL)


def test_cluster_metrics_pass_promtool_and_count_503s(started, redis):
    a = started(redis.url, "--sim-rate", "20")
    a.publish([trade(i) for i in range(3)])
    wait_for(lambda: leader(a) == 1, timeout=5, what="the leader gauge")
    wait_for(lambda: (metric_or_none(a, "tickwire_cluster_stream_length") or 0) >= 3, timeout=5, what="the sampled stream length")
    assert a.metric("tickwire_cluster_publish_round_trip_seconds_count") >= 1
    assert a.metric('tickwire_cluster_redis_link_up{link="command"}') == 1
    assert a.metric('tickwire_cluster_redis_link_up{link="pubsub"}') == 1
    _, _, raw = a.request("GET", "/metrics")
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=raw, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    changes = a.metric("tickwire_cluster_link_changes_total")
    redis.stop(signal.SIGKILL)
    wait_for(lambda: health(a)["cluster"]["link"] == "down", timeout=10, what="the link down")

    def refused():
        status, _, _ = a.request("POST", "/api/publish", json.dumps(trade(1)).encode(), {"Content-Type": "application/json"})
        return status == 503
    wait_for(refused, timeout=10, what="a 503")
    assert a.metric('tickwire_cluster_publish_refused_total{reason="cluster_down"}') >= 1
    assert a.metric("tickwire_cluster_link_changes_total") > changes
    assert a.metric('tickwire_cluster_redis_link_up{link="command"}') == 0
    # With Redis gone, the leader stops before its lease could have expired in Redis.
    wait_for(lambda: leader(a) == 0, timeout=LEASE_TTL + 1, what="the lease given up")


def test_one_node_ingests_the_upstream_and_a_survivor_takes_over_after_sigkill(started, redis):
    """Issue 13 item 4: with --redis, nodes given the same --upstream compete for one lease;
    only the holder connects to the upstream, and after it is SIGKILLed the survivor
    connects and the cluster's stream continues with no gap and no duplicate."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "Upstream"))
    from fake_upstream import FakeUpstream

    fake = FakeUpstream()
    try:
        fake.start_feed(rate=40.0)
        url = fake.url("btcusdt@ticker")
        a = started(redis.url, "--upstream", url)
        b = started(redis.url, "--upstream", url)

        def upstream_leader(node):
            return node.metric('tickwire_cluster_leader{role="upstream"}')

        wait_for(lambda: upstream_leader(a) + upstream_leader(b) == 1, timeout=LEASE_TTL + 3, what="one upstream leader")
        wait_for(lambda: len(fake.open_connections()) == 1, what="the leader alone to connect to the upstream")
        until = time.monotonic() + 2 * LEASE_TTL
        while time.monotonic() < until:
            assert upstream_leader(a) + upstream_leader(b) == 1, "never two ingesters, never none while both run"
            assert len(fake.open_connections()) <= 1, "only the lease holder connects upstream"
        first, survivor = (a, b) if upstream_leader(a) == 1 else (b, a)
        sock, frames, _ = connect(survivor)
        sock.settimeout(LEASE_TTL + 10)
        seen = [m for m in broadcasts(frames, 10)]
        assert all(m["type"] == "MarketData" for m in seen), "the upstream's tickers, the simulator is off"

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(5)
        head_at_kill = health(survivor)["cluster"]["head"]
        wait_for(lambda: upstream_leader(survivor) == 1, timeout=LEASE_TTL + 2, what="the survivor to take the upstream lease")
        wait_for(lambda: len(fake.open_connections()) >= 1, timeout=LEASE_TTL + 5, what="the survivor to connect upstream")
        while seen[-1]["seq"] < head_at_kill + 20:
            seen += broadcasts(frames, 1)
        seqs = [m["seq"] for m in seen]
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), "one stream: no gap, no duplicate across the takeover"
        assert survivor.metric('tickwire_cluster_leader_acquired_total{role="upstream"}') >= 1
        sock.close()
    finally:
        fake.close()
