#!/usr/bin/env python3
"""`make bench`, the cluster rows (issue 10): publish-to-delivery through Redis beside a single
node, with the same generator (tickwire-bench fanout) and the same pinning as bench.py.

Three ways of running, alternated round by round:
  single   one node, no Redis (the embedded default);
  redis    one node with --redis: every publish goes through the Lua script (INCR, XADD with
           MAXLEN, PUBLISH) and comes back over Pub/Sub before it is delivered;
  2-node   publishers post to node A, subscribers are on node B: the cluster's real path.
The measured node (the subscribers' node) is pinned to CPU 0; the generator, redis-server and
node A share CPU 1. redis-server runs without persistence, on a free loopback port, and is
stopped at the end. Scenarios:
  latency   1,000 msg/s to 10 subscribers: p50/p99, loss, duplicates;
  cpu       1,000 subscribers x 200 msg/s: server CPU per delivery on the subscribers' node;
  capacity  batches of 100 messages per POST at rising rates to 2 subscribers on node B:
            the highest published rate delivered with no loss and no duplicate.
Writes cluster.json and cluster.md to --out; never fails on a number. Loopback only, each
run bounded in time."""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, Server, generator, machine, median  # noqa: E402
from loopback import free_port, stop_process, wait_for_port  # noqa: E402

MODES = ("single", "redis", "2-node")


@contextlib.contextmanager
def redis_server(cpu):
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", str(cpu), binary, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_port(port):
            raise RuntimeError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def flush(redis_url):
    """Each run starts from an empty Redis: a new epoch, an empty stream."""
    cli = shutil.which("redis-cli")
    if cli:
        port = redis_url.rsplit(":", 1)[1]
        subprocess.run([cli, "-p", port, "FLUSHALL"], stdout=subprocess.DEVNULL, check=False)


def run_mode(mode, binaries, redis_url, gen_args, cpus):
    server_cpu, other_cpu = cpus
    extra = [] if mode == "single" else ["--redis", redis_url, "--redis-command-timeout", "5s"]
    if mode != "single":
        flush(redis_url)
    with contextlib.ExitStack() as stack:
        measured = Server("tickwire", binaries, server_cpu, extra)
        stack.callback(measured.stop)
        args = gen_args + ["--port", str(measured.port), "--server-pid", str(measured.pid), "--label", mode]
        if mode == "2-node":
            publisher = Server("tickwire", binaries, other_cpu, extra)
            stack.callback(publisher.stop)
            args += ["--publish-port", str(publisher.port)]
        return generator(binaries, other_cpu, args, timeout=300)


def summarize(runs):
    return {
        "published_per_s": median([r["deliveries_per_s"] / max(r["subscribers"], 1) for r in runs]),
        "deliveries_per_s": median([r["deliveries_per_s"] for r in runs]),
        "loss": sum(r["loss"] for r in runs), "dup": sum(r["duplicates"] for r in runs),
        "rejected": sum(r.get("publish_rejected", 0) for r in runs),
        "cpu_us": median([r["server_cpu_per_delivery_us"] for r in runs]),
        "p50_ms": median([r["latency_us"]["p50"] / 1000 for r in runs]),
        "p99_ms": median([r["latency_us"]["p99"] / 1000 for r in runs]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, ".build", "bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--only", default="", help="comma-separated: latency,cpu,capacity")
    ap.add_argument("--rates", default="25000,50000,100000,150000", help="capacity: published msg/s to try, rising")
    opts = ap.parse_args()
    os.makedirs(opts.out, exist_ok=True)
    binaries = {"tickwire": os.path.join(ROOT, ".build", "release", "tickwire"),
                "bench": os.path.join(ROOT, ".build", "release", "tickwire-bench")}
    cpus = (0, 1 if (os.cpu_count() or 1) > 1 else 0)
    wanted = set(filter(None, opts.only.split(","))) or {"latency", "cpu", "capacity"}
    common = ["--warmup", "3", "--duration", str(opts.duration)]
    results = {"machine": machine(), "scenarios": {}}
    with redis_server(cpus[1]) as redis_url:
        for name, gen_args in (("latency", ["fanout", "--subscribers", "10", "--rate", "1000"]),
                               ("cpu", ["fanout", "--subscribers", "1000", "--rate", "200"])):
            if name not in wanted:
                continue
            runs = {m: [] for m in MODES}
            for rnd in range(opts.rounds):
                for mode in MODES:
                    print(f"bench_cluster: {name} {mode} round {rnd + 1}/{opts.rounds}", flush=True)
                    runs[mode].append(run_mode(mode, binaries, redis_url, gen_args + common, cpus))
            results["scenarios"][name] = {"args": gen_args, "runs": runs, "medians": {m: summarize(r) for m, r in runs.items()}}
        if "capacity" in wanted:
            steps = []
            for rate in [int(r) for r in opts.rates.split(",")]:
                print(f"bench_cluster: capacity 2-node {rate} msg/s", flush=True)
                r = run_mode("2-node", binaries, redis_url, ["fanout", "--subscribers", "2", "--rate", str(rate), "--batch", "100",
                                                             "--symbols", "10", "--warmup", "2", "--duration", "6"], cpus)
                steps.append({"rate": rate, **summarize([r]), "run": r})
                if r["loss"] or r["duplicates"]:
                    break
            results["scenarios"]["capacity"] = {"steps": steps}
    json.dump(results, open(os.path.join(opts.out, "cluster.json"), "w"), indent=2)
    text = markdown(results)
    open(os.path.join(opts.out, "cluster.md"), "w").write(text)
    print(text)
    return 0


def markdown(results):
    m = results["machine"]
    lines = [f"# Cluster through Redis ({m['date']})", "",
             f"{m['cpus']} CPUs, {m['cpu_model']}. The subscribers' node on CPU 0; generator, redis-server and the "
             "publishing node on CPU 1. Medians over rounds, modes alternated.", ""]

    def fmt(v, d=2):
        return "-" if v is None else f"{v:,.{d}f}"

    for name, title in (("latency", "1,000 msg/s to 10 subscribers"), ("cpu", "1,000 subscribers x 200 msg/s")):
        s = results["scenarios"].get(name)
        if not s:
            continue
        base = s["medians"]["single"]
        lines += [f"## {title}", "", "| mode | deliveries/s | loss | dup | p50 (ms) | p99 (ms) | p50 added (ms) | CPU/delivery (us) | vs single |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for mode, v in s["medians"].items():
            added = v["p50_ms"] - base["p50_ms"] if v["p50_ms"] is not None and base["p50_ms"] is not None else None
            ratio = f"{v['cpu_us'] / base['cpu_us']:.2f}x" if v["cpu_us"] and base["cpu_us"] else "-"
            lines.append(f"| {mode} | {fmt(v['deliveries_per_s'], 0)} | {v['loss']} | {v['dup']} | {fmt(v['p50_ms'], 3)} | "
                         f"{fmt(v['p99_ms'], 3)} | {fmt(added, 3)} | {fmt(v['cpu_us'])} | {ratio} |")
        lines.append("")
    cap = results["scenarios"].get("capacity")
    if cap:
        lines += ["## Capacity: 2 nodes, 100 messages per POST, 2 subscribers on the other node", "",
                  "| offered msg/s | published msg/s | deliveries/s | loss | dup | refused | p50 (ms) | p99 (ms) |", "|---|---|---|---|---|---|---|---|"]
        for st in cap["steps"]:
            lines.append(f"| {st['rate']:,} | {fmt(st['published_per_s'], 0)} | {fmt(st['deliveries_per_s'], 0)} | {st['loss']} | {st['dup']} | "
                         f"{st['rejected']} | {fmt(st['p50_ms'], 2)} | {fmt(st['p99_ms'], 2)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
