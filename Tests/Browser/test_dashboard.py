"""The live dashboard in headless Chromium against a running Tickwire server.

One page for the whole module, in steps that build on each other: it connects, shows live
prices and trades, survives a client-side gap (resume, nothing lost) and a server restart
(new epoch, snapshot reload, nothing shown twice), and agrees with GET /api/snapshot
throughout. A recorder injected before any page script runs logs every TradeExecuted event
the client applies, every SubscriptionConfirmed, snapshot load and state change.
"""
import json
import pathlib
import time
import urllib.request

import pytest

from waiting import wait_for

SYMBOLS = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"}
# The simulator's trades come 3-10 s apart and can pause for a minute (its positions are full),
# so a test that needs a trade publishes one itself; this bounds the wait for its delivery.
TRADE_WAIT_S = 25

RECORDER = r"""
(() => {
  const rec = { trades: [], confirms: [], snapshots: [], states: [], errors: [] };
  window.__tw = rec;
  let client;
  Object.defineProperty(window, "tickwire", {
    configurable: true,
    get() { return client; },
    set(c) {
      client = c;
      c.on("TradeExecuted", (d, m) => rec.trades.push({ epoch: c.epoch, seq: m.seq, data: d }));
      c.on("SubscriptionConfirmed", (d) => rec.confirms.push(d));
      c.on("snapshot", (s) => rec.snapshots.push({ epoch: s.epoch, seq: s.seq }));
      c.on("state", (s) => {
        const last = rec.states[rec.states.length - 1];
        if (!last || last.state !== s.connectionState) rec.states.push({ state: s.connectionState, t: performance.now() });
      });
      c.on("error", (e) => rec.errors.push({ source: e.source, code: e.code, message: e.message }));
    },
  });
})();
"""


def dot_state(page):
    return page.execute_script("return document.getElementById('conn-dot').dataset.state")


def data_of(e):
    """Snapshot entries are complete messages (PROTOCOL.md); their state is in `data`."""
    return e["data"] if isinstance(e, dict) and isinstance(e.get("data"), dict) and "type" in e else e


def trade_key(t):
    """Identity of a trade across the client and the snapshot: its content."""
    t = data_of(t)
    return (t["symbol"], t["side"], float(t["quantity"]), float(t["price"]), int(t["timestamp"]))


def published_after(t, seq, ts_ms):
    """Whether a snapshot trade came after a point: by seq, or by timestamp when the
    snapshot's entries carry no seq."""
    return t["seq"] > seq if t.get("seq") is not None else t["timestamp"] > ts_ms


def client_view(page):
    """The store's trades and the table rows, read after the page has rendered them."""
    return page.execute_async_script("""
      const done = arguments[arguments.length - 1];
      requestAnimationFrame(() => requestAnimationFrame(() => {
        const s = tickwire.getState();
        done({
          epoch: tickwire.epoch, seq: tickwire.seq, synced: s.synced,
          trades: s.recentTrades.map(t => ({seq: t.seq, epoch: t.epoch, symbol: t.symbol, side: t.side,
                                             quantity: t.quantity, price: t.price, timestamp: t.timestamp})),
          rows: [...document.querySelectorAll('#trades tbody tr[data-seq]')].map(r => ({seq: r.dataset.seq, epoch: r.dataset.epoch})),
        });
      }));
    """)


def assert_matches_server(page, server):
    """The page shows exactly the server's recent trades, each once."""
    snap = server.get_json("/api/snapshot")
    wait_for(lambda: page.execute_script("return tickwire.epoch === arguments[0] && tickwire.seq >= arguments[1]",
                                         snap["epoch"], snap["seq"]), 10, f"client to reach seq {snap['seq']}")
    last = {}

    def rows_match_store():
        last["view"] = v = client_view(page)
        return [str(t["seq"] if t["seq"] is not None else "") for t in v["trades"]] == [r["seq"] for r in v["rows"]] and v
    view = wait_for(rows_match_store, 2, lambda: f"the table rows {last['view']['rows']} to match the store {last['view']['trades']}",
                    interval=0.05)
    assert all(r["epoch"] == snap["epoch"] for r in view["rows"]), "a trade of an old epoch is still shown"
    keys = [trade_key(t) for t in view["trades"]]
    assert len(keys) == len(set(keys)), f"a trade is shown twice: {view['trades']}"
    seqs = [t["seq"] for t in view["trades"] if t["seq"] is not None]
    assert len(seqs) == len(set(seqs)), f"a seq is shown twice: {seqs}"
    # Trades up to the snapshot's seq must be the snapshot's, in order; newer ones may precede.
    older = [t for t in view["trades"] if t["seq"] is None or t["seq"] <= snap["seq"]]
    expected = [trade_key(t) for t in snap["recent_trades"]]
    newer = len(view["trades"]) - len(older)
    assert [trade_key(t) for t in older] == expected[:len(older)], "the page's trades differ from the server's"
    assert len(older) >= min(len(expected), 20 - newer), f"trades missing: page {len(older)}, server {len(expected)}"
    recorded = page.execute_script("return __tw.trades.map(t => [t.epoch, t.seq])")
    assert len(recorded) == len({tuple(r) for r in recorded}), "a TradeExecuted message was applied twice"
    return snap


@pytest.fixture(scope="module")
def page(browser, server, pytestconfig):
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    yield browser
    shot = pathlib.Path(pytestconfig.getoption("screenshot"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shot))


def test_connects_within_2s(page, server):
    page.get(server.url + "/")
    wait_for(lambda: dot_state(page) == "connected", 2, "the green dot")
    connected_at = page.execute_script("return (__tw.states.find(s => s.state === 'connected') || {}).t")
    assert connected_at is not None and connected_at < 2000, f"connected {connected_at} ms after navigation start"
    assert page.execute_script("return window.tickwire && tickwire.connectionState") == "connected"
    wait_for(lambda: page.execute_script("return tickwire.getState().synced"), 5, "the snapshot to load")


def test_prices_update(page):
    def prices():
        return page.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('.price-tile')].map("
            "t => [t.dataset.symbol, t.querySelector('.price').textContent]))")
    first = wait_for(lambda: (p := prices()) and SYMBOLS <= set(p) and all(v != "–" for v in p.values()) and p, 5,
                     "a price tile per symbol")
    wait_for(lambda: any(prices()[s] != first[s] for s in SYMBOLS), 6, "a price to change")


def publish_trade(server, price):
    """A producer's TradeExecuted for the demo account, through POST /api/publish."""
    body = json.dumps({"type": "TradeExecuted", "account": "demo", "data": {
        "symbol": "BTCUSDT", "side": "BUY", "quantity": 0.25, "price": price, "timestamp": int(time.time() * 1000)}}).encode()
    req = urllib.request.Request(server.url + "/api/publish", data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 202


def test_trade_row_appears(page, server):
    n0 = page.execute_script("return __tw.trades.length")
    publish_trade(server, 43001.5)
    wait_for(lambda: page.execute_script("return __tw.trades.length") > n0, TRADE_WAIT_S, "a TradeExecuted message")
    seq = page.execute_script("return __tw.trades[__tw.trades.length - 1].seq")
    wait_for(lambda: page.execute_script(f"return !!document.querySelector('#trades tbody tr[data-seq=\"{seq}\"]')"), 2,
             f"the row of trade {seq}")
    banner = wait_for(lambda: page.execute_script(
        "return [...document.querySelectorAll('#notifications .banner')].map(b => b.textContent).find(t => t.startsWith('Trade Executed: '))"),
        2, "a trade banner")
    assert " @ $" in banner


def test_agrees_with_server_snapshot(page, server):
    assert_matches_server(page, server)


def test_gap_is_replayed_without_loss(page, server):
    """Disconnect the client, let trades happen, reconnect: the server replays them, once each."""
    ts0 = time.time() * 1000
    epoch, seq0 = page.execute_script("tickwire.disconnect(); return [tickwire.epoch, tickwire.seq]")
    wait_for(lambda: dot_state(page) == "disconnected", 2, "the red dot after disconnect()")
    assert page.execute_script("return !document.getElementById('retry').hidden"), "Retry shown while disconnected"
    # A producer's trade while the client is away (the simulator's may take a while to come).
    publish_trade(server, 43000.5)

    def trades_after_gap():
        s = server.get_json("/api/snapshot")
        return [t for t in s["recent_trades"] if published_after(t, seq0, ts0)] and s
    snap = wait_for(trades_after_gap, TRADE_WAIT_S, "a trade while the client is away", interval=0.5)
    missed = [trade_key(t) for t in snap["recent_trades"] if published_after(t, seq0, ts0)]
    confirms0 = page.execute_script("return __tw.confirms.length")
    page.execute_script("tickwire.connect()")
    wait_for(lambda: dot_state(page) == "connected", 5, "the green dot after connect()")
    wait_for(lambda: page.execute_script("return tickwire.seq >= arguments[0]", snap["seq"]), 10, "the replay")
    confirm = page.execute_script("return __tw.confirms[arguments[0]]", confirms0)
    assert confirm and confirm.get("recovered") is True, f"resume not recovered: {confirm}"
    got = page.execute_script("return __tw.trades.filter(t => t.epoch === arguments[0] && t.seq > arguments[1]).map(t => t.data)",
                              epoch, seq0)
    got_keys = [trade_key(t) for t in got]
    for k in missed:
        assert got_keys.count(k) == 1, f"trade {k} replayed {got_keys.count(k)} times"
    assert_matches_server(page, server)


def test_server_restart(page, server):
    if not server.restartable:
        pytest.skip("no --server-cmd: cannot restart the server")
    # Every trade the server published while the page was connected was applied, once.
    old = server.get_json("/api/snapshot")
    wait_for(lambda: page.execute_script("return tickwire.seq >= arguments[0]", old["seq"]), 10, "the client to catch up")
    seen = page.execute_script("return __tw.trades.filter(t => t.epoch === arguments[0]).map(t => [t.seq, t.data])", old["epoch"])
    seen_keys = [trade_key(d) for _, d in seen]
    checked = []
    if seen:
        first_seq, first = min(seen, key=lambda x: x[0])
        checked = [t for t in old["recent_trades"] if published_after(t, first_seq - 1, first["timestamp"] - 1)]
    assert checked, "no trade to compare with the server's"
    for t in checked:
        assert seen_keys.count(trade_key(t)) == 1, f"trade {t} seen {seen_keys.count(trade_key(t))} times"

    states0 = page.execute_script("return __tw.states.length")
    server.stop()
    wait_for(lambda: dot_state(page) in ("reconnecting", "connecting"), 5, "the yellow dot")

    def failed_attempts():
        """Reconnection attempts made since the stop that failed (connecting -> reconnecting)."""
        s = [x["state"] for x in page.execute_script("return __tw.states.slice(arguments[0])", states0)]
        return sum(1 for a, b in zip(s, s[1:]) if a == "connecting" and b == "reconnecting")
    # Backoff with full jitter: the first two attempts come within 1 s + 2 s.
    wait_for(lambda: failed_attempts() >= 2, 15, "two reconnection attempts to fail", interval=0.2)
    assert dot_state(page) in ("reconnecting", "connecting")
    snapshots0 = page.execute_script("return __tw.snapshots.length")
    server.start()
    wait_for(lambda: dot_state(page) == "connected", 40, "the green dot after the restart", interval=0.2)
    new = wait_for(lambda: (e := page.execute_script("return tickwire.getState().synced && tickwire.epoch")) and e != old["epoch"] and e,
                   10, "the new epoch")
    reloaded = page.execute_script("return __tw.snapshots.slice(arguments[0])", snapshots0)
    assert any(s["epoch"] == new for s in reloaded), "no snapshot reload after the restart"
    # A trade of the new server, then the page must agree with it exactly.
    n0 = page.execute_script("return __tw.trades.length")
    publish_trade(server, 43002.5)
    wait_for(lambda: page.execute_script("return __tw.trades.length") > n0, TRADE_WAIT_S, "a trade after the restart")
    assert_matches_server(page, server)


def test_no_page_errors(page):
    errors = [e for e in page.get_log("browser")
              if e["level"] == "SEVERE" and ("Uncaught" in e["message"] or "TypeError" in e["message"])]
    assert not errors, errors
    # Wait a moment for a signal and let banners settle so the screenshot shows a full page.
    wait_for(lambda: page.execute_script("return document.querySelectorAll('#signals li').length > 0"), 15, "an AI signal")
    assert page.execute_script("return document.querySelector('#bot-status .pill').dataset.status") != "unknown"
