"""Fixtures for the dashboard browser tests: the server under test and headless Chromium.

The server is given by --server-url (or TICKWIRE_URL). To stop and restart it, the tests
need --server-cmd (TICKWIRE_SERVER_CMD, a shell-quoted command line that starts it on the
same port) and --server-pidfile (TICKWIRE_PIDFILE, holding the pid of the running server;
the tests rewrite it on restart, so whoever started it can still stop the current one).
With --server-cmd containing "{port}" and no URL, the tests start the server themselves.
scripts/browser-test.sh passes all of them.
"""
import json
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from waiting import wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]


def pytest_addoption(parser):
    g = parser.getgroup("tickwire", "Tickwire dashboard browser tests")
    g.addoption("--server-url", default=os.environ.get("TICKWIRE_URL"), help="http://host:port of the running server")
    g.addoption("--server-cmd", default=os.environ.get("TICKWIRE_SERVER_CMD"), help="command that starts the server (may contain {port})")
    g.addoption("--server-pidfile", default=os.environ.get("TICKWIRE_PIDFILE"), help="file holding the server's pid")
    g.addoption("--screenshot", default=os.environ.get("TICKWIRE_SCREENSHOT", str(REPO / ".build/browser/dashboard.png")))
    g.addoption("--chromium", default=os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
    g.addoption("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    """The server under test, with stop/start for the reconnection tests."""

    def __init__(self, url, cmd, pidfile, log_path):
        self.url = url.rstrip("/")
        self.cmd = cmd
        self.pidfile = pathlib.Path(pidfile) if pidfile else None
        self.log_path = log_path
        self.proc = None

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    @property
    def restartable(self):
        return bool(self.cmd)

    def get_json(self, path, timeout=5):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout=20):
        def up():
            if self.proc and self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}; log: {self.log_path}")
            return self.healthy()
        wait_for(up, timeout, f"{self.url}/health to answer 200")

    def _pid(self):
        if self.proc and self.proc.poll() is None:
            return self.proc.pid
        if self.pidfile and self.pidfile.exists():
            text = self.pidfile.read_text().strip()
            return int(text) if text else None
        return None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(shlex.split(self.cmd.format(port=self.port)), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if self.pidfile:
            self.pidfile.write_text(f"{self.proc.pid}\n")
        self.wait_healthy()

    def stop(self, timeout=10):
        pid = self._pid()
        if pid is None:
            raise RuntimeError("no server pid: pass --server-pidfile")
        def gone():
            if self.proc and self.proc.pid == pid:
                self.proc.poll()  # reaps our own child, so that it stops counting as alive
            return not _alive(pid)

        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval
        if not gone():
            os.kill(pid, signal.SIGKILL)
            wait_for(gone, 5, f"pid {pid} to die after SIGKILL", interval=0.05)
        if self.proc and self.proc.pid == pid:
            self.proc.wait(timeout=5)

        # The port must be free for the restart.
        def port_closed():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) != 0
        wait_for(port_closed, max(1.0, deadline - time.monotonic()), f"port {self.port} to close after stopping pid {pid}",
                 interval=0.05)


@pytest.fixture(scope="session")
def server(pytestconfig, tmp_path_factory):
    url = pytestconfig.getoption("server_url")
    cmd = pytestconfig.getoption("server_cmd")
    pidfile = pytestconfig.getoption("server_pidfile")
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    if not url and not (cmd and "{port}" in cmd):
        pytest.skip("no server: pass --server-url (and --server-cmd/--server-pidfile), as scripts/browser-test.sh does")
    own = not url
    srv = Server(url or f"http://127.0.0.1:{free_port()}", cmd, pidfile, log_path)
    if own:
        srv.start()
    else:
        srv.wait_healthy()
    yield srv
    if own or (srv.proc and srv.proc.poll() is None and not srv.pidfile):
        try:
            srv.stop()
        except Exception:
            pass


@pytest.fixture(scope="session")
def browser(pytestconfig):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = pytestconfig.getoption("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,1300",
                "--force-device-scale-factor=1", "--hide-scrollbars", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps Selenium Manager from trying to download one.
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=pytestconfig.getoption("chromedriver")))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def start_server():
    """Starts further tickwire servers for one module's tests, each stopped when they end:
    `start(binary, directory, args, what)` runs `binary --host 127.0.0.1 --port P --workers 2
    *args` (its log in directory/server.log) and returns its base URL once /health answers."""
    running = []

    def start(binary, directory, args, what):
        port = free_port()
        log = open(directory / "server.log", "wb")
        proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--workers", "2", *args],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        running.append((proc, log))
        url = f"http://127.0.0.1:{port}"

        def up():
            assert proc.poll() is None, (directory / "server.log").read_text()
            try:
                return urllib.request.urlopen(url + "/health", timeout=1).status == 200
            except OSError:
                return False
        wait_for(up, 20, what)
        return url

    yield start
    for proc, log in running:
        proc.terminate()
        proc.wait(10)
        log.close()
