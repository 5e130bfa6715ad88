#!/usr/bin/env bash
# Validates every file under deploy/ with a real validator: haproxy -c, nginx -t, promtool,
# systemd-analyze, /proc/sys, and structural checks (Python) for the Grafana dashboard,
# the Artillery scenarios and the Dockerfile (no Docker engine or npm on build machines).
# Prints one line per check and exits non-zero if any check fails.
#
# Installs the validators it needs on Debian, idempotently (haproxy, nginx, prometheus
# for promtool, openssl, systemd, python3-yaml when PyYAML is missing). Installing does
# not start the packages' services: a temporary policy-rc.d forbids it, and services
# enabled by the install are disabled again. Run as root, or with sudo available.
#
# One file on purpose (about 850 lines): one check per deploy file, run by one command in
# make test and CI; the Python checks are one function per file, dispatched by name.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
DEPLOY=$ROOT/deploy
export PATH="$PATH:/usr/sbin:/sbin"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")
POLICY_CREATED=""
cleanup() {
    rm -rf "$TMP"
    if [ -n "$POLICY_CREATED" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# ---- Validators -------------------------------------------------------------------------

PY=python3
packages=(haproxy nginx prometheus openssl systemd redis-server redis-tools)
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    # PyYAML from Debian, used through Debian's interpreter.
    packages+=(python3 python3-yaml)
    PY=/usr/bin/python3
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "validate-deploy: installing ${missing[*]}"
    # Keep the packages' services (nginx on :80, haproxy, prometheus) from starting.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 0755 /usr/sbin/policy-rc.d
        POLICY_CREATED=1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$TMP/apt.log" 2>&1 \
        || { cat "$TMP/apt.log"; exit 1; }
    if [ -d /run/systemd/system ]; then
        for unit in nginx haproxy prometheus redis-server; do
            case " ${missing[*]} " in *" $unit "*) $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true ;; esac
        done
    fi
fi

# ---- Reporting --------------------------------------------------------------------------

checks=0
failures=0
# run NAME COMMAND...: one line per check; on failure, the command's output indented.
run() {
    local name=$1
    shift
    checks=$((checks + 1))
    if "$@" >"$TMP/out" 2>&1; then
        printf 'ok    %s\n' "$name"
        sed -n 's/^WARN: /      warning: /p' "$TMP/out"
    else
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$TMP/out"
        failures=$((failures + 1))
    fi
}

# Structural checks live in one Python file; each check is `checks.py NAME`.
cat >"$TMP/checks.py" <<'PYTHON'
import glob, json, os, re, sys

ROOT = os.environ["ROOT"]
DEPLOY = os.path.join(ROOT, "deploy")
errors = []

def err(msg):
    errors.append(msg)

def require_all(text, checks, flags=0):
    """An error for each (pattern, what) whose pattern `text` does not contain."""
    for pattern, what in checks:
        if not re.search(pattern, text, flags):
            err(f"missing: {what}")

def warn(msg):
    print("WARN: " + msg)

# The metrics Tickwire exposes; dashboards and alerts may use only these.
COUNTERS_GAUGES = {
    "websocket_connections_active", "websocket_connections_total",
    "websocket_messages_sent_total", "websocket_messages_received_total",
    "websocket_errors_connection_total", "websocket_errors_parsing_total",
    "websocket_reconnections_total",
    "tickwire_slow_consumer_conflated_total", "tickwire_slow_consumer_disconnects_total",
    "tickwire_broadcast_failures_total", "tickwire_backlog_bytes", "tickwire_history_messages",
    "tickwire_publish_requests_total", "tickwire_publish_rejected_total",
    "tickwire_worker_connections", "tickwire_connections_limit", "tickwire_build_info",
}
HISTOGRAMS = {"websocket_broadcast_latency_seconds", "websocket_message_size_bytes"}
SERIES = COUNTERS_GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}

def metric_names(expr):
    """Metric names referenced by a PromQL expression (functions, keywords, label
    matchers, durations, grouping labels and strings removed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        word = m.group(0)
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names

def series_base(name):
    for h in HISTOGRAMS:
        if name.startswith(h + "_"):
            return h
    return name

def check_exprs(where, expr):
    names = metric_names(expr)
    if not names:
        err(f"{where}: expression references no metric: {expr!r}")
    for n in sorted(names - SERIES):
        err(f"{where}: unknown metric {n!r} in {expr!r}")
    return names

# ---- sysctl --------------------------------------------------------------------------
def check_sysctl():
    path = os.path.join(DEPLOY, "sysctl/99-tickwire.conf")
    in_container = os.environ.get("IN_CONTAINER") == "1"
    seen = {}
    prev = ""
    for no, raw in enumerate(open(path), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            if line:
                prev = line
            continue
        if "=" not in line:
            err(f"line {no}: not 'key = value': {line!r}")
            prev = line
            continue
        key, value = (p.strip() for p in line.split("=", 1))
        if not prev.startswith(("#", ";")):
            err(f"line {no}: {key} has no comment line right above it")
        prev = line
        if key in seen:
            err(f"line {no}: {key} already set on line {seen[key]}")
        seen[key] = no
        if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_-]+)+", key):
            err(f"line {no}: malformed key {key!r}")
            continue
        fields = value.split()
        if not fields or not all(re.fullmatch(r"-?\d+", f) for f in fields):
            err(f"line {no}: {key}: value {value!r} is not integers")
        proc = "/proc/sys/" + key.replace(".", "/")
        try:
            current = open(proc).read().split()
        except OSError as e:
            namespaced = key.startswith("net.")
            if namespaced and in_container:
                warn(f"{key}: {proc} not readable in this container ({e.strerror}); skipped")
            else:
                err(f"line {no}: {key}: {proc}: {e.strerror}")
            continue
        if len(current) != len(fields):
            err(f"line {no}: {key} takes {len(current)} value(s), got {len(fields)}")
    if not seen:
        err("no settings found")
    # The unit's descriptor limit must fit under fs.nr_open.
    unit = open(os.path.join(DEPLOY, "systemd/tickwire.service")).read()
    m = re.search(r"^LimitNOFILE=(\d+)", unit, re.M)
    nr_open = None
    for raw in open(path):
        mm = re.match(r"\s*fs\.nr_open\s*=\s*(\d+)", raw)
        if mm:
            nr_open = int(mm.group(1))
    if m and nr_open is not None and nr_open < int(m.group(1)):
        err(f"fs.nr_open {nr_open} is below LimitNOFILE={m.group(1)} in tickwire.service")
    for k in ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.core.netdev_max_backlog",
              "net.ipv4.ip_local_port_range", "fs.file-max", "fs.nr_open", "net.ipv4.tcp_mem",
              "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_tw_reuse"):
        if k not in seen:
            err(f"missing setting {k}")

# ---- systemd unit and env file (static part; systemd-analyze runs separately) --------
def parse_duration(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?", text.strip())
    if not m:
        return None
    mult = {"ms": 0.001, None: 1, "s": 1, "min": 60, "m": 60, "h": 3600}[m.group(2)]
    return float(m.group(1)) * mult

def check_unit():
    path = os.path.join(DEPLOY, "systemd/tickwire.service")
    keys = {}
    section = None
    for raw in open(path):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        k, _, v = line.partition("=")
        keys.setdefault((section, k.strip()), []).append(v.strip())
    def val(k):
        return keys.get(("[Service]", k), [None])[-1]
    expect = {
        "ExecStart": "/usr/local/bin/tickwire", "EnvironmentFile": "/etc/tickwire/tickwire.env",
        "LimitNOFILE": "1048576", "Restart": "on-failure", "KillSignal": "SIGTERM",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes",
    }
    for k, want in expect.items():
        got = val(k)
        if got != want:
            err(f"[Service] {k}={got!r}, expected {want!r}")
    if "@system-service" not in (keys.get(("[Service]", "SystemCallFilter")) or []):
        err("[Service] SystemCallFilter=@system-service missing")
    if val("DynamicUser") != "yes" and not val("User"):
        err("[Service] neither DynamicUser=yes nor a dedicated User=")
    if not val("RestartSec"):
        err("[Service] RestartSec missing (restart backoff)")
    if ("[Unit]", "StartLimitBurst") not in keys:
        err("[Unit] StartLimitBurst missing (crash-loop cap)")
    # TimeoutStopSec must leave the graceful shutdown time to finish.
    env = open(os.path.join(DEPLOY, "systemd/tickwire.env")).read()
    m = re.search(r"^#?\s*TICKWIRE_SHUTDOWN_GRACE=(\S+)", env, re.M)
    grace = parse_duration(m.group(1)) if m else None
    stop = parse_duration(val("TimeoutStopSec") or "")
    if grace is None:
        err("tickwire.env: TICKWIRE_SHUTDOWN_GRACE default not found")
    elif stop is None or stop <= grace + 2:
        err(f"TimeoutStopSec={val('TimeoutStopSec')} must exceed the shutdown grace ({grace:g}s) plus a margin")

def check_env():
    path = os.path.join(DEPLOY, "systemd/tickwire.env")
    documented = set()
    for no, raw in enumerate(open(path), 1):
        line = raw.rstrip("\n")
        s = line.strip()
        if not s:
            continue
        m = re.match(r"#\s?(TICKWIRE_[A-Z0-9_]+)=", s)
        if m:
            documented.add(m.group(1))
            continue
        if s.startswith("#"):
            continue
        m = re.fullmatch(r"(TICKWIRE_[A-Z0-9_]+)=(\S*)", s)
        if not m:
            err(f"line {no}: not a TICKWIRE_*=value assignment: {s!r}")
        else:
            documented.add(m.group(1))
    # Every option the binary reads from the environment today...
    expected = set()
    main = os.path.join(ROOT, "Sources/tickwire/main.swift")
    try:
        src = open(main).read()
    except OSError:
        src = ""
    lists = re.findall(r"let (?:options|flags) = \[([^\]]*)\]", src)
    if lists:
        for body in lists:
            for name in re.findall(r'"([a-z0-9-]+)"', body):
                expected.add("TICKWIRE_" + name.upper().replace("-", "_"))
        for name in re.findall(r'variable\("([a-z0-9-]+)"\)', src):
            expected.add("TICKWIRE_" + name.upper().replace("-", "_"))
    else:
        warn("could not find the option lists in Sources/tickwire/main.swift; checked the planned flags only")
    # ...and the flags announced for the next release.
    expected |= {"TICKWIRE_MAX_BACKLOG", "TICKWIRE_HISTORY", "TICKWIRE_PUBLISH_TOKEN",
                 "TICKWIRE_SIMULATOR", "TICKWIRE_SYMBOLS", "TICKWIRE_SIM_RATE"}
    for v in sorted(expected - documented):
        err(f"{v} is not documented in tickwire.env")

# ---- haproxy and nginx content (the real validators run separately) ------------------
def check_haproxy_content():
    text = open(os.path.join(DEPLOY, "haproxy/haproxy.cfg")).read()
    require_all(text, [
        (r"^\s*balance\s+leastconn\b", "balance leastconn"),
        (r"^\s*timeout\s+tunnel\s+1h\b", "timeout tunnel 1h"),
        (r"^\s*timeout\s+client-fin\s", "timeout client-fin"),
        (r"^\s*timeout\s+server-fin\s", "timeout server-fin"),
        (r"^\s*option\s+httpchk\s+GET\s+/health\b", "option httpchk GET /health"),
        (r"^\s*http-check\s+expect\s+status\s+200\b", "http-check expect status 200"),
        (r"^\s*stats\s+enable\b", "stats page"),
        (r"^\s*maxconn\s+\d+", "maxconn"),
    ], re.M)
    servers = re.findall(r"^\s*server\s+\S+\s+(\S+)", text, re.M)
    if len(servers) < 2:
        err("fewer than two backend servers")
    for addr in servers:
        if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", addr):
            err(f"server address {addr!r} is not an IP:port (a name must resolve at start-up)")
    stats_ports = re.findall(r"^\s*bind\s+\S*:(\d+)", text, re.M)
    if "8404" not in stats_ports:
        err("no stats listener on its own port (8404)")

def check_haproxy_cluster_content():
    text = open(os.path.join(DEPLOY, "haproxy/haproxy-cluster.cfg")).read()
    require_all(text, [
        (r"^\s*balance\s+leastconn\b", "balance leastconn"),
        (r"^\s*timeout\s+tunnel\s+1h\b", "timeout tunnel 1h"),
        (r"^\s*option\s+httpchk\s+GET\s+/health\b", "option httpchk GET /health"),
        (r"^\s*http-check\s+expect\s+!\s+string\s+draining\b", "draining nodes taken out"),
        (r"^\s*option\s+redispatch\b", "option redispatch"),
    ], re.M)
    m = re.search(r"^backend\s+tickwire_cluster\b(.*?)(?=^\S)", text, re.M | re.S)
    servers = re.findall(r"^\s*server\s+\S+\s+(\S+)", m.group(1), re.M) if m else []
    if len(set(servers)) != 3:
        err(f"backend tickwire_cluster should list three distinct nodes, found {servers}")
    for addr in servers:
        if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", addr):
            err(f"server address {addr!r} is not an IP:port")

def check_redis_content():
    """The settings whose reasons README and deploy/README state; the live check runs separately."""
    conf = {}
    for raw in open(os.path.join(DEPLOY, "redis/redis.conf")):
        s = raw.strip()
        if s and not s.startswith("#"):
            k, _, v = s.partition(" ")
            conf[k.lower()] = v.strip()
    want = {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction", "protected-mode": "yes"}
    for k, v in want.items():
        if conf.get(k) != v:
            err(f"redis.conf: {k} is {conf.get(k)!r}, expected {v!r}")
    if not re.fullmatch(r"\d+(mb|gb)", conf.get("maxmemory", ""), re.I):
        err(f"redis.conf: maxmemory must be a bounded size (got {conf.get('maxmemory')!r})")
    bind = conf.get("bind", "").split()
    if "127.0.0.1" not in bind or any(a in ("0.0.0.0", "*", "::", "-::*", "*") for a in bind):
        err(f"redis.conf: bind must include 127.0.0.1 and no wildcard (got {bind})")

def check_nginx_content():
    text = open(os.path.join(DEPLOY, "nginx/tickwire.conf")).read()
    require_all(text, [
        (r"map\s+\$http_upgrade\s+\$\w+", "map $http_upgrade"),
        (r"proxy_set_header\s+Upgrade\s+\$http_upgrade", "Upgrade header"),
        (r"proxy_set_header\s+Connection\s+\$\w+", "Connection header from the map"),
        (r"proxy_buffering\s+off", "proxy_buffering off"),
        (r"listen\s+443\s+ssl", "listen 443 ssl"),
        (r"ssl_certificate\s+/etc/ssl/tickwire/fullchain\.pem;", "ssl_certificate /etc/ssl/tickwire/fullchain.pem"),
        (r"ssl_certificate_key\s+/etc/ssl/tickwire/privkey\.pem;", "ssl_certificate_key /etc/ssl/tickwire/privkey.pem"),
        (r"proxy_http_version\s+1\.1", "proxy_http_version 1.1"),
    ])
    if re.search(r"^\s*listen[^;]*\bhttp2\b", text, re.M):
        err("http2 on a listener: WebSocket upgrades need HTTP/1.1")
    ws = re.search(r"location\s+=?\s*/ws\s*\{(.*?)\n\s*\}", text, re.S)
    if not ws:
        err("no location for /ws")
    else:
        m = re.search(r"proxy_read_timeout\s+(\S+);", ws.group(1))
        t = parse_duration(m.group(1)) if m else 60
        if t is None or t <= 30:
            err(f"/ws proxy_read_timeout {m.group(1) if m else '60s (default)'} is not above the 30 s heartbeat")

# ---- Prometheus rules: metric names and the spec's five alerts -----------------------
def check_alert_metrics():
    import yaml
    doc = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus/alerts.yml")))
    alerts = {}
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            if "alert" in r:
                alerts[r["alert"]] = r
                check_exprs(r["alert"], r["expr"])
    want = {
        "TickwireNoActiveConnections": "critical", "TickwireBroadcastLatencyHigh": "high",
        "TickwireConnectionErrors": "high", "TickwireConnectionCapacity": "medium",
        "TickwireBroadcastFailures": "medium",
    }
    for name, sev in want.items():
        r = alerts.get(name)
        if not r:
            err(f"alert {name} missing")
            continue
        if r.get("labels", {}).get("severity") != sev:
            err(f"{name}: severity should be {sev}")
        ann = r.get("annotations", {})
        if not ann.get("summary") or not ann.get("description"):
            err(f"{name}: summary and description annotations required")
        if not r.get("for"):
            err(f"{name}: no `for:` duration")
    if set(alerts) - set(want):
        warn(f"extra alerts: {sorted(set(alerts) - set(want))}")
    tests = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus/alerts.test.yml")))
    fired, quiet = set(), set()
    for t in tests.get("tests", []):
        for a in t.get("alert_rule_test", []):
            (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
    for name in want:
        if name not in fired:
            err(f"alerts.test.yml never makes {name} fire")
        if name not in quiet:
            err(f"alerts.test.yml has no case where {name} must not fire")

# ---- Grafana ---------------------------------------------------------------------------
def check_grafana():
    path = os.path.join(DEPLOY, "grafana/tickwire-dashboard.json")
    d = json.load(open(path))
    if not (36 <= int(d.get("schemaVersion", 0)) <= 41):
        err(f"schemaVersion {d.get('schemaVersion')} outside 36..41")
    for k in ("title", "uid", "panels", "templating"):
        if k not in d:
            err(f"missing top-level {k!r}")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err("templating: DS_PROMETHEUS must be a datasource variable of type prometheus")
    inst = variables.get("instance")
    if not inst or inst.get("type") != "query":
        err("templating: 'instance' query variable missing")
    else:
        if (inst.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
            err("templating: 'instance' must query ${DS_PROMETHEUS}")
        q = inst.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((\w+),\s*instance\)", (q or "").strip())
        if not m or m.group(1) not in SERIES:
            err(f"templating: 'instance' query {q!r} must be label_values(<tickwire metric>, instance)")
    rows, current, ids, used, boxes = [], None, set(), set(), []
    def walk(panels):
        nonlocal current
        for p in panels:
            pid = p.get("id")
            if pid in ids:
                err(f"duplicate panel id {pid}")
            ids.add(pid)
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] + g["w"] > 24:
                err(f"panel {p.get('title')!r}: bad gridPos {g}")
            else:
                for other_title, o in boxes:
                    if g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"] and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]:
                        err(f"panel {p.get('title')!r} overlaps {other_title!r}")
                boxes.append((p.get("title"), g))
            if p.get("type") == "row":
                current = {"title": p.get("title"), "count": 0}
                rows.append(current)
                walk(p.get("panels") or [])
                continue
            if current is None:
                err(f"panel {p.get('title')!r} is above the first row")
            else:
                current["count"] += 1
            title = p.get("title") or "(untitled)"
            if (p.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
                err(f"panel {title!r}: datasource must be ${{DS_PROMETHEUS}}")
            targets = p.get("targets") or []
            if not targets:
                err(f"panel {title!r}: no targets")
            refs = set()
            for t in targets:
                expr = t.get("expr") or ""
                if t.get("refId") in refs:
                    err(f"panel {title!r}: duplicate refId {t.get('refId')}")
                refs.add(t.get("refId"))
                if (t.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
                    err(f"panel {title!r}: target {t.get('refId')} datasource must be ${{DS_PROMETHEUS}}")
                names = check_exprs(f"panel {title!r}", expr)
                used.update(series_base(n) for n in names)
                if '$instance' not in expr:
                    err(f"panel {title!r}: expression ignores the $instance variable: {expr!r}")
                if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                    err(f"panel {title!r}: unbalanced brackets in {expr!r}")
    walk(d.get("panels", []))
    titles = [r["title"] for r in rows]
    want = ["Real-time Connections", "Message Flow", "Client Health"]
    if titles != want:
        err(f"row titles {titles}, expected {want}")
    for r in rows:
        if r["count"] == 0:
            err(f"row {r['title']!r} has no panels")
    unused = (COUNTERS_GAUGES | HISTOGRAMS) - used
    if unused:
        err(f"metrics shown on no panel: {sorted(unused)}")

# ---- Artillery ------------------------------------------------------------------------
CHANNELS = {"MarketData", "ChartUpdate", "PositionUpdate", "TradeExecuted", "AISignalReceived",
            "BotStatusUpdate", "Error", "prices", "charts", "positions", "trades", "signals",
            "status", "errors"}

def check_artillery():
    import yaml
    files = ["connect-subscribe-hold.yml", "spike.yml", "soak.yml"]
    for f in files:
        path = os.path.join(DEPLOY, "artillery", f)
        if not os.path.exists(path):
            err(f"{f}: missing")
            continue
        doc = yaml.safe_load(open(path))
        cfg = doc.get("config") or {}
        target = cfg.get("target")
        if not isinstance(target, str) or not re.match(r"wss?://", target):
            err(f"{f}: config.target must be a ws:// or wss:// URL (got {target!r})")
        phases = cfg.get("phases")
        if not isinstance(phases, list) or not phases:
            err(f"{f}: config.phases must be a non-empty list")
            phases = []
        for i, ph in enumerate(phases):
            if "pause" in ph:
                continue
            if not isinstance(ph.get("duration"), (int, float)) or ph["duration"] <= 0:
                err(f"{f}: phase {i}: duration must be a positive number")
            rates = [k for k in ("arrivalRate", "arrivalCount") if k in ph]
            if not rates:
                err(f"{f}: phase {i}: needs arrivalRate or arrivalCount")
            for k in rates + (["rampTo"] if "rampTo" in ph else []):
                if not isinstance(ph[k], (int, float)) or ph[k] < 0:
                    err(f"{f}: phase {i}: {k} must be a number >= 0")
        scenarios = doc.get("scenarios")
        if not isinstance(scenarios, list) or not scenarios:
            err(f"{f}: scenarios must be a non-empty list")
            continue
        for s in scenarios:
            name = s.get("name", "?")
            if s.get("engine") != "ws":
                err(f"{f}: scenario {name!r}: engine must be ws")
            flow = s.get("flow") or []
            if not flow or not isinstance(flow[0], dict) or "connect" not in flow[0]:
                err(f"{f}: scenario {name!r}: flow must start with connect")
            elif not re.search(r"/ws(\?|$)", str(flow[0]["connect"])):
                err(f"{f}: scenario {name!r}: connect must open /ws (got {flow[0]['connect']!r})")
            seen = {"think": 0, "Ping": 0, "Subscribe": 0}
            def steps(items, top):
                for i, st in enumerate(items):
                    if not isinstance(st, dict):
                        err(f"{f}: {name!r}: step {st!r} is not a mapping")
                        continue
                    kind = [k for k in st if k in ("connect", "send", "think", "loop")]
                    if len(kind) != 1:
                        err(f"{f}: {name!r}: step {st!r} must be one of connect/send/think/loop")
                        continue
                    k = kind[0]
                    extra = set(st) - {k, "count"} if k == "loop" else set(st) - {k}
                    if extra:
                        err(f"{f}: {name!r}: unexpected keys {sorted(extra)} in {k} step")
                    if k == "connect" and not (top and i == 0):
                        err(f"{f}: {name!r}: connect only as the first step")
                    elif k == "think":
                        if not isinstance(st["think"], (int, float)) or st["think"] <= 0:
                            err(f"{f}: {name!r}: think must be a positive number of seconds")
                        seen["think"] += 1
                    elif k == "loop":
                        if not isinstance(st.get("count"), int) or st["count"] <= 0:
                            err(f"{f}: {name!r}: loop needs a positive integer count (unbounded loops never end the test)")
                        if not isinstance(st["loop"], list) or not st["loop"]:
                            err(f"{f}: {name!r}: loop must hold a list of steps")
                        else:
                            steps(st["loop"], False)
                    elif k == "send":
                        msg = st["send"]
                        if not isinstance(msg, dict) or msg.get("type") not in ("Subscribe", "Unsubscribe", "Ping"):
                            err(f"{f}: {name!r}: send must be a protocol message (Subscribe/Unsubscribe/Ping), got {msg!r}")
                            continue
                        seen[msg["type"]] = seen.get(msg["type"], 0) + 1
                        data = msg.get("data")
                        if msg["type"] in ("Subscribe", "Unsubscribe"):
                            if not isinstance(data, dict):
                                err(f"{f}: {name!r}: {msg['type']} needs a data object")
                                continue
                            bad = [c for c in data.get("channels", []) if c not in CHANNELS]
                            if bad:
                                err(f"{f}: {name!r}: unknown channels {bad}")
                            syms = data.get("symbols", [])
                            if not all(isinstance(x, str) and re.fullmatch(r"[A-Z0-9]+", x) for x in syms):
                                err(f"{f}: {name!r}: symbols must be upper-case strings: {syms!r}")
                        json.dumps(msg)
            steps(flow, True)
            if not seen["Subscribe"]:
                err(f"{f}: {name!r}: never subscribes")
            if not seen["think"] or not seen["Ping"]:
                err(f"{f}: {name!r}: should hold the connection with think + periodic Ping")
    if not os.path.exists(os.path.join(DEPLOY, "artillery/README.md")):
        err("artillery/README.md missing")

# ---- Dockerfile -----------------------------------------------------------------------
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
                "MAINTAINER"}

def check_dockerfile():
    path = os.path.join(DEPLOY, "docker/Dockerfile")
    lines, buf = [], ""
    for raw in open(path):
        s = raw.rstrip("\n")
        if not buf and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if buf and s.lstrip().startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append((buf + s).strip())
        buf = ""
    if buf:
        err("file ends inside a line continuation")
    stages = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr not in INSTRUCTIONS:
            err(f"unknown instruction {instr!r}")
            continue
        if instr == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            if not m:
                err(f"bad FROM: {args!r}")
                continue
            stages.append({"image": m.group(1), "name": m.group(2), "body": []})
        elif not stages:
            if instr != "ARG":
                err(f"{instr} before the first FROM")
        else:
            stages[-1]["body"].append((instr, args.strip()))
    if len(stages) < 2:
        err("expected a multi-stage build (build + runtime)")
        return
    build, final = stages[0], stages[-1]
    if not re.fullmatch(r"swift:6[\w.-]*", build["image"]):
        err(f"build stage should use an official Swift 6 image, got {build['image']!r}")
    if re.match(r"swift:", final["image"]):
        err("runtime stage must not be the Swift toolchain image")
    if not re.match(r"(ubuntu|debian):", final["image"]):
        err(f"runtime stage should be a slim Debian/Ubuntu image, got {final['image']!r}")
    bruns = " ".join(a for i, a in build["body"] if i == "RUN")
    for pkg in ("libev-dev", "libssl-dev"):
        if pkg not in bruns:
            err(f"build stage does not install {pkg}")
    if not re.search(r"swift build\b[^&;]*-c release[^&;]*--static-swift-stdlib|swift build\b[^&;]*--static-swift-stdlib[^&;]*-c release", bruns):
        err("build stage must run `swift build -c release --static-swift-stdlib`")
    fruns = " ".join(a for i, a in final["body"] if i == "RUN")
    for pkg in ("libev4", "libssl3", "ca-certificates"):
        if pkg not in fruns:
            err(f"runtime stage does not install {pkg}")
    names = {s["name"] for s in stages if s["name"]}
    froms = [a for i, a in final["body"] if i == "COPY" and "--from=" in a]
    if not froms or not all(re.search(r"--from=(\S+)", a).group(1) in names for a in froms):
        err("runtime stage must COPY --from= a named build stage")
    for st in stages:
        for i, a in st["body"]:
            if i in ("COPY", "ADD") and "--from=" not in a:
                parts = [p for p in a.split() if not p.startswith("--")]
                for src in parts[:-1]:
                    if not glob.glob(os.path.join(ROOT, src)):
                        err(f"{i} source {src!r} does not exist in the build context (repo root)")
    users = [a for i, a in final["body"] if i == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        err("runtime stage must switch to a non-root USER")
    if not any(i == "EXPOSE" and "8080" in a.split() for i, a in final["body"]):
        err("EXPOSE 8080 missing")
    hc = [a for i, a in final["body"] if i == "HEALTHCHECK"]
    if not hc or "/health" not in hc[-1]:
        err("HEALTHCHECK hitting /health missing")
    if not any(i == "STOPSIGNAL" and a == "SIGTERM" for i, a in final["body"]):
        err("STOPSIGNAL SIGTERM missing")
    for i, a in final["body"] + [("HEALTHCHECK-CMD", h.split(" CMD ", 1)[-1]) for h in hc]:
        if i in ("ENTRYPOINT", "CMD", "HEALTHCHECK-CMD") and a.startswith("["):
            try:
                v = json.loads(a)
                assert isinstance(v, list) and all(isinstance(x, str) for x in v)
            except Exception:
                err(f"{i}: exec form is not a JSON array of strings: {a!r}")
    ep = [a for i, a in final["body"] if i == "ENTRYPOINT"]
    if not ep or "tickwire" not in ep[-1]:
        err("ENTRYPOINT tickwire missing")
    ignore = os.path.join(DEPLOY, "docker/Dockerfile.dockerignore")
    if not os.path.exists(ignore) or ".build" not in open(ignore).read():
        err("deploy/docker/Dockerfile.dockerignore must keep .build out of the context")

def check_readme():
    text = open(os.path.join(DEPLOY, "README.md")).read()
    for ref in sorted(set(re.findall(r"`((?:systemd|sysctl|haproxy|nginx|prometheus|grafana|artillery|docker)/[\w./-]+)`", text))):
        if not os.path.exists(os.path.join(DEPLOY, ref)):
            err(f"README.md mentions {ref}, which does not exist")

CHECKS = {
    "sysctl": check_sysctl, "unit": check_unit, "env": check_env,
    "haproxy": check_haproxy_content, "nginx": check_nginx_content,
    "haproxy-cluster": check_haproxy_cluster_content, "redis": check_redis_content,
    "alerts": check_alert_metrics, "grafana": check_grafana,
    "artillery": check_artillery, "dockerfile": check_dockerfile, "readme": check_readme,
}
try:
    CHECKS[sys.argv[1]]()
except Exception as e:  # a crash in a check is a failure of that check, with its reason
    err(f"{type(e).__name__}: {e}")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYTHON

export ROOT
IN_CONTAINER=0
if systemd-detect-virt --container --quiet 2>/dev/null || [ -e /.dockerenv ] || [ -e /run/.containerenv ]; then
    IN_CONTAINER=1
fi
export IN_CONTAINER
pycheck() { "$PY" "$TMP/checks.py" "$1"; }

# ---- HAProxy ----------------------------------------------------------------------------
# haproxy -c exits 0 on warnings; treat any warning as a failure too.
haproxy_check() {
    haproxy -c -f "$DEPLOY/haproxy/haproxy.cfg" >"$TMP/haproxy.out" 2>&1 || { cat "$TMP/haproxy.out"; return 1; }
    if grep -E '\[(WARNING|ALERT)\]' "$TMP/haproxy.out"; then return 1; fi
    pycheck haproxy
}
run "haproxy.cfg (haproxy -c)" haproxy_check

haproxy_cluster_check() {
    haproxy -c -f "$DEPLOY/haproxy/haproxy-cluster.cfg" >"$TMP/haproxy-cluster.out" 2>&1 || { cat "$TMP/haproxy-cluster.out"; return 1; }
    if grep -E '\[(WARNING|ALERT)\]' "$TMP/haproxy-cluster.out"; then return 1; fi
    pycheck haproxy-cluster
}
run "haproxy-cluster.cfg (haproxy -c, three nodes)" haproxy_cluster_check

# ---- Redis ------------------------------------------------------------------------------
# A real redis-server on the shipped file, with only the port, directory, log and pid moved
# into $TMP (on a free loopback port): it must start, answer PING, and report every
# setting the file promises (CONFIG GET), then it is shut down without saving.
redis_check() {
    local d=$TMP/redis port pid
    mkdir -p "$d"
    port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server "$DEPLOY/redis/redis.conf" --port "$port" --dir "$d" --logfile "$d/redis.log" \
        --pidfile "$d/redis.pid" --daemonize no --supervised no >/dev/null 2>&1 &
    pid=$!
    local up=""
    for _ in $(seq 1 100); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$up" ]; then
        echo "redis-server did not answer PING on 127.0.0.1:$port"; cat "$d/redis.log" 2>/dev/null
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 1
    fi
    local bad=0 key want got
    for pair in appendonly=yes appendfsync=everysec maxmemory-policy=noeviction protected-mode=yes; do
        key=${pair%%=*}; want=${pair#*=}
        got=$(redis-cli -h 127.0.0.1 -p "$port" config get "$key" | sed -n 2p)
        if [ "$got" != "$want" ]; then echo "CONFIG GET $key: $got, expected $want"; bad=1; fi
    done
    got=$(redis-cli -h 127.0.0.1 -p "$port" config get maxmemory | sed -n 2p)
    if [ -z "$got" ] || [ "$got" -le 0 ]; then echo "CONFIG GET maxmemory: $got, expected a bound"; bad=1; fi
    got=$(redis-cli -h 127.0.0.1 -p "$port" config get bind | sed -n 2p)
    case " $got " in *" 127.0.0.1 "*) ;; *) echo "CONFIG GET bind: '$got' lacks 127.0.0.1"; bad=1 ;; esac
    # The append-only file is really written.
    redis-cli -h 127.0.0.1 -p "$port" set tickwire:validate 1 >/dev/null
    ls "$d"/appendonlydir/*.aof >/dev/null 2>&1 || ls "$d"/appendonly.aof >/dev/null 2>&1 || { echo "no append-only file under $d"; bad=1; }
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
    [ "$bad" -eq 0 ] && pycheck redis
}
run "redis/redis.conf (redis-server on it: PING, CONFIG GET, AOF written)" redis_check

# ---- nginx ------------------------------------------------------------------------------
# The shipped server block with its certificate paths pointed at a throwaway self-signed
# pair, inside a minimal nginx.conf whose pid, logs and temp paths are all in $TMP.
nginx_check() {
    local d=$TMP/nginx
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=tickwire.example.com" \
        -keyout "$d/privkey.pem" -out "$d/fullchain.pem" >/dev/null 2>&1
    sed -e "s|/etc/ssl/tickwire/fullchain.pem|$d/fullchain.pem|" \
        -e "s|/etc/ssl/tickwire/privkey.pem|$d/privkey.pem|" \
        "$DEPLOY/nginx/tickwire.conf" >"$d/tickwire.conf"
    cat >"$d/nginx.conf" <<EOF
pid $d/nginx.pid;
error_log $d/error.log;
worker_processes auto;
worker_rlimit_nofile 1048576;
events {
    worker_connections 262144;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    include $d/tickwire.conf;
}
EOF
    nginx -t -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/out" 2>&1 || { cat "$d/out"; return 1; }
    if grep -E '\[(warn|emerg|alert|crit)\]' "$d/out"; then return 1; fi
    pycheck nginx
}
run "nginx/tickwire.conf (nginx -t, self-signed cert)" nginx_check

# ---- Prometheus -------------------------------------------------------------------------
run "prometheus/alerts.yml (promtool check rules)" promtool check rules "$DEPLOY/prometheus/alerts.yml"
run "prometheus/alerts.test.yml (promtool test rules)" promtool test rules "$DEPLOY/prometheus/alerts.test.yml"
run "prometheus/prometheus.yml (promtool check config)" promtool check config "$DEPLOY/prometheus/prometheus.yml"
run "prometheus alerts: metric names, severities, tests" pycheck alerts

# ---- systemd ----------------------------------------------------------------------------
# verify needs the ExecStart binary to exist: check a copy whose ExecStart is /bin/true and
# whose EnvironmentFile is the example file. verify exits 0 on ignored (invalid) settings,
# so any output at all is a failure.
systemd_check() {
    local d=$TMP/systemd
    mkdir -p "$d"
    sed -e 's|^ExecStart=.*|ExecStart=/bin/true|' \
        -e "s|^EnvironmentFile=.*|EnvironmentFile=$DEPLOY/systemd/tickwire.env|" \
        "$DEPLOY/systemd/tickwire.service" >"$d/tickwire.service"
    systemd-analyze verify --man=no "$d/tickwire.service" >"$d/out" 2>&1 || { cat "$d/out"; return 1; }
    if [ -s "$d/out" ]; then cat "$d/out"; return 1; fi
    # Exposure score (0-10 scale, shown as 0-100 internally) must stay at 2.0 or below.
    systemd-analyze security --offline=true --threshold=20 "$d/tickwire.service" >"$d/sec" 2>&1 \
        || { grep -E '^(✗|→)' "$d/sec" || cat "$d/sec"; return 1; }
    pycheck unit
}
run "systemd/tickwire.service (systemd-analyze verify, security)" systemd_check
run "systemd/tickwire.env (every TICKWIRE_* option documented)" pycheck env

# ---- The rest ---------------------------------------------------------------------------
run "sysctl/99-tickwire.conf (keys in /proc/sys, one comment per setting)" pycheck sysctl
run "grafana/tickwire-dashboard.json (structure, metric names, rows)" pycheck grafana
run "artillery/*.yml (ws engine scenarios)" pycheck artillery
run "docker/Dockerfile (static lint)" pycheck dockerfile
run "README.md (referenced files exist)" pycheck readme

echo
if ((failures)); then
    echo "validate-deploy: $failures of $checks checks failed"
    exit 1
fi
echo "validate-deploy: all $checks checks passed"
