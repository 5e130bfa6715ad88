"""Dashboard notifications in headless Chromium (issue 12 item 4, UC-WEBSOCKET-002/003):
the trade sound (off by default, a remembered toggle), the AI signal toast and its details
panel, the "notifications off" mode, and the frequency the dashboard subscribes with.

A tickwire of its own with --no-simulator, so that every trade and signal on the page is one
this module published through POST /api/publish, and each wait is for that message's seq.
The sound is counted by the page where the oscillator is started
(`tickwireDashboard.soundsPlayed`); it only starts once the AudioContext is running, which
the browser allows after a real click (Selenium's clicks are trusted input events).
"""
import json
import os
import shlex
import time
import urllib.request

import pytest

from waiting import wait_for

SIGNAL_TOAST_S = 10  # app.js SIGNAL_TOAST_MS
MAX_TOASTS = 3  # app.js MAX_BANNERS, per kind
DRAW_FREQUENCY = 10  # app.js DRAW_FREQUENCY
CUE_MIN_GAP_MS = 120  # app.js CUE_MIN_GAP_MS

# Records the dashboard's subscribe() calls. It chains any window.tickwire hook installed
# before it (test_dashboard.py's recorder), so both see the client.
SUBSCRIBE_RECORDER = r"""
(() => {
  const calls = [];
  window.__twSubscribeCalls = calls;
  const before = Object.getOwnPropertyDescriptor(window, "tickwire");
  let client;
  Object.defineProperty(window, "tickwire", {
    configurable: true,
    get() { return before && before.get ? before.get() : client; },
    set(c) {
      const subscribe = c.subscribe;
      c.subscribe = function (...args) { calls.push(JSON.parse(JSON.stringify(args))); return subscribe.apply(this, args); };
      client = c;
      if (before && before.set) before.set(c);
    },
  });
})();
"""


@pytest.fixture(scope="module")
def quiet_server(pytestconfig, tmp_path_factory, start_server):
    """The binary under test (from --server-cmd, else TICKWIRE_BIN), without the simulator."""
    cmd = pytestconfig.getoption("server_cmd")
    binary = shlex.split(cmd)[0] if cmd else os.environ.get("TICKWIRE_BIN")
    if not binary:
        pytest.skip("needs --server-cmd or TICKWIRE_BIN to find the binary")
    d = tmp_path_factory.mktemp("notifications")
    return start_server(binary, d, ["--no-simulator"], "the --no-simulator server to answer /health")


def publish(url, *messages):
    """POSTs the messages to /api/publish; returns their seqs."""
    body = json.dumps(list(messages)).encode()
    req = urllib.request.Request(url + "/api/publish", data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 202
        return json.loads(r.read())["seqs"]


def trade(side="BUY", quantity=0.25, price=43000.5, pnl=None, symbol="BTCUSDT"):
    data = {"symbol": symbol, "side": side, "quantity": quantity, "price": price, "timestamp": int(time.time() * 1000)}
    if pnl is not None:
        data["pnl"] = pnl
    return {"type": "TradeExecuted", "data": data}


def signal(symbol="ETHUSDT", direction="long", confidence=0.85, **extra):
    data = {"symbol": symbol, "signal": direction, "confidence": confidence, "timestamp": int(time.time() * 1000), **extra}
    return {"type": "AISignalReceived", "data": data}


FULL_SIGNAL = dict(model_type="LSTM", timeframe="1h", reasoning="Strong bullish momentum, RSI oversold recovery",
                   strategy_scores={"rsi": 0.8, "macd": 0.9, "bollinger": 0.75})


def js(page, script, *args):
    return page.execute_script(script, *args)


def open_dashboard(page, url):
    page.get(url + "/")
    wait_for(lambda: js(page, "return !!window.tickwire && tickwire.connectionState === 'connected' && tickwire.getState().synced"),
             10, "the dashboard to connect and sync")


def reload(page):
    page.refresh()
    wait_for(lambda: js(page, "return !!window.tickwire && tickwire.connectionState === 'connected' && tickwire.getState().synced"),
             10, "the reloaded dashboard to connect and sync")


def counters(page):
    return js(page, "const d = tickwireDashboard; return {played: d.soundsPlayed, blocked: d.soundsBlocked, audio: d.audioState,"
                    " sound: d.sound, notifications: d.notifications}")


def toggle(page, name):
    """The header toggle `name` ("sound" or "notify"): [pressed, disabled, label state]."""
    return js(page, "const b = document.getElementById(arguments[0] + '-toggle');"
                    " return [b.getAttribute('aria-pressed'), b.disabled, b.querySelector('.state').textContent]", name)


def click(page, selector):
    page.find_element("css selector", selector).click()


def wait_trade_row(page, seq):
    wait_for(lambda: js(page, "return !!document.querySelector(`#trades tbody tr[data-seq='${arguments[0]}']`)", seq), 5,
             f"the row of trade {seq}")


def wait_signal_listed(page, seq):
    wait_for(lambda: js(page, "return !!document.querySelector(`#signals li[data-seq='${arguments[0]}']`)", seq), 5,
             f"signal {seq} in the signals panel")


def trade_banners(page):
    return js(page, "return [...document.querySelectorAll('#notifications .banner[data-kind=trade]:not(.leaving)')].map(b => b.textContent)")


def signal_toasts(page):
    """The signal toasts on screen, newest first: [seq, text]."""
    return js(page, "return [...document.querySelectorAll('#notifications .banner.signal:not(.leaving)')]"
                    ".map(b => [b.dataset.seq, b.querySelector('.open').textContent])")


def details_panel(page):
    return js(page, """
      const d = document.getElementById('signal-details');
      const f = (n) => d.querySelector(`[data-field="${n}"]`);
      return {open: d.open, title: document.getElementById('signal-details-title').textContent,
              fields: Object.fromEntries(['symbol', 'signal', 'confidence', 'model_type', 'timeframe', 'reasoning']
                        .map(n => [n, f(n).textContent])),
              missing: [...d.querySelectorAll('dd.missing')].map(x => x.dataset.field),
              scores: [...f('strategy_scores').querySelectorAll('.score')].map(s => [s.querySelector('.k').textContent, s.querySelector('.v').textContent]),
              scores_text: f('strategy_scores').textContent};
    """)


def close_details(page):
    click(page, "#signal-details [data-close]")
    wait_for(lambda: not js(page, "return document.getElementById('signal-details').open"), 2, "the details panel to close")


@pytest.fixture(scope="module")
def page(browser, quiet_server):
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SUBSCRIBE_RECORDER})
    browser.get(quiet_server + "/")
    browser.execute_script("localStorage.clear()")  # the defaults, whatever an earlier run left
    open_dashboard(browser, quiet_server)
    yield browser
    browser.execute_script("localStorage.clear()")


def test_subscribes_at_a_drawable_frequency(page, quiet_server):
    calls = js(page, "return window.__twSubscribeCalls")
    assert calls == [[None, None, {"maxFrequency": DRAW_FREQUENCY}]], calls
    # Whether the client honours the option or ignores it, prices still reach the tiles.
    publish(quiet_server, {"type": "MarketData", "data": {
        "symbol": "SOLUSDT", "price": 101.25, "volume": 1000, "price_change_24h": 1.5, "price_change_percent_24h": 1.5,
        "timestamp": int(time.time() * 1000)}})
    wait_for(lambda: js(page, "const t = document.querySelector('.price-tile[data-symbol=SOLUSDT] .price'); return t && t.textContent")
             == "101.25", 5, "the SOLUSDT tile to show 101.25")


def test_sound_off_by_default(page, quiet_server):
    assert toggle(page, "sound") == ["false", False, "off"]
    assert toggle(page, "notify") == ["true", False, "on"]
    seq, = publish(quiet_server, trade(side="SELL", quantity=0.5, price=50000, pnl=250))
    wait_trade_row(page, seq)
    # The banner and the sound are decided in the same handler: once the banner is there, no sound came.
    wait_for(lambda: "Trade Executed: SELL 0.5 BTCUSDT @ $50,000 | PnL: +$250" in trade_banners(page), 2, "the trade banner")
    c = counters(page)
    assert (c["played"], c["blocked"], c["sound"]) == (0, 0, False), c


def test_sound_on_plays_one_cue_per_trade(page, quiet_server):
    click(page, "#sound-toggle")
    assert toggle(page, "sound") == ["true", False, "on"]
    assert js(page, "return localStorage.getItem('tickwire.sound')") == "on"
    wait_for(lambda: counters(page)["audio"] == "running", 5, "the AudioContext to run after the click")
    for n in (1, 2):
        # Cues closer than CUE_MIN_GAP_MS merge into one (a replayed burst): wait the gap out.
        wait_for(lambda: js(page, "return tickwireDashboard.soundQuietMs >= arguments[0]", CUE_MIN_GAP_MS), 2, "the cue gap")
        seq, = publish(quiet_server, trade(quantity=n))
        wait_trade_row(page, seq)
        wait_for(lambda: counters(page)["played"] == n, 2, lambda: f"sound {n} (counters {counters(page)})")
    assert counters(page)["blocked"] == 0 and js(page, "return tickwireDashboard.soundsMerged") == 0


def test_sound_setting_survives_reload(page, quiet_server):
    reload(page)
    assert toggle(page, "sound") == ["true", False, "on"]
    assert counters(page)["played"] == 0  # a new page counts afresh
    click(page, ".brand")  # the gesture a reloaded page needs before it may play audio
    wait_for(lambda: counters(page)["audio"] == "running", 5, "the AudioContext to run after a click on the page")
    seq, = publish(quiet_server, trade())
    wait_trade_row(page, seq)
    wait_for(lambda: counters(page)["played"] == 1, 2, lambda: f"the sound after reload (counters {counters(page)})")


def test_sound_off_again_is_silent_and_remembered(page, quiet_server):
    click(page, "#sound-toggle")
    assert toggle(page, "sound") == ["false", False, "off"]
    played = counters(page)["played"]
    seq, = publish(quiet_server, trade(side="SELL", quantity=0.125, price=3012.45, symbol="ETHUSDT"))
    wait_trade_row(page, seq)
    wait_for(lambda: "Trade Executed: SELL 0.125 ETHUSDT @ $3,012.45" in trade_banners(page), 2, "the trade banner")
    assert counters(page)["played"] == played
    reload(page)
    assert toggle(page, "sound") == ["false", False, "off"]
    assert js(page, "return localStorage.getItem('tickwire.sound')") == "off"


def test_signal_toast_opens_details(page, quiet_server):
    seq, = publish(quiet_server, signal(**FULL_SIGNAL))
    toasts = wait_for(lambda: signal_toasts(page), 5, "a signal toast")
    assert toasts == [[str(seq), "New AI Signal: ETHUSDT LONG (85% confidence)"]]
    click(page, f"#notifications .banner.signal[data-seq='{seq}'] .open")
    wait_for(lambda: details_panel(page)["open"], 2, "the details panel")
    d = details_panel(page)
    assert d["title"] == "AI signal · ETHUSDT"
    assert d["fields"] == {"symbol": "ETHUSDT", "signal": "LONG", "confidence": "85%", "model_type": "LSTM", "timeframe": "1h",
                           "reasoning": "Strong bullish momentum, RSI oversold recovery"}
    assert d["scores"] == [["RSI", "0.80"], ["MACD", "0.90"], ["Bollinger", "0.75"]]
    assert d["missing"] == []
    # Opening it dismisses the toast.
    wait_for(lambda: not signal_toasts(page), 2, "the clicked toast to go")
    close_details(page)
    # The signals panel opens the same details.
    wait_signal_listed(page, seq)
    click(page, f"#signals li[data-seq='{seq}']")
    wait_for(lambda: details_panel(page)["open"], 2, "the details panel from the list")
    assert details_panel(page)["fields"]["model_type"] == "LSTM"
    close_details(page)


def test_signal_details_show_missing_fields(page, quiet_server):
    seq, = publish(quiet_server, signal(symbol="SOLUSDT", direction="short", confidence=0.6))
    toasts = wait_for(lambda: signal_toasts(page), 5, "a signal toast")
    assert toasts == [[str(seq), "New AI Signal: SOLUSDT SHORT (60% confidence)"]]
    click(page, f"#notifications .banner.signal[data-seq='{seq}'] .open")
    wait_for(lambda: details_panel(page)["open"], 2, "the details panel")
    d = details_panel(page)
    assert d["fields"]["signal"] == "SHORT" and d["fields"]["confidence"] == "60%"
    for f in ("model_type", "timeframe", "reasoning"):
        assert d["fields"][f] == "not given", d
    assert d["scores"] == [] and d["scores_text"] == "not given"
    assert set(d["missing"]) == {"model_type", "timeframe", "reasoning", "strategy_scores"}
    close_details(page)
    # Not even a confidence: the toast says so rather than "NaN%".
    seq, = publish(quiet_server, signal(symbol="BNBUSDT", direction="neutral", confidence=None))
    wait_for(lambda: [str(seq), "New AI Signal: BNBUSDT NEUTRAL (confidence not given)"] in signal_toasts(page), 5,
             lambda: f"the toast without confidence (toasts {signal_toasts(page)})")


def test_signal_toasts_are_bounded_and_leave(page, quiet_server):
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    seqs = publish(quiet_server, *[signal(symbol=s, confidence=0.7) for s in symbols])
    wait_signal_listed(page, seqs[-1])
    toasts = wait_for(lambda: (t := signal_toasts(page)) and t[0][0] == str(seqs[-1]) and t, 5, "the newest signal's toast")
    # The newest three, newest first; the older ones (and the previous test's) were pushed out.
    assert toasts == [[str(q), f"New AI Signal: {s} LONG (70% confidence)"] for q, s in reversed(list(zip(seqs, symbols)))][:MAX_TOASTS]
    # Trades do not push signals out: each kind has its own bound.
    tseqs = publish(quiet_server, *[trade(quantity=q) for q in (1, 2, 3, 4)])
    wait_trade_row(page, tseqs[-1])
    wait_for(lambda: len(trade_banners(page)) == MAX_TOASTS, 2, "the trade banners, bounded")
    assert len(signal_toasts(page)) == MAX_TOASTS
    wait_for(lambda: not signal_toasts(page), SIGNAL_TOAST_S + 5, "the signal toasts to dismiss themselves", interval=0.25)


def test_notifications_off_lists_signals_without_alerts(page, quiet_server):
    click(page, "#sound-toggle")  # sound on, to show that notifications off silences it
    assert toggle(page, "sound") == ["true", False, "on"]
    wait_for(lambda: counters(page)["audio"] == "running", 5, "the AudioContext to run after the click")
    click(page, "#notify-toggle")
    assert toggle(page, "notify") == ["false", False, "off"]
    assert toggle(page, "sound") == ["true", True, "on"]  # kept, but disabled while notifications are off
    assert js(page, "return localStorage.getItem('tickwire.notifications')") == "off"
    played = counters(page)["played"]
    sseq, tseq = publish(quiet_server, signal(symbol="ETHUSDT", **FULL_SIGNAL), trade(side="SELL", quantity=0.75))
    wait_signal_listed(page, sseq)
    wait_trade_row(page, tseq)
    assert signal_toasts(page) == [] and trade_banners(page) == []
    assert counters(page)["played"] == played

    reload(page)
    assert toggle(page, "notify") == ["false", False, "off"]
    assert toggle(page, "sound") == ["true", True, "on"]
    click(page, ".brand")  # a gesture: the sound would be allowed, were notifications on
    sseq, = publish(quiet_server, signal(symbol="BNBUSDT", direction="short", confidence=0.9))
    tseq, = publish(quiet_server, trade())
    wait_signal_listed(page, sseq)
    wait_trade_row(page, tseq)
    assert signal_toasts(page) == [] and trade_banners(page) == []
    assert counters(page)["played"] == 0 and counters(page)["blocked"] == 0

    # Back on: alerts and the remembered sound return.
    click(page, "#notify-toggle")
    assert toggle(page, "notify") == ["true", False, "on"] and toggle(page, "sound") == ["true", False, "on"]
    wait_for(lambda: counters(page)["audio"] == "running", 5, "the AudioContext to run")
    sseq, tseq = publish(quiet_server, signal(symbol="SOLUSDT", confidence=0.55), trade(quantity=2))
    wait_for(lambda: [str(sseq), "New AI Signal: SOLUSDT LONG (55% confidence)"] in signal_toasts(page), 5, "the signal toast")
    wait_for(lambda: counters(page)["played"] == 1, 2, lambda: f"the trade sound (counters {counters(page)})")


def test_no_page_errors(page):
    errors = [e for e in page.get_log("browser")
              if e["level"] == "SEVERE" and ("Uncaught" in e["message"] or "TypeError" in e["message"])]
    assert not errors, errors
