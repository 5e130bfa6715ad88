"""Authentication, private accounts, permissions and token refresh, attacked over real
sockets against a real tickwire binary. Tokens are minted here: HS256 with hmac, RS256 and
ES256 with `openssl dgst -sign` on keys `openssl` makes for each run."""
import base64
import hashlib
import hmac
import json
import pathlib
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
from wsharness import BIN, Closed, Process, UpgradeRefused, upgrade, wait_for  # noqa: E402

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_input(claims, alg, kid=None):
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def hs256(claims, secret=SECRET, alg="HS256"):
    body = signing_input(claims, alg)
    return body + "." + b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def openssl_sign(key_path, data):
    return subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key_path)], input=data, capture_output=True, check=True).stdout


def der_to_raw(der):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JWS's 64-byte r || s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(32, b"\0")
        i += 2 + n
    return out


def claims(sub="acc-a", ttl=600, **extra):
    c = {"sub": sub, "exp": int(time.time()) + ttl}
    c.update(extra)
    return c


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    (d / "secret").write_bytes(SECRET)
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(d / "rsa.key")], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(d / "rsa.key"), "-pubout", "-out", str(d / "rsa.pub")], check=True, capture_output=True)
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(d / "ec.key")], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(d / "ec.key"), "-pubout", "-out", str(d / "ec.pub")], check=True, capture_output=True)
    return d


def server(tmp_path, keys, *extra, auth="required", key=None):
    key = key or ["--jwt-secret-file", str(keys / "secret")]
    return Process(tmp_path, "--workers", "2", "--no-simulator", "--auth", auth, *key, *extra)


def connect(srv, path="/ws", headers=()):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    frames, response = upgrade(sock, path, headers)
    hello = frames.message()
    assert hello["type"] == "Connected"
    return frames, response, hello


def refused(srv, path="/ws", headers=()):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    with pytest.raises(UpgradeRefused) as e:
        upgrade(sock, path, headers)
    sock.close()
    return e.value


@pytest.fixture
def hs(tmp_path, keys):
    s = server(tmp_path, keys)
    yield s
    s.stop()


def test_each_bad_token_gets_a_401_naming_the_failed_check(hs, keys):
    now = int(time.time())
    cases = {
        "token_missing": "/ws",
        "bad_signature": "/ws?token=" + hs256(claims(), secret=b"another-secret-of-at-least-32-bytes!!"),
        "expired": "/ws?token=" + hs256(claims(ttl=-3600)),
        "missing_exp": "/ws?token=" + hs256({"sub": "acc-a"}),
        "not_yet_valid": "/ws?token=" + hs256(claims(nbf=now + 3600)),
        "algorithm_mismatch": "/ws?token=" + signing_input(claims(), "RS256") + "." + b64(b"x" * 256),
        "unsupported_algorithm": "/ws?token=" + signing_input(claims(), "none") + ".",
        "malformed": "/ws?token=not-a-jwt",
    }
    # A tampered payload: a valid signature over other claims.
    good = hs256(claims(sub="acc-a"))
    h, _, sig = good.split(".")
    cases["bad_signature "] = f"/ws?token={h}.{b64(json.dumps(claims(sub='acc-b')).encode())}.{sig}"
    for code, path in cases.items():
        e = refused(hs, path)
        assert e.status == 401, (code, e.body)
        assert e.body["code"] == code.strip(), (code, e.body)
        assert e.body["message"]
        assert e.headers["www-authenticate"].startswith("Bearer realm=\"tickwire\"")
    assert hs.metric('tickwire_auth_total{result="expired"}') == 1
    assert hs.metric('tickwire_auth_total{result="bad_signature"}') == 2


def test_token_from_each_place_and_the_subprotocol_answered(hs):
    token = hs256(claims(sub="acc-a"))
    _, _, hello = connect(hs, "/ws?token=" + token)
    assert hello["data"]["accounts"] == ["acc-a"]
    _, _, hello = connect(hs, headers=[("Authorization", "Bearer " + token)])
    assert hello["data"]["accounts"] == ["acc-a"]
    _, response, hello = connect(hs, headers=[("Sec-WebSocket-Protocol", f"tickwire, bearer.{token}")])
    assert response["sec-websocket-protocol"] == "tickwire"
    assert hello["data"]["accounts"] == ["acc-a"]
    e = refused(hs, headers=[("Authorization", "Basic dXNlcjpwYXNz")])
    assert e.status == 401 and e.body["code"] == "malformed"


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_public_key_algorithms(tmp_path, keys, alg):
    pub, key = ("rsa.pub", "rsa.key") if alg == "RS256" else ("ec.pub", "ec.key")
    srv = server(tmp_path, keys, key=["--jwt-public-key-file", str(keys / pub)])
    try:
        body = signing_input(claims(sub="acc-a"), alg)
        sig = openssl_sign(keys / key, body.encode())
        if alg == "ES256":
            sig = der_to_raw(sig)
        _, _, hello = connect(srv, "/ws?token=" + body + "." + b64(sig))
        assert hello["data"]["accounts"] == ["acc-a"]
        # The key fixes the algorithm: an HS256 token signed with the public key's bytes
        # (the classic confusion attack) is refused.
        forged = hs256(claims(sub="acc-a"), secret=(keys / pub).read_bytes())
        e = refused(srv, "/ws?token=" + forged)
        assert e.body["code"] == "algorithm_mismatch"
    finally:
        srv.stop()


def test_issuer_and_audience_are_checked_when_configured(tmp_path, keys):
    srv = server(tmp_path, keys, "--jwt-issuer", "https://issuer.example", "--jwt-audience", "tickwire")
    try:
        assert refused(srv, "/ws?token=" + hs256(claims(iss="https://issuer.example", aud="other"))).body["code"] == "wrong_audience"
        assert refused(srv, "/ws?token=" + hs256(claims(iss="https://evil.example", aud="tickwire"))).body["code"] == "wrong_issuer"
        connect(srv, "/ws?token=" + hs256(claims(iss="https://issuer.example", aud=["x", "tickwire"])))
    finally:
        srv.stop()


def drain_until(frames, predicate, what):
    """Messages until `predicate` holds for one; returns all of them."""
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = frames.message()
        seen.append(m)
        if predicate(m):
            return seen
    raise AssertionError(f"timed out waiting for {what}")


def test_accounts_never_see_each_other_live_on_resume_and_in_the_snapshot(tmp_path, keys):
    srv = server(tmp_path, keys, "--history", "5000", auth="optional")
    try:
        a, _, hello = connect(srv, "/ws?token=" + hs256(claims(sub="acc-a")))
        b, _, _ = connect(srv, "/ws?token=" + hs256(claims(sub="acc-b")))
        desk, _, _ = connect(srv, "/ws?token=" + hs256(claims(sub="desk", accounts=["acc-a", "acc-b"])))
        anon, _, _ = connect(srv, "/ws")
        epoch = hello["data"]["epoch"]
        batch = []
        for i in range(3000):
            kind = ["TradeExecuted", "PositionUpdate", "BotStatusUpdate"][i % 3]
            account = ["acc-a", "acc-b"][i % 2]
            batch.append({"type": kind, "account": account, "data": {"symbol": "BTCUSDT", "side": "BUY" if i % 4 < 2 else "SELL", "quantity": 1, "n": i}})
            if i % 10 == 0:
                batch.append({"type": "MarketData", "data": {"symbol": "BTCUSDT", "price": 100 + i, "n": i}})
        batch.append({"type": "MarketData", "data": {"symbol": "END", "price": 1}})
        for k in range(0, len(batch), 500):
            srv.publish(batch[k:k + 500])
        end = lambda m: m["type"] == "MarketData" and m["data"]["symbol"] == "END"
        got = {name: drain_until(f, end, f"{name}'s END") for name, f in [("a", a), ("b", b), ("desk", desk), ("anon", anon)]}
        private = lambda ms: [m for m in ms if "account" in m]
        assert {m["account"] for m in private(got["a"])} == {"acc-a"} and len(private(got["a"])) == 1500
        assert {m["account"] for m in private(got["b"])} == {"acc-b"} and len(private(got["b"])) == 1500
        assert len(private(got["desk"])) == 3000
        assert private(got["anon"]) == []
        public = lambda ms: [m["seq"] for m in ms if m["type"] == "MarketData"]
        assert public(got["a"]) == public(got["b"]) == public(got["anon"]) and len(public(got["a"])) == 301
        # Resume from the start of the history: the same rule on replay.
        r, _, _ = connect(srv, f"/ws?token={hs256(claims(sub='acc-b'))}&epoch={epoch}&since=0")
        replay = drain_until(r, end, "the replay's END")
        assert {m["account"] for m in private(replay)} == {"acc-b"} and len(private(replay)) == 1500
        # The snapshot: a token sees its own account's state; no token sees public state only.
        _, _, snap_a = srv.request("GET", "/api/snapshot", headers={"Authorization": "Bearer " + hs256(claims(sub="acc-a"))})
        _, _, snap_anon = srv.request("GET", "/api/snapshot")
        _, _, snap_b = srv.request("GET", "/api/snapshot?token=" + hs256(claims(sub="acc-b")))
        assert snap_a["recent_trades"] and all(t.get("account") == "acc-a" for t in snap_a["recent_trades"] + snap_a["positions"])
        assert snap_b["recent_trades"] and all(t.get("account") == "acc-b" for t in snap_b["recent_trades"] + snap_b["positions"])
        assert snap_anon["recent_trades"] == [] and snap_anon["positions"] == [] and snap_anon["bot_status"] is None
        assert snap_anon["market"]["END"]
        status, _, body = srv.request("GET", "/api/snapshot?token=" + hs256(claims(ttl=-100)))
        assert status == 401 and body["code"] == "expired"
    finally:
        srv.stop()


def test_snapshot_needs_a_token_when_required(hs):
    status, headers, body = hs.request("GET", "/api/snapshot")
    assert status == 401 and body["code"] == "token_missing"
    status, _, body = hs.request("GET", "/api/snapshot", headers={"Authorization": "Bearer " + hs256(claims())})
    assert status == 200 and "epoch" in body


def test_channel_and_symbol_permissions(hs):
    token = hs256(claims(sub="acc-a", channels=["prices", "trades"], symbols=["BTCUSDT"]))
    f, _, _ = connect(hs, "/ws?token=" + token)
    # The default subscription is what the token allows, and the server says so.
    m = f.message()
    assert m["type"] == "SubscriptionConfirmed" and m["data"]["symbols"] == ["BTCUSDT"], m
    assert set(m["data"]["channels"]) == {"MarketData", "TradeExecuted", "Error"}, m
    f.send_json({"type": "Subscribe", "data": {"channels": ["positions"]}})
    m = f.message()
    assert m["type"] == "Error" and m["data"]["code"] == "FORBIDDEN" and "PositionUpdate" in json.dumps(m)
    f.send_json({"type": "Subscribe", "data": {"channels": ["prices"], "symbols": ["ETHUSDT"]}})
    m = f.message()
    assert m["type"] == "Error" and m["data"]["code"] == "FORBIDDEN"
    # Nothing changed: the default, narrowed to what the token allows, is still in force.
    hs.publish([{"type": "MarketData", "data": {"symbol": "ETHUSDT", "price": 1}},
                {"type": "PositionUpdate", "account": "acc-a", "data": {"symbol": "BTCUSDT", "quantity": 1}},
                {"type": "MarketData", "data": {"symbol": "BTCUSDT", "price": 2}}])
    m = f.message()
    assert m["type"] == "MarketData" and m["data"]["symbol"] == "BTCUSDT"
    f.send_json({"type": "Subscribe", "data": {"channels": ["trades"]}})
    m = f.message()
    assert m["type"] == "SubscriptionConfirmed", m
    assert hs.metric("tickwire_subscriptions_forbidden_total") == 2


def test_refresh_extends_the_connection_and_no_refresh_closes_4001(tmp_path, keys):
    srv = server(tmp_path, keys, "--token-refresh-lead", "2s", "--jwt-leeway", "0s")
    try:
        exp = int(time.time()) + 3
        token = hs256({"sub": "acc-a", "exp": exp})
        kept, _, hello = connect(srv, "/ws?token=" + token)
        assert hello["data"]["expires_at"] == exp
        dropped, _, _ = connect(srv, "/ws?token=" + token)
        m = kept.message()
        assert m["type"] == "RefreshToken" and m["data"]["expires_at"] == exp
        kept.send_json({"type": "Refresh", "data": {"token": hs256(claims(sub="acc-b"))}})
        m = kept.message()
        assert m["type"] == "Error" and m["data"]["code"] == "FORBIDDEN"
        kept.send_json({"type": "Refresh", "data": {"token": hs256(claims(ttl=-10))}})
        m = kept.message()
        assert m["type"] == "Error" and m["data"]["code"] == "TOKEN_INVALID"
        kept.send_json({"type": "Refresh", "data": {"token": hs256(claims(sub="acc-a", ttl=600))}})
        m = kept.message()
        assert m["type"] == "TokenRefreshed" and m["data"]["expires_at"] > exp
        assert dropped.message()["type"] == "RefreshToken"
        with pytest.raises(Closed) as closed:
            dropped.message()
        assert closed.value.code == 4001
        assert time.time() >= exp - 0.5
        # The refreshed one lives on past the first token's exp.
        srv.publish([{"type": "TradeExecuted", "account": "acc-a", "data": {"symbol": "BTCUSDT"}}])
        assert kept.message()["type"] == "TradeExecuted"
        assert srv.metric("tickwire_token_expiry_closes_total") == 1
        assert srv.metric('tickwire_token_refreshes_total{result="accepted"}') == 1
    finally:
        srv.stop()


def test_auth_off_keeps_one_tenant(tmp_path):
    srv = Process(tmp_path, "--no-simulator")
    try:
        f, _, hello = connect(srv, "/ws")
        assert "accounts" not in hello["data"]
        srv.publish([{"type": "TradeExecuted", "account": "acc-a", "data": {"symbol": "BTCUSDT"}}])
        m = f.message()
        assert m["type"] == "TradeExecuted" and m["account"] == "acc-a"
    finally:
        srv.stop()


def test_a_cached_token_still_expires_and_a_forged_one_never_hits(tmp_path, keys):
    # One worker, so the second connect meets the first one's cache; no leeway, so exp is exact.
    srv = server(tmp_path, keys, "--workers", "1", "--jwt-leeway", "0s")
    try:
        exp = int(time.time()) + 2
        token = hs256({"sub": "acc-a", "exp": exp})
        for _ in range(3):
            _, _, hello = connect(srv, "/ws?token=" + token)
            assert hello["data"]["accounts"] == ["acc-a"]
        assert srv.metric("tickwire_auth_cache_hits_total") == 2, "the second and third connects were answered by the cache"
        # The same header and signature over other claims: other bytes, so no hit.
        h, _, sig = token.split(".")
        forged = f"{h}.{b64(json.dumps({'sub': 'acc-b', 'exp': exp}).encode())}.{sig}"
        assert refused(srv, "/ws?token=" + forged).body["code"] == "bad_signature"
        wait_for(lambda: time.time() >= exp + 0.2, timeout=5, what="the token's exp to pass")
        e = refused(srv, "/ws?token=" + token)
        assert e.status == 401 and e.body["code"] == "expired", e.body
        assert srv.metric("tickwire_auth_cache_hits_total") == 3
    finally:
        srv.stop()


@pytest.mark.parametrize("args, says", [
    (["--auth", "required"], "needs a key"),
    (["--auth", "sometimes"], "--auth must be off, optional or required"),
    (["--jwt-secret-file", "/nonexistent"], "--jwt-secret-file /nonexistent"),
    (["--jwt-cache-size", "2000000"], "--jwt-cache-size must be from 0 to 1048576"),
])
def test_flags_say_what_to_fix(args, says, tmp_path, keys):
    r = subprocess.run([BIN, "--port", "0", *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64, r.stderr
    assert says in r.stderr
