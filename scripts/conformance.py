#!/usr/bin/env python3
"""Autobahn TestSuite conformance run (cases 1-13, 12 and 13 being permessage-deflate)
against Tickwire's /echo endpoint.

Starts the given tickwire binary with --echo, runs kosoku's fuzzing client against it,
reads the JSON report and prints a per-section table. Fails (exit 1) unless every case
is OK or INFORMATIONAL: no FAILED, no NON-STRICT, no UNIMPLEMENTED.

    .venv/bin/python scripts/conformance.py <tickwire-binary> [<report-dir>]

CONFORMANCE_CASES picks cases (kosoku's -i patterns, comma-separated; default: all).
"""
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import free_port, wait_for_port  # noqa: E402

SECTIONS = {
    "1": "Framing", "2": "Pings/Pongs", "3": "Reserved bits", "4": "Opcodes",
    "5": "Fragmentation", "6": "UTF-8 handling", "7": "Close handling",
    "9": "Limits/performance", "10": "Misc", "12": "permessage-deflate (payloads)",
    "13": "permessage-deflate (parameters)",
}


def main():
    binary = sys.argv[1]
    outdir = sys.argv[2] if len(sys.argv) > 2 else ".build/conformance"
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir, exist_ok=True)
    port = free_port()
    log = open(os.path.join(outdir, "server.log"), "w")
    server = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--echo",
         "--max-message-size", "16777216", "--log-level", "warning",
         # kosoku hashes an uncompressed text reply in a deflate session as str and errors
         # (12.1.1, 12.1.2); compress every reply so the codec is what is measured.
         "--compression-min-size", "0",
         # Level 1: the suite checks the codec, not the ratio, and its 128 KiB x 1000 cases
         # (12.x.10-18) must finish inside kosoku's per-case limit on a debug build.
         "--compression-level", "1"],
        stdout=log, stderr=log)
    try:
        if not wait_for_port(port):
            print("conformance: server did not start", file=sys.stderr)
            return 1
        # kosoku lives in the project's virtualenv, beside the interpreter running this script.
        kosoku = os.path.join(os.path.dirname(sys.executable), "kosoku")
        if not os.path.exists(kosoku):
            kosoku = shutil.which("kosoku") or "kosoku"
        picks = []
        for pattern in filter(None, os.environ.get("CONFORMANCE_CASES", "").split(",")):
            picks += ["-i", pattern.strip()]
        run = subprocess.run(
            [kosoku, "-m", "fuzzingclient", f"ws://127.0.0.1:{port}/echo", *picks, "-o", outdir],
            capture_output=True, text=True, timeout=1800)
        print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "(kosoku printed nothing)")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    if server.returncode not in (0, -15):
        print(f"conformance: server exited with {server.returncode}", file=sys.stderr)
    index = json.load(open(os.path.join(outdir, "index.json")))
    cases = next(iter(index.values()))
    table = collections.OrderedDict()
    bad = []
    for case_id in sorted(cases, key=lambda c: [int(x) for x in c.split(".")]):
        result = cases[case_id]
        section = case_id.split(".")[0]
        row = table.setdefault(section, collections.Counter())
        row[result["behavior"]] += 1
        if result["behavior"] not in ("OK", "INFORMATIONAL") or result.get("behaviorClose") not in ("OK", "INFORMATIONAL"):
            bad.append((case_id, result["behavior"], result.get("behaviorClose")))
    lines = ["| section | cases | OK | INFORMATIONAL | NON-STRICT | FAILED | other |",
             "|---|---|---|---|---|---|---|"]
    for section, row in table.items():
        other = sum(v for k, v in row.items() if k not in ("OK", "INFORMATIONAL", "NON-STRICT", "FAILED"))
        lines.append(f"| {section}. {SECTIONS.get(section, '')} | {sum(row.values())} | {row['OK']} | "
                     f"{row['INFORMATIONAL']} | {row['NON-STRICT']} | {row['FAILED']} | {other} |")
    summary = "\n".join(lines)
    print(summary)
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(summary + "\n")
    if bad:
        for case_id, behavior, close in bad:
            print(f"case {case_id}: {behavior} (close: {close})", file=sys.stderr)
        print(f"conformance: {len(bad)} cases below the bar (report: {outdir}/index.html)", file=sys.stderr)
        return 1
    print(f"conformance: all {sum(sum(r.values()) for r in table.values())} cases OK or INFORMATIONAL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
