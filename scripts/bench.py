#!/usr/bin/env python3
"""`make bench`: Tickwire against the kernel-floor server, same generator, same machine.

The server under test runs pinned to one CPU and tickwire-bench to another. Every fan-out
and echo scenario alternates Tickwire and the floor server (../shared/bench-reference/
ceilingsrv.c) over several rounds and compares medians, because a small VM is noisy.
Writes one JSON file per run, summary.json and summary.md to the output folder. Never fails
on a number: it reports. Only loopback is ever loaded, and every run is bounded in time.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import free_port, stop_process, wait_for_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Server:
    """A server process pinned to one CPU, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, kind, binaries, cpu, extra):
        self.kind = kind
        self.port = free_port()
        if kind in ("tickwire", "baseline"):
            # "baseline": another Tickwire build (--baseline), run the same way, for before/after.
            cmd = [binaries[kind], "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--no-simulator", "--log-level", "error"] + extra
        else:
            cmd = [binaries["floor"], str(self.port)]
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            self.stop()
            raise RuntimeError(f"{kind} did not start: {' '.join(cmd)}")
        time.sleep(0.3)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        stop_process(self.proc)


def generator(binaries, cpu, args, timeout):
    cmd = ["taskset", "-c", str(cpu), binaries["bench"]] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"tickwire-bench failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.join(ROOT, ".build", "bench"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test of the harness)")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--floor-src", default=os.environ.get("TICKWIRE_FLOOR_SRC", os.path.join(ROOT, "..", "shared", "bench-reference", "ceilingsrv.c")))
    parser.add_argument("--baseline", default=os.environ.get("TICKWIRE_BASELINE_BIN", ""),
                        help="another tickwire binary (an earlier build) measured alongside, alternated like the others")
    opts = parser.parse_args()

    os.makedirs(opts.out, exist_ok=True)
    binaries = {"tickwire": os.path.join(ROOT, ".build", "release", "tickwire"),
                "bench": os.path.join(ROOT, ".build", "release", "tickwire-bench")}
    floor_available = os.path.exists(opts.floor_src)
    if floor_available:
        binaries["floor"] = os.path.join(opts.out, "ceilingsrv")
        subprocess.run(["cc", "-O2", "-o", binaries["floor"], opts.floor_src], check=True)
    else:
        print(f"bench: no floor server source at {opts.floor_src}; reporting Tickwire alone", file=sys.stderr)
    cpus = os.cpu_count() or 1
    server_cpu, generator_cpu = 0, (1 if cpus > 1 else 0)
    duration, warmup = (4, 1) if opts.quick else (10, 3)
    rounds = 1 if opts.quick else opts.rounds

    fanouts = [
        ("fanout-10k-x10", 10_000, 10),
        ("fanout-1k-x200", 1_000, 200),
        ("fanout-1k-x500", 1_000, 500),
    ]
    if opts.quick:
        fanouts = [("fanout-10k-x10", 2_000, 10), ("fanout-1k-x200", 500, 200), ("fanout-1k-x500", 500, 500)]
    selected = set(filter(None, opts.only.split(",")))

    def wanted(name):
        return not selected or name in selected

    servers = ["tickwire", "floor"] if floor_available else ["tickwire"]
    if opts.baseline:
        if not os.access(opts.baseline, os.X_OK):
            print(f"bench: --baseline {opts.baseline} is not an executable tickwire binary", file=sys.stderr)
            return 2
        binaries["baseline"] = opts.baseline
        servers.insert(1, "baseline")
    results = {"machine": machine(), "scenarios": {}}

    def run(name, kind, gen_args, extra=(), timeout=600):
        server = Server(kind, binaries, server_cpu, list(extra))
        try:
            r = generator(binaries, generator_cpu, gen_args + ["--port", str(server.port), "--server-pid", str(server.pid), "--label", kind], timeout)
        finally:
            server.stop()
        return r

    for name, subscribers, rate in fanouts:
        if not wanted(name):
            continue
        runs = {k: [] for k in servers}
        for rnd in range(rounds):
            for kind in servers:
                print(f"bench: {name} {kind} round {rnd + 1}/{rounds}", flush=True)
                r = run(name, kind, ["fanout", "--subscribers", str(subscribers), "--rate", str(rate),
                                     "--warmup", str(warmup), "--duration", str(duration)])
                json.dump(r, open(os.path.join(opts.out, f"{name}-{kind}-r{rnd + 1}.json"), "w"), indent=2)
                runs[kind].append(r)
        results["scenarios"][name] = {"kind": "fanout", "subscribers": subscribers, "rate": rate, "runs": runs}

    if wanted("idle-19k"):
        count = 3_000 if opts.quick else 19_000
        runs = {}
        for kind in servers:
            print(f"bench: idle-19k {kind}", flush=True)
            r = run("idle-19k", kind, ["connections", "--count", str(count), "--hold", "3", "--path", "/ws"])
            json.dump(r, open(os.path.join(opts.out, f"idle-19k-{kind}.json"), "w"), indent=2)
            runs[kind] = [r]
        results["scenarios"]["idle-19k"] = {"kind": "connections", "count": count, "runs": runs}

    if wanted("echo-50x64"):
        runs = {k: [] for k in servers}
        for rnd in range(rounds):
            for kind in servers:
                print(f"bench: echo-50x64 {kind} round {rnd + 1}/{rounds}", flush=True)
                r = run("echo-50x64", kind, ["echo", "--clients", "50", "--size", "64", "--warmup", str(warmup), "--duration", str(duration)],
                        extra=["--echo"] if kind != "floor" else [])
                json.dump(r, open(os.path.join(opts.out, f"echo-50x64-{kind}-r{rnd + 1}.json"), "w"), indent=2)
                runs[kind].append(r)
        results["scenarios"]["echo-50x64"] = {"kind": "echo", "runs": runs}

    if wanted("churn-100k"):
        cycles = 10_000 if opts.quick else 100_000
        runs = {}
        for kind in [k for k in servers if k != "floor"]:
            print(f"bench: churn {cycles} {kind}", flush=True)
            r = run("churn", kind, ["churn", "--cycles", str(cycles), "--concurrency", "200"], timeout=1200)
            json.dump(r, open(os.path.join(opts.out, f"churn-{kind}.json"), "w"), indent=2)
            runs[kind] = [r]
        results["scenarios"]["churn-100k"] = {"kind": "churn", "cycles": cycles, "runs": runs}

    if wanted("mass-disconnect"):
        # 19,000 connections end at once, three ways; the server's RSS is sampled every ms.
        count = 3_000 if opts.quick else 19_000
        runs = {}
        for mode in ("tcp", "close-frame", "server"):
            for kind in [k for k in servers if k != "floor"]:
                print(f"bench: mass-disconnect {mode} {kind}", flush=True)
                r = run("mass-disconnect", kind, ["connections", "--count", str(count), "--hold", "2", "--path", "/ws",
                                                   "--disconnect", mode, "--disconnect-watch", "3"])
                json.dump(r, open(os.path.join(opts.out, f"mass-disconnect-{mode}-{kind}.json"), "w"), indent=2)
                runs.setdefault(kind, []).append(r)
                # Client ports closed first sit in TIME_WAIT for 60 s; give loopback room.
                time.sleep(5)
        results["scenarios"]["mass-disconnect"] = {"kind": "mass-disconnect", "count": count, "runs": runs}

    json.dump(results, open(os.path.join(opts.out, "summary.json"), "w"), indent=2)
    table = markdown(results, floor_available)
    open(os.path.join(opts.out, "summary.md"), "w").write(table)
    print(table)
    return 0


def markdown(results, floor_available):
    m = results["machine"]
    lines = [f"# tickwire-bench ({m['date']})", "",
             f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, Linux {m['kernel']}. Server pinned to CPU 0, generator to CPU 1; "
             "medians over rounds, servers alternated.", ""]

    def ratio(a, b):
        return f"{a / b:.2f}x" if a is not None and b else "-"

    def fmt(v, digits=2):
        return "-" if v is None else f"{v:,.{digits}f}"

    fan = [(n, s) for n, s in results["scenarios"].items() if s["kind"] == "fanout"]
    if fan:
        lines += ["## Fan-out", "",
                  "| scenario | server | deliveries/s | loss | dup | server CPU/delivery (us) | ratio | p50 (ms) | p99 (ms) | p99 ratio | p99.9 (ms) | generator CPU |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, s in fan:
            med = {}
            for kind, runs in s["runs"].items():
                med[kind] = {
                    "dps": median([r["deliveries_per_s"] for r in runs]),
                    "loss": sum(r["loss"] for r in runs), "dup": sum(r["duplicates"] for r in runs),
                    "cpu": median([r["server_cpu_per_delivery_us"] for r in runs]),
                    "p50": median([r["latency_us"]["p50"] / 1000 for r in runs]),
                    "p99": median([r["latency_us"]["p99"] / 1000 for r in runs]),
                    "p999": median([r["latency_us"]["p99.9"] / 1000 for r in runs]),
                    "gen": median([r["generator_cpu_percent"] for r in runs]),
                }
            floor = med.get("floor", {})
            for kind, v in med.items():
                vs_floor = kind != "floor"
                lines.append(f"| {name} | {kind} | {fmt(v['dps'], 0)} | {v['loss']} | {v['dup']} | {fmt(v['cpu'])} | "
                             f"{ratio(v['cpu'], floor.get('cpu')) if vs_floor else ''} | {fmt(v['p50'], 1)} | {fmt(v['p99'], 1)} | "
                             f"{ratio(v['p99'], floor.get('p99')) if vs_floor else ''} | {fmt(v['p999'], 1)} | {fmt(v['gen'], 0)}% |")
            s["medians"] = med
        lines.append("")
    idle = results["scenarios"].get("idle-19k")
    if idle:
        lines += ["## Idle connections", "", "| server | connections | opened | failures | upgrades/s | RSS/connection (bytes) | anonymous RSS/connection (bytes) |", "|---|---|---|---|---|---|---|"]
        for kind, runs in idle["runs"].items():
            r = runs[0]
            lines.append(f"| {kind} | {idle['count']} | {r['opened']} | {r['failures']} | {fmt(r['upgrades_per_s'], 0)} | "
                         f"{fmt(r['rss_bytes_per_connection'], 0)} | {fmt(r['anon_bytes_per_connection'], 0)} |")
        lines.append("")
    echo = results["scenarios"].get("echo-50x64")
    if echo:
        lines += ["## Echo (50 clients, 64-byte messages)", "", "| server | round trips/s | server CPU/round trip (us) | p50 (us) | p99 (us) | generator CPU |", "|---|---|---|---|---|---|"]
        for kind, runs in echo["runs"].items():
            lines.append(f"| {kind} | {fmt(median([r['round_trips_per_s'] for r in runs]), 0)} | {fmt(median([r['server_cpu_per_round_trip_us'] for r in runs]))} | "
                         f"{fmt(median([r['latency_us']['p50'] for r in runs]), 0)} | {fmt(median([r['latency_us']['p99'] for r in runs]), 0)} | "
                         f"{fmt(median([r['generator_cpu_percent'] for r in runs]), 0)}% |")
        lines.append("")
    churn = results["scenarios"].get("churn-100k")
    if churn:
        lines += ["## Churn (connect, subscribe, receive, disconnect)", "",
                  "Baseline: after 5,000 warm-up cycles and 2 s of quiet; after: 2 s after the last of the measured cycles.", "",
                  "| server | cycles | completed | failures | cycles/s | RSS cold start | RSS baseline | RSS after | growth vs baseline | anonymous growth |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for kind, runs in churn["runs"].items():
            r = runs[0]
            lines.append(f"| {kind} | {churn['cycles']} | {r['completed']} | {r['failures']} | {fmt(r['cycles_per_s'], 0)} | {r['server_rss_cold_bytes']:,} | "
                         f"{r['server_rss_baseline_bytes']:,} | {r['server_rss_after_bytes']:,} | {fmt(r['rss_growth_percent'], 1)}% | {fmt(r['anon_growth_percent'], 1)}% |")
        lines.append("")
    mass = results["scenarios"].get("mass-disconnect")
    if mass:
        lines += [f"## Mass disconnect ({mass['count']:,} connections end at once)", "",
                  "tcp: clients close their sockets (a load balancer failing over); close-frame: clients send Close 1001 "
                  "(browsers leaving); server: SIGTERM, Close 1001 to everyone (a deploy). RSS sampled every millisecond.", "",
                  "| server | how | RSS held | peak during disconnect | peak rise per connection (bytes) | held per connection (bytes) |",
                  "|---|---|---|---|---|---|"]
        for kind, runs in mass["runs"].items():
            for r in runs:
                lines.append(f"| {kind} | {r.get('disconnect_mode', '?')} | {r.get('server_rss_held_bytes', 0):,} | "
                             f"{r.get('server_rss_disconnect_peak_bytes', 0):,} | {fmt(r.get('disconnect_peak_rise_bytes_per_connection'), 0)} | "
                             f"{fmt(r.get('rss_bytes_per_connection'), 0)} |")
        lines.append("")
    if not floor_available:
        lines.append("(No floor server: ratios omitted.)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
