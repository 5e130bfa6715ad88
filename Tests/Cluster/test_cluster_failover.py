"""Failures of a cluster as traders meet them: three nodes behind the real HAProxy with
deploy/haproxy/haproxy-cluster.cfg (rewritten only for loopback ports and an unprivileged
user), one node SIGKILLed while a producer publishes; and a node stopped (SIGSTOP) long
enough that Redis cuts its Pub/Sub link. Each prints its counts (run with -s to see them)."""
import contextlib
import json
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import Closed, free_port, listening, upgrade, wait_for  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cluster_harness import REDIS, connect, processes, trade  # noqa: E402

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@contextlib.contextmanager
def redis_server(tmp_path, *extra):
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port) or proc.poll() is not None, what="redis-server to listen")
        assert proc.poll() is None, f"{REDIS} exited with {proc.returncode}"
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(5)


def pubsub_clients(redis_url):
    """How many connections Redis holds in Pub/Sub mode (CLIENT LIST TYPE pubsub, in RESP)."""
    with socket.create_connection(("127.0.0.1", int(redis_url.rsplit(":", 1)[1])), timeout=5) as s:
        s.sendall(b"*4\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n$4\r\nTYPE\r\n$6\r\npubsub\r\n")
        data = b""
        while b"\r\n" not in data:
            data += s.recv(65536)
        assert data.startswith(b"$"), data
        length = int(data[1:data.index(b"\r\n")])
        body_start = data.index(b"\r\n") + 2
        while len(data) < body_start + length:
            data += s.recv(65536)
        return len([l for l in data[body_start:body_start + length].split(b"\n") if l.strip()])


def loopback_haproxy_config(front_port, stats_port, node_ports):
    """deploy/haproxy/haproxy-cluster.cfg with its addresses moved to loopback. Only what an
    unprivileged test cannot have changes: no user/group switch, no admin socket under /run,
    no syslog, maxconn within this machine's descriptor limit."""
    out = []
    for line in (DEPLOY / "haproxy/haproxy-cluster.cfg").read_text().splitlines():
        s = line.strip()
        if s.startswith(("user ", "group ", "stats socket ", "log ")):
            continue
        line = re.sub(r"^(\s*)maxconn \d+", r"\1maxconn 2000", line)
        line = re.sub(r"^(\s*)bind :80\b.*", rf"\1bind 127.0.0.1:{front_port}", line)
        line = re.sub(r"^(\s*)bind :8404\b.*", rf"\1bind 127.0.0.1:{stats_port}", line)
        m = re.match(r"^(\s*server edge(\d) )10\.0\.0\.1\d:8080( .*)$", line)
        if m:
            line = f"{m.group(1)}127.0.0.1:{node_ports[int(m.group(2)) - 1]}{m.group(3)}"
        out.append(line)
    text = "\n".join(out) + "\n"
    assert text.count("127.0.0.1:") == 2 + 2 * len(node_ports), "every bind and server line was moved to loopback"
    return text


@contextlib.contextmanager
def haproxy(tmp_path, node_ports):
    assert shutil.which(HAPROXY) or pathlib.Path(HAPROXY).exists(), \
        "haproxy is missing: scripts/validate-deploy.sh installs it (make test runs it first)"
    front, stats = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(loopback_haproxy_config(front, stats, node_ports))
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(tmp_path / "haproxy.log", "wb")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listening(front) or proc.poll() is not None, what="haproxy to listen")
        assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
        yield front
    finally:
        proc.kill()
        proc.wait(5)
        log.close()


def http(port, method, path, body=None):
    """One HTTP/1.1 request on a new connection: (status, parsed JSON body or None)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, None
    finally:
        c.close()


class Trader:
    """A dashboard's connection through the balancer: it records every TradeExecuted seq, and
    when its connection breaks it reconnects through the balancer at once with the epoch and
    the last seq it saw, as the browser client does."""

    def __init__(self, port):
        self.port, self.seqs, self.resumes, self.reconnected_at = port, [], [], []
        self.epoch, self.error, self.stop = None, None, threading.Event()
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _session(self, query):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.settimeout(0.5)
        try:
            frames, _ = upgrade(sock, "/ws" + query)
            while not self.stop.is_set():
                try:
                    m = frames.message()
                except socket.timeout:
                    continue
                if m["type"] == "Connected":
                    self.epoch = self.epoch or m["data"]["epoch"]
                    self.connected.set()
                elif m["type"] == "SubscriptionConfirmed" and query:
                    self.resumes.append(m["data"].get("recovered"))
                elif m["type"] == "TradeExecuted":
                    if query and len(self.reconnected_at) < len(self.resumes):
                        self.reconnected_at.append(time.monotonic())
                    self.seqs.append(m["seq"])
        finally:
            sock.close()

    def _run(self):
        deadline = time.monotonic() + 120
        query = ""
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self._session(query)
            except (EOFError, ConnectionError, Closed, socket.timeout, AssertionError) as e:
                if not self.connected.is_set() and not self.seqs:
                    self.error = e
                    return
                query = f"?epoch={self.epoch}&since={self.seqs[-1]}" if self.seqs else ""
                time.sleep(0.02)
            except Exception as e:  # anything else is a harness bug: report it, do not hang
                self.error = e
                return


def test_sigkill_a_node_behind_haproxy_its_traders_resume_on_the_others_losing_nothing(tmp_path):
    with redis_server(tmp_path) as redis, processes(tmp_path) as start:
        nodes = [start("--no-simulator", "--workers", "1", "--redis", redis) for _ in range(3)]
        with haproxy(tmp_path, [n.port for n in nodes]) as lb:
            wait_for(lambda: http(lb, "GET", "/health")[0] == 200, what="the balancer to pass /health")
            traders = []
            for _ in range(12):
                traders.append(Trader(lb))
                assert traders[-1].connected.wait(10), traders[-1].error
            # leastconn spread them: every node holds some, so the kill hits some traders.
            per_node = [n.metric("websocket_connections_active") for n in nodes]
            assert all(c > 0 for c in per_node) and sum(per_node) == 12, per_node

            acked, refused = [], 0
            victim = max(range(3), key=lambda i: per_node[i])
            killed_at = None
            for batch in range(60):
                if batch == 20:
                    nodes[victim].proc.send_signal(signal.SIGKILL)
                    nodes[victim].proc.wait(5)
                    killed_at = time.monotonic()
                # Producers publish through the balancer too; a publish in flight to the dying
                # node may fail (its outcome is then unknown), and a retry goes elsewhere.
                try:
                    status, body = http(lb, "POST", "/api/publish", json.dumps([trade(batch * 5 + i) for i in range(5)]))
                except OSError:
                    status, body = None, None
                if status == 202:
                    acked += body["seqs"]
                else:
                    refused += 1
                time.sleep(0.02)
            head = acked[-1]
            try:
                for t in traders:
                    wait_for(lambda: t.error or (t.seqs and t.seqs[-1] >= head), timeout=20, what="every trader to reach the head")
            finally:
                for t in traders:
                    t.stop.set()
                    t.thread.join(5)

    hit = [t for t in traders if t.resumes]
    delivered = sum(len(t.seqs) for t in traders)
    lost = sum(len(set(acked) - set(t.seqs)) for t in traders)   # every trader was connected before the first publish
    doubled = sum(len(t.seqs) - len(set(t.seqs)) for t in traders)
    recovery = max((t.reconnected_at[0] - killed_at for t in hit if t.reconnected_at), default=None)
    print(f"\nnode kill behind haproxy: {len(acked)} acknowledged ({refused} publishes refused while the node died), "
          f"{delivered} delivered to {len(traders)} traders, {len(hit)} of them resumed on another node, "
          f"lost {lost}, doubled {doubled}, first message after the kill within {recovery and round(recovery * 1000)} ms")
    assert all(t.error is None for t in traders), [t.error for t in traders]
    assert hit and len(hit) == per_node[victim], "the killed node's traders, and only they, reconnected"
    assert all(r is True for t in hit for r in t.resumes), "every resume on another node is lossless (recovered: true)"
    for t in traders:
        assert t.seqs == list(range(t.seqs[0], t.seqs[-1] + 1)), "no gap, no duplicate, in order"
        assert set(acked) <= set(t.seqs), "every acknowledged trade reached every trader"
    assert lost == 0 and doubled == 0


def test_a_stopped_node_holds_up_no_other_and_fills_what_redis_dropped_for_it(tmp_path):
    # A small Pub/Sub output limit, so that Redis cuts the link of a node that stops reading.
    with redis_server(tmp_path, "--client-output-buffer-limit", "pubsub 65536 32768 1") as redis, \
            processes(tmp_path) as start:
        a = start("--no-simulator", "--workers", "1", "--redis", redis, "--history", "20000")
        # b then delivers the whole catch-up at once: room for it, so its trader is not a slow consumer.
        b = start("--no-simulator", "--workers", "1", "--redis", redis, "--history", "20000", "--max-backlog", "67108864")
        _, frames_a, _ = connect(a)
        sock_b, frames_b, _ = connect(b)
        changes_before = b.metric("tickwire_cluster_link_changes_total")
        assert pubsub_clients(redis) == 2
        b.proc.send_signal(signal.SIGSTOP)
        try:
            acked = []

            def padded(i):
                m = trade(i)
                m["data"]["note"] = "x" * 1000
                return m
            # Publish until Redis has cut b's Pub/Sub link (its output for b passed the limit
            # once the sockets' buffers were full), and a little more; bounded.
            cut_at = None
            for batch in range(400):
                acked += a.publish([padded(batch * 50 + i) for i in range(50)])["seqs"]
                # Node a keeps serving its own traders while b is stopped.
                got = []
                while len(got) < 50:
                    m = frames_a.message()
                    if m["type"] == "TradeExecuted":
                        got.append(m["seq"])
                assert got == acked[-50:], "node a delivers each batch, in order, while node b is stopped"
                if cut_at is None and pubsub_clients(redis) < 2:
                    cut_at = batch
                if cut_at is not None and batch >= cut_at + 5:
                    break
            assert cut_at is not None, "Redis cut the stopped node's Pub/Sub link"
        finally:
            b.proc.send_signal(signal.SIGCONT)
        sock_b.settimeout(30)
        seen = []
        while not seen or seen[-1] < acked[-1]:
            m = frames_b.message()
            if m["type"] == "TradeExecuted":
                seen.append(m["seq"])
        changes = b.metric("tickwire_cluster_link_changes_total") - changes_before
        unread = b.metric("tickwire_cluster_lost_total")
        print(f"\nstopped node: {len(acked)} published while it was stopped, {len(seen)} delivered by it after SIGCONT, "
              f"Redis cut its link after batch {cut_at}, {changes:.0f} link changes, {unread:.0f} lost")
        assert seen == acked, "node b's trader gets every message once, in order, after b resumes"
        assert changes >= 2, "b saw its Pub/Sub link go down and come back, and caught up from the stream"
        assert unread == 0
