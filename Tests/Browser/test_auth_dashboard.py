"""The dashboard against a server with --auth required, in headless Chromium: the page's
token (/?token=) opens the stream and the snapshot, the simulator's demo account's trades
reach a demo token and never another account's page, and the token leaves the address bar."""
import base64
import hashlib
import hmac
import json
import shlex
import time
import urllib.request

import pytest

from waiting import wait_for

SECRET = b"browser-test-secret-0123456789abcdef"
TRADE_WAIT_S = 60  # the simulator trades every few seconds; generous for a loaded machine


def token(sub):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    body = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    return body + "." + b64(hmac.new(SECRET, body.encode(), hashlib.sha256).digest())


@pytest.fixture(scope="module")
def auth_server(server, tmp_path_factory, start_server):
    """A second tickwire, the same binary as the session's, with --auth required."""
    if not server.cmd:
        pytest.skip("needs --server-cmd to find the binary")
    binary = shlex.split(server.cmd)[0]
    d = tmp_path_factory.mktemp("auth")
    (d / "secret").write_bytes(SECRET)
    return start_server(binary, d, ["--auth", "required", "--jwt-secret-file", str(d / "secret"), "--sim-rate", "20"],
                        "the auth server to answer /health")


def snapshot(url, sub):
    req = urllib.request.Request(url + "/api/snapshot", headers={"Authorization": "Bearer " + token(sub)})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_demo_token_sees_its_trades_and_another_account_never(browser, auth_server):
    browser.get(auth_server + "/?token=" + token("demo") + "&x=1")
    wait_for(lambda: browser.execute_script("return window.tickwire && tickwire.connectionState") == "connected", 5, "connected with the token")
    assert "token=" not in browser.current_url and "x=1" in browser.current_url
    wait_for(lambda: browser.execute_script("return tickwire.getState().recentTrades.length") > 0, TRADE_WAIT_S, "a demo trade on the page")

    browser.get(auth_server + "/?token=" + token("someone-else"))
    wait_for(lambda: browser.execute_script("return tickwire.getState().synced"), 5, "the other account's page to sync")
    wait_for(lambda: len(browser.execute_script("return Object.keys(tickwire.getState().prices)")) >= 4, 5, "public prices")
    newest = snapshot(auth_server, "demo")["recent_trades"][0]["seq"]
    # Wait for the demo account to trade again while the other page watches.
    wait_for(lambda: snapshot(auth_server, "demo")["recent_trades"][0]["seq"] > newest, TRADE_WAIT_S, "another demo trade", interval=0.5)
    state = browser.execute_script("const s = tickwire.getState(); return [s.recentTrades.length, s.positions.length, s.botStatus]")
    assert state == [0, 0, None], f"another account's page received demo's private data: {state}"


def test_no_token_is_refused_and_says_so(browser, auth_server):
    browser.get(auth_server + "/")
    wait_for(lambda: browser.execute_script("return window.tickwire && tickwire.connectionState") in ("reconnecting", "disconnected"), 10,
             "the refused connection")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(auth_server + "/api/snapshot", timeout=5)
    assert e.value.code == 401 and json.loads(e.value.read())["code"] == "token_missing"
